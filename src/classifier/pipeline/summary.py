"""Print what the pipeline produced: headline test metrics, per cell type, training time,
export parity and where the artefacts are. `python -m classifier.pipeline.summary`

The files are the stages' outputs as dvc.yaml names them (`classifier.pipeline.stages`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from classifier.pipeline.common import PipelineError, read_json
from classifier.pipeline.stages import Stage, load_stages, output


def summary_lines(
    metrics: dict[str, Any],
    train: dict[str, Any],
    export: dict[str, Any],
    artefacts: Sequence[str],
) -> list[str]:
    headline = ", ".join(
        f"{name} {metrics[key]:.4f}"
        for name, key in (
            ("accuracy", "accuracy"),
            ("balanced accuracy", "balanced_accuracy"),
            ("ROC AUC", "roc_auc"),
            ("F1", "f1"),
        )
        if metrics.get(key) is not None
    )
    per_type = ", ".join(
        f"{t} {m['accuracy']:.4f} ({m['images']} images)"
        for t, m in metrics.get("per_cell_type", {}).items()
    )
    cm = metrics["confusion_matrix"]
    return [
        f"test split ({metrics['images']} images): {headline}",
        f"accuracy per cell type: {per_type}",
        f"confusion matrix: tn {cm['tn']}  fp {cm['fp']}  fn {cm['fn']}  tp {cm['tp']}",
        f"operating point: defective when P > {metrics['threshold']:g}: precision "
        f"{metrics['precision']:.4f}, recall {metrics['recall']:.4f} ({cm['fn']} of "
        f"{cm['fn'] + cm['tp']} defective cells missed, {cm['fp']} false alarms)",
        f"training: {train['members']} member(s) x {train['epochs_run']} epochs (kept "
        f"{', '.join(str(m['best_epoch']) for m in train['per_member'].values())}), "
        + (
            "refit on train + val, "
            if train.get("refit")
            else "cross-fold (member 1 early-stopped on val, the others on their own folds), "
            if train.get("cross_fold")
            else f"val accuracy {train['val_accuracy']:.4f}, "
        )
        + f"{train['train_seconds'] / 60:.1f} min, {train['parameters']:,} parameters",
        f"export: {export['tflite_bytes'] / 1024:.0f} KiB .tflite, LiteRT vs Keras max |diff| "
        f"{export['parity_max_abs_diff']:.2e} (tolerance {export['parity_tolerance']:g})",
        "artefacts: " + ", ".join(artefacts),
    ]


def artefacts(stages: dict[str, Stage]) -> list[str]:
    """What to look at after a run: the exported model and card, the test metrics and every
    picture the stages draw."""
    pictures = [p for stage in stages.values() for p in stage.plots if p.endswith(".png")]
    return [*stages["export"].outs, *stages["evaluate"].metrics, *pictures]


def main() -> None:
    try:
        stages = load_stages()
        lines = summary_lines(
            read_json(output("evaluate", "metrics.json")),
            read_json(output("train", "train.json")),
            read_json(output("export", "export.json")),
            artefacts(stages),
        )
    except PipelineError as exc:
        print(f"summary: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    for line in lines:
        print(f">> {line}")


if __name__ == "__main__":
    main()
