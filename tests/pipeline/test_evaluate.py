"""Test-split metrics, overall and per cell type."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from classifier.model_card import SplitOutcomes, split_fingerprint
from classifier.pipeline.common import PipelineError
from classifier.pipeline.evaluate import (
    compute_metrics,
    evaluate_predictions,
    main,
    operating_point,
    operating_threshold,
    worst_mistakes,
    write_error_gallery,
    write_plots,
    write_test_outcomes,
)

REPO = Path(__file__).resolve().parents[2]


def test_compute_metrics_on_a_known_confusion_matrix() -> None:
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.9, 0.8, 0.4])  # tn tn fp tp fn
    m = compute_metrics(y, p, threshold=0.5)
    assert m["confusion_matrix"] == {"tn": 2, "fp": 1, "fn": 1, "tp": 1}
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2, abs=1e-6)
    assert m["f1"] == pytest.approx(0.5)
    assert m["roc_auc"] == pytest.approx(4 / 6, abs=1e-6)


def test_evaluate_predictions_splits_by_cell_type_and_nulls_undefined_metrics() -> None:
    y = np.array([0, 1, 0, 0])
    p = np.array([0.2, 0.9, 0.7, 0.1])
    types = np.array(["mono", "mono", "poly", "poly"])
    m = evaluate_predictions(y, p, types, threshold=0.5)
    assert set(m["per_cell_type"]) == {"mono", "poly"}
    assert m["per_cell_type"]["mono"]["accuracy"] == 1.0
    assert m["per_cell_type"]["poly"]["accuracy"] == 0.5
    assert m["per_cell_type"]["poly"]["roc_auc"] is None  # one class only: AUC is undefined


def test_write_plots_writes_pictures_and_plot_data(tmp_path: Path) -> None:
    y = np.array([0, 1, 0, 1])
    written = write_plots(y, np.array([0.1, 0.8, 0.6, 0.3]), 0.5, tmp_path)
    names = {p.name for p in written}
    assert names == {
        "predictions.csv",
        "roc.csv",
        "roc.png",
        "pr.csv",
        "pr.png",
        "confusion_matrix.png",
    }
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "pr.png").read_bytes()[:4] == b"\x89PNG"


def test_pr_curve_data_holds_every_threshold_with_its_precision_and_recall(tmp_path: Path) -> None:
    y = np.array([0, 1, 0, 1])
    write_plots(y, np.array([0.1, 0.8, 0.6, 0.3]), 0.5, tmp_path)
    rows = (tmp_path / "pr.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "recall,precision,threshold"
    # Called defective when P >= each threshold: 0.3 -> 2 of 3 flagged are defective, all found.
    points = {float(t): (float(r), float(q)) for r, q, t in (row.split(",") for row in rows[1:])}
    assert points[0.3] == pytest.approx((1.0, 2 / 3), abs=1e-6)
    assert points[0.8] == pytest.approx((0.5, 1.0), abs=1e-6)


def test_one_class_writes_no_curves(tmp_path: Path) -> None:
    written = write_plots(np.array([0, 0]), np.array([0.1, 0.7]), 0.5, tmp_path)
    assert {p.name for p in written} == {"predictions.csv", "roc.png", "confusion_matrix.png"}


def test_operating_point_counts_only_cells_above_the_threshold() -> None:
    y = np.array([1, 1, 1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.4, 0.2, 0.45, 0.1])
    assert operating_point(y, p, 0.5) == pytest.approx((1.0, 0.5))  # 2 flagged, both right
    assert operating_point(y, p, 0.3) == pytest.approx((3 / 4, 3 / 4))  # + a hit, a false alarm
    assert operating_point(y, p, 0.4) == pytest.approx((2 / 3, 0.5))  # 0.4 is not > 0.4
    assert operating_point(y, p, 0.95) == (1.0, 0.0)  # nothing flagged: no false alarm


def test_lowering_the_threshold_trades_precision_for_recall_and_keeps_the_paper_cut() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.7, 0.4, 0.35, 0.45, 0.2, 0.1, 0.05])
    m = evaluate_predictions(y, p, np.array(["mono"] * 8), threshold=0.3)
    assert m["threshold"] == 0.3
    assert (m["recall"], m["precision"]) == pytest.approx((1.0, 0.8))  # 0.45 is a false alarm
    half = m["at_one_half"]
    assert (half["recall"], half["precision"]) == pytest.approx((0.5, 1.0))
    assert half["confusion_matrix"] == {"tn": 4, "fp": 0, "fn": 2, "tp": 2}
    assert "roc_auc" not in half  # threshold-free: once, at the top level
    assert m["average_precision"] == pytest.approx(compute_metrics(y, p, 0.5)["average_precision"])


def test_operating_threshold_is_its_own_key_not_the_label_threshold() -> None:
    params = {"base": {"threshold": 0.5}, "evaluate": {"operating_threshold": 0.3}}
    assert operating_threshold(params) == 0.3


@pytest.mark.parametrize(
    ("evaluate", "message"),
    [
        ({"plot_dpi": 100}, "no evaluate.operating_threshold"),
        ({"operating_threshold": 1.0}, "strictly between 0 and 1, got 1.0"),
        ({"operating_threshold": 0}, "strictly between 0 and 1, got 0"),
        ({"operating_threshold": "low"}, "strictly between 0 and 1, got 'low'"),
        ({"operating_threshold": True}, "strictly between 0 and 1, got True"),
    ],
)
def test_a_bad_operating_threshold_says_what_to_set(
    evaluate: dict[str, object], message: str
) -> None:
    with pytest.raises(PipelineError, match=message):
        operating_threshold({"base": {"threshold": 0.5}, "evaluate": evaluate})


def test_params_yaml_sets_the_operating_threshold_and_dvc_yaml_tracks_it() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    assert 0 < operating_threshold(params) < 1
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    # A change to it reruns evaluate, and export through metrics.json (the card's threshold).
    assert "evaluate.operating_threshold" in stages["evaluate"]["params"]
    assert "metrics/metrics.json" in stages["export"]["deps"]


def test_the_stage_decides_at_the_operating_threshold(tmp_path: Path) -> None:
    """main() end to end on a model whose P(defective) is its image's mean pixel."""
    import keras

    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.GlobalAveragePooling2D()])
    model.save(tmp_path / "model.keras")
    p = np.array([0.9, 0.6, 0.4, 0.35, 0.45, 0.2, 0.1, 0.05], dtype=np.float32)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    np.savez(
        prepared / "test.npz",
        x=np.broadcast_to(p[:, None, None, None], (8, 4, 4, 1)).copy(),
        y=np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=np.float32),
        p=np.zeros(8, dtype=np.float32),
        type=np.array(["mono", "poly"] * 4),
        path=np.array([f"c{i}.png" for i in range(8)]),
    )
    params = {"base": {"threshold": 0.5}, "evaluate": {"operating_threshold": 0.3, "plot_dpi": 30}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    out = tmp_path / "out"
    main(
        [
            str(tmp_path / "model.keras"),
            str(prepared),
            str(out / "metrics.json"),
            str(out / "outcomes.json"),
            str(out / "plots"),
            "--params",
            str(tmp_path / "params.yaml"),
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["threshold"] == 0.3
    assert metrics["confusion_matrix"] == {"tn": 3, "fp": 1, "fn": 0, "tp": 4}
    assert metrics["at_one_half"]["confusion_matrix"] == {"tn": 4, "fp": 0, "fn": 2, "tp": 2}
    outcomes = SplitOutcomes(**json.loads((out / "outcomes.json").read_text(encoding="utf-8")))
    assert outcomes.accuracy == pytest.approx(7 / 8)  # the card's outcomes: at 0.3 too
    assert (out / "plots" / "pr.png").read_bytes()[:4] == b"\x89PNG"


def test_worst_mistakes_orders_each_kind_by_confidence() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 1])
    p = np.array([0.05, 0.40, 0.90, 0.95, 0.60, 0.10, 0.50])  # P = threshold is "functional"
    worst = worst_mistakes(y, p, 0.5, n=2)
    np.testing.assert_array_equal(worst["missed defect"], [0, 1])  # 0.05 before 0.40; 6 cut
    np.testing.assert_array_equal(worst["false alarm"], [3, 4])  # 0.95 before 0.60


def test_error_gallery_draws_two_rows_of_mistakes(tmp_path: Path) -> None:
    import matplotlib.image

    images = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([0.05, 0.40, 0.90, 0.95, 0.60, 0.10])
    worst = write_error_gallery(
        images, y, p, np.array(["mono"] * 6), 0.5, tmp_path / "errors.png", per_row=3, dpi=40
    )
    assert {k: len(v) for k, v in worst.items()} == {"missed defect": 2, "false alarm": 2}
    picture = matplotlib.image.imread(tmp_path / "errors.png")
    assert picture.shape[1] > picture.shape[0]  # a wide picture: two rows of three panels


def test_error_gallery_with_no_mistakes_still_writes_a_picture(tmp_path: Path) -> None:
    images = np.zeros((2, 8, 8, 1), np.float32)
    worst = write_error_gallery(
        images,
        np.array([0, 1]),
        np.array([0.1, 0.9]),
        np.array(["poly"] * 2),
        0.5,
        tmp_path / "errors.png",
        dpi=40,
    )
    assert all(len(v) == 0 for v in worst.values())
    assert (tmp_path / "errors.png").read_bytes()[:4] == b"\x89PNG"


def test_write_test_outcomes_records_right_and_wrong_in_path_order(tmp_path: Path) -> None:
    paths = np.array(["b.png", "a.png", "c.png", "d.png", "e.png"])
    y = np.array([1, 0, 1, 0, 1])
    p = np.array([0.9, 0.6, 0.2, 0.1, 0.5])  # right, wrong, wrong, right, wrong (0.5 is not > 0.5)
    outcomes = write_test_outcomes(tmp_path / "o.json", paths, y, p, 0.5)
    # Sorted: a wrong, b right, c wrong, d right, e wrong -> 01010 (+000) -> "50".
    assert outcomes.correct == "50"
    assert outcomes.fingerprint == split_fingerprint(list(paths), list(y))
    assert SplitOutcomes(**json.loads((tmp_path / "o.json").read_text())) == outcomes
