"""The end-of-run summary names the headline metrics and the artefacts."""

from __future__ import annotations

from pathlib import Path

from classifier.pipeline.stages import load_stages
from classifier.pipeline.summary import artefacts, summary_lines

ARTEFACTS = ["models/model.tflite", "plots/roc.png"]
REPO = Path(__file__).resolve().parents[2]


def test_summary_lines_report_metrics_per_type_and_artefacts() -> None:
    metrics = {
        "images": 4,
        "accuracy": 0.75,
        "balanced_accuracy": 0.7,
        "roc_auc": None,  # undefined metrics are skipped, not printed as None
        "f1": 0.5,
        "threshold": 0.35,
        "precision": 0.5,
        "recall": 1.0,
        "confusion_matrix": {"tn": 2, "fp": 1, "fn": 0, "tp": 1},
        "per_cell_type": {"mono": {"accuracy": 1.0, "images": 2}},
    }
    train = {
        "members": 2,
        "epochs_run": 3,
        "per_member": {"member_1": {"best_epoch": 2}, "member_2": {"best_epoch": 3}},
        "val_accuracy": 0.8,
        "train_seconds": 90.0,
        "parameters": 1000,
    }
    export = {"tflite_bytes": 2048, "parity_max_abs_diff": 1e-7, "parity_tolerance": 1e-4}
    text = "\n".join(summary_lines(metrics, train, export, ARTEFACTS))
    assert "accuracy 0.7500" in text
    assert "ROC AUC" not in text
    assert "mono 1.0000 (2 images)" in text
    assert (
        "operating point: defective when P > 0.35: precision 0.5000, recall 1.0000 "
        "(0 of 1 defective cells missed, 1 false alarms)" in text
    )
    assert "2 member(s) x 3 epochs (kept 2, 3), val accuracy 0.8000" in text
    assert "models/model.tflite" in text
    # After a refit the validation split was trained on: no validation accuracy to show.
    refit = {**train, "refit": True, "val_accuracy": None}
    text = "\n".join(summary_lines(metrics, refit, export, ARTEFACTS))
    assert "(kept 2, 3), refit on train + val, 1.5 min" in text
    # Cross-fold members: member 2 fitted the validation split, so no ensemble score either.
    cross_fold = {**train, "cross_fold": True, "val_accuracy": None}
    text = "\n".join(summary_lines(metrics, cross_fold, export, ARTEFACTS))
    assert (
        "(kept 2, 3), cross-fold (member 1 early-stopped on val, the others on their own "
        "folds), 1.5 min" in text
    )


def test_the_artefacts_are_the_exported_model_the_test_metrics_and_every_picture() -> None:
    listed = artefacts(load_stages(REPO / "dvc.yaml"))
    assert listed == [
        "models/model.tflite",
        "models/model_card.json",
        "metrics/metrics.json",
        "plots/training_history.png",
        "plots/confusion_matrix.png",
        "plots/roc.png",
        "plots/pr.png",
        "plots/errors.png",
    ]
