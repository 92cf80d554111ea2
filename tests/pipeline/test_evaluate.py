"""Test-split metrics, overall and per cell type."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from classifier.model_card import SplitOutcomes, split_fingerprint
from classifier.pipeline.evaluate import (
    compute_metrics,
    evaluate_predictions,
    worst_mistakes,
    write_error_gallery,
    write_plots,
    write_test_outcomes,
)


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
    assert names == {"predictions.csv", "roc.csv", "roc.png", "confusion_matrix.png"}
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


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
