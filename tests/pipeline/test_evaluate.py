"""Test-split metrics, overall and per cell type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifier.pipeline.evaluate import compute_metrics, evaluate_predictions, write_plots


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
