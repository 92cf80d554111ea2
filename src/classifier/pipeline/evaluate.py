"""Stage `evaluate`: the trained model on the held-out test split (the only stage that reads it,
with `export`'s parity check).

    python -m classifier.pipeline.evaluate MODEL PREPARED METRICS OUTCOMES PLOTS

The model calls a cell defective when its P(defective) > `evaluate.operating_threshold` (the
operating point, which the model card carries to the service); `base.threshold` defines the
labels only (defective = the experts' probability > it). Writes METRICS (at the operating
point: accuracy, balanced accuracy, precision, recall, F1, confusion matrix; ROC AUC and average
precision; the same per cell type; and the headline at the paper's cut of 0.5, `at_one_half`,
to compare with earlier models and the paper) and, into PLOTS, DVC plot data `roc.csv`,
`pr.csv` and `predictions.csv` and the pictures `confusion_matrix.png`, `roc.png`, `pr.png`
(precision against recall, the operating point marked) and `errors.png` (the test cells the
model gets most wrong, as it sees them: what to look at before changing the recipe), and
OUTCOMES: right or wrong per test image, for the model card (the metric gate compares two
models image by image with it). The paths are the stage's command line in dvc.yaml.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from classifier.model_card import SplitOutcomes
from classifier.pipeline.common import (
    CLASS_NAMES,
    PARAMS_FILE,
    PipelineError,
    load_params,
    section,
    write_json,
)

ERRORS_PNG = "errors.png"
# The cut of the ELPV paper's protocol (Deitsch et al. 2019): metrics.json also reports the
# headline there, so a model at another operating point still compares with the earlier ones.
PAPER_THRESHOLD = 0.5
# What `at_one_half` leaves out: the count, and the threshold-free metrics it would only repeat.
_NOT_AT_ONE_HALF = ("images", "roc_auc", "average_precision")


def operating_threshold(params: dict[str, Any]) -> float:
    """`evaluate.operating_threshold` of params.yaml: defective when P(defective) > it."""
    cfg = section(params, "evaluate")
    if "operating_threshold" not in cfg:
        raise PipelineError(
            "params.yaml has no evaluate.operating_threshold: set the operating point, the "
            "P(defective) above which a cell is called defective, e.g. 0.5 "
            "(docs/pipeline.md, 'The operating threshold')"
        )
    value = cfg["operating_threshold"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise PipelineError(
            f"evaluate.operating_threshold must be a number strictly between 0 and 1, got "
            f"{value!r}: the model's output is a probability"
        )
    return float(value)


def _finite(value: float) -> float | None:
    """JSON has no NaN: an undefined metric (one class only) is recorded as null."""
    return None if math.isnan(value) else round(float(value), 6)


def compute_metrics(
    y_true: npt.NDArray[Any], p_defective: npt.NDArray[Any], threshold: float
) -> dict[str, Any]:
    """Binary classification metrics; `y_true` in {0, 1}, `p_defective` in [0, 1]."""
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(p_defective, dtype=np.float64).ravel()
    pred = (p > threshold).astype(int)
    both_classes = len(np.unique(y)) == 2
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "images": len(y),
        "accuracy": _finite(accuracy_score(y, pred)),
        "balanced_accuracy": _finite(balanced_accuracy_score(y, pred) if both_classes else np.nan),
        "roc_auc": _finite(roc_auc_score(y, p) if both_classes else np.nan),
        "average_precision": _finite(average_precision_score(y, p) if both_classes else np.nan),
        "f1": _finite(f1_score(y, pred, zero_division=0)),
        "precision": _finite(precision_score(y, pred, zero_division=0)),
        "recall": _finite(recall_score(y, pred, zero_division=0)),
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }


def evaluate_predictions(
    y_true: npt.NDArray[Any],
    p_defective: npt.NDArray[Any],
    cell_types: npt.NDArray[Any],
    threshold: float,
) -> dict[str, Any]:
    """Headline metrics at `threshold` over all test images, the same per cell type (mono /
    poly), and the threshold-dependent ones again at the paper's cut (`at_one_half`)."""
    result = compute_metrics(y_true, p_defective, threshold)
    types = np.asarray(cell_types).astype(str)
    result["threshold"] = threshold
    at_half = compute_metrics(y_true, p_defective, PAPER_THRESHOLD)
    result["at_one_half"] = {k: v for k, v in at_half.items() if k not in _NOT_AT_ONE_HALF}
    result["per_cell_type"] = {
        t: compute_metrics(
            np.asarray(y_true)[types == t], np.asarray(p_defective)[types == t], threshold
        )
        for t in sorted(set(types.tolist()))
    }
    return result


def write_test_outcomes(
    path: Path,
    image_paths: npt.NDArray[Any],
    y_true: npt.NDArray[Any],
    p_defective: npt.NDArray[Any],
    threshold: float,
) -> SplitOutcomes:
    """Right or wrong per test image at `threshold`, keyed by the split's fingerprint."""
    y = np.asarray(y_true).astype(int).ravel()
    pred = (np.asarray(p_defective, dtype=np.float64).ravel() > threshold).astype(int)
    outcomes = SplitOutcomes.of([str(p) for p in image_paths], y.tolist(), (pred == y).tolist())
    write_json(path, dataclasses.asdict(outcomes))
    return outcomes


def write_plots(
    y_true: npt.NDArray[Any],
    p_defective: npt.NDArray[Any],
    threshold: float,
    out_dir: Path,
    dpi: int = 100,
) -> list[Path]:
    """ROC curve, precision-recall curve (both classes present) and confusion matrix as DVC plot
    data (CSV) and as PNG pictures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(p_defective, dtype=np.float64).ravel()
    pred = (p > threshold).astype(int)
    with (out_dir / "predictions.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["actual", "predicted", "p_defective"])
        writer.writerows(
            (CLASS_NAMES[a], CLASS_NAMES[b], f"{q:.6f}") for a, b, q in zip(y, pred, p, strict=True)
        )
    written = [out_dir / "predictions.csv"]
    fig, ax = plt.subplots(figsize=(5, 5))
    if len(np.unique(y)) == 2:
        fpr, tpr, thresholds = roc_curve(y, p)
        with (out_dir / "roc.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["fpr", "tpr", "threshold"])
            writer.writerows(
                (f"{a:.6f}", f"{b:.6f}", f"{min(c, 1.0):.6f}")
                for a, b, c in zip(fpr, tpr, thresholds, strict=True)
            )
        written.append(out_dir / "roc.csv")
        ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(y, p):.3f}")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
        ax.legend(loc="lower right")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, test split")
    fig.tight_layout()
    fig.savefig(out_dir / "roc.png", dpi=dpi)
    plt.close(fig)
    written.append(out_dir / "roc.png")

    if len(np.unique(y)) == 2:
        written += write_pr_curve(y, p, threshold, out_dir, dpi)

    matrix = confusion_matrix(y, pred, labels=[0, 1])
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=14)
    ax.set_xticks([0, 1], CLASS_NAMES)
    ax.set_yticks([0, 1], CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Confusion matrix, test split (accuracy {np.trace(matrix) / matrix.sum():.3f})")
    fig.tight_layout()
    fig.savefig(out_dir / "confusion_matrix.png", dpi=dpi)
    plt.close(fig)
    written.append(out_dir / "confusion_matrix.png")
    return written


def operating_point(
    y_true: npt.NDArray[Any], p_defective: npt.NDArray[Any], threshold: float
) -> tuple[float, float]:
    """(precision, recall) of the defective class when P(defective) > `threshold` is called
    defective; precision is 1 when nothing is called defective (no false alarm was raised)."""
    y = np.asarray(y_true).astype(int).ravel()
    flagged = np.asarray(p_defective, dtype=np.float64).ravel() > threshold
    hits = int(np.sum(flagged & (y == 1)))
    precision = hits / int(flagged.sum()) if flagged.any() else 1.0
    return precision, hits / max(int(np.sum(y == 1)), 1)


def write_pr_curve(
    y_true: npt.NDArray[Any],
    p_defective: npt.NDArray[Any],
    threshold: float,
    out_dir: Path,
    dpi: int = 100,
) -> list[Path]:
    """`pr.csv` (recall, precision, threshold: DVC plot data) and `pr.png`: precision against
    recall of the defective class over all thresholds, the operating point (`threshold`) marked,
    and the paper's cut of 0.5 beside it when the two differ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(p_defective, dtype=np.float64).ravel()
    precision, recall, cuts = precision_recall_curve(y, p)
    with (out_dir / "pr.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["recall", "precision", "threshold"])
        # sklearn's last point (recall 0, precision 1) has no threshold.
        writer.writerows(
            (f"{r:.6f}", f"{q:.6f}", f"{t:.6f}")
            for r, q, t in zip(recall[:-1], precision[:-1], cuts, strict=True)
        )
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(recall, precision, label=f"AP = {average_precision_score(y, p):.3f}")
    ax.axhline(y.mean(), linestyle="--", color="grey", label="chance (share defective)")
    marks = [(threshold, "operating point", "tab:red", "o")]
    if threshold != PAPER_THRESHOLD:
        marks.append((PAPER_THRESHOLD, "paper's cut", "tab:grey", "s"))
    for cut, name, colour, marker in marks:
        q, r = operating_point(y, p, cut)
        ax.plot(
            [r],
            [q],
            marker=marker,
            color=colour,
            markersize=9,
            linestyle="none",
            label=f"{name}: P > {cut:g}, precision {q:.3f}, recall {r:.3f}",
        )
    ax.set_xlabel("recall (defective cells found)")
    ax.set_ylabel("precision (flagged cells that are defective)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall, test split")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "pr.png", dpi=dpi)
    plt.close(fig)
    return [out_dir / "pr.csv", out_dir / "pr.png"]


def worst_mistakes(
    y_true: npt.NDArray[Any], p_defective: npt.NDArray[Any], threshold: float, n: int
) -> dict[str, npt.NDArray[np.intp]]:
    """Indices of the `n` most confident mistakes of each kind: missed defects (defective, lowest
    P first) and false alarms (functional, highest P first)."""
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(p_defective, dtype=np.float64).ravel()
    missed = np.flatnonzero((y == 1) & (p <= threshold))
    false_alarms = np.flatnonzero((y == 0) & (p > threshold))
    return {
        "missed defect": missed[np.argsort(p[missed], kind="stable")][:n],
        "false alarm": false_alarms[np.argsort(-p[false_alarms], kind="stable")][:n],
    }


def write_error_gallery(
    images: npt.NDArray[Any],
    y_true: npt.NDArray[Any],
    p_defective: npt.NDArray[Any],
    cell_types: npt.NDArray[Any],
    threshold: float,
    out_path: Path,
    per_row: int = 8,
    dpi: int = 100,
) -> dict[str, npt.NDArray[np.intp]]:
    """A picture of `worst_mistakes`, as the model sees the cells (preprocessed): missed defects
    on top, false alarms below, each titled with its P(defective) and cell type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = np.asarray(p_defective, dtype=np.float64).ravel()
    y = np.asarray(y_true).astype(int).ravel()
    worst = worst_mistakes(y, p, threshold, per_row)
    fig, axes = plt.subplots(2, per_row, figsize=(1.6 * per_row, 4.0), squeeze=False)
    for (kind, picked), row in zip(worst.items(), axes, strict=True):
        for k, ax in enumerate(row):
            ax.set_axis_off()
            if k < len(picked):
                i = picked[k]
                ax.imshow(np.asarray(images[i])[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
                ax.set_title(f"{kind}\nP={p[i]:.2f} {cell_types[i]}", fontsize=7)
    pred = p > threshold
    fig.suptitle(
        f"Test cells the model gets most wrong: {int(np.sum((y == 1) & ~pred))} missed defects, "
        f"{int(np.sum((y == 0) & pred))} false alarms (defective when P > {threshold})",
        fontsize=9,
    )
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)
    return worst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the trained Keras model (.keras)")
    parser.add_argument("prepared", type=Path, help="prepare's output: test.npz")
    parser.add_argument("metrics", type=Path, help="the test metrics to write (.json)")
    parser.add_argument("outcomes", type=Path, help="right/wrong per test image to write (.json)")
    parser.add_argument("plots", type=Path, help="where to write the plot data and pictures")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = section(params, "evaluate")
    threshold = operating_threshold(params)  # bad params fail before the model loads

    import keras

    from classifier.pipeline.prepare import load_split

    started = time.monotonic()
    model = keras.models.load_model(args.model)
    test = load_split(args.prepared, "test")
    p = np.asarray(model.predict(test["x"], batch_size=64, verbose=0)).ravel()
    metrics = evaluate_predictions(test["y"], p, test["type"], threshold)
    write_json(args.metrics, metrics)
    write_test_outcomes(args.outcomes, test["path"], test["y"], p, threshold)
    pictures = write_plots(test["y"], p, threshold, args.plots, dpi=int(cfg["plot_dpi"]))
    gallery = args.plots / ERRORS_PNG
    write_error_gallery(
        test["x"], test["y"], p, test["type"], threshold, gallery, dpi=int(cfg["plot_dpi"])
    )
    per_type = ", ".join(f"{t} {m['accuracy']:.4f}" for t, m in metrics["per_cell_type"].items())
    written = [args.metrics, args.outcomes, *(q for q in pictures if q.suffix == ".png"), gallery]
    print(
        f"evaluate: {metrics['images']} test images, defective when P > {threshold:g}: "
        f"accuracy {metrics['accuracy']:.4f}, balanced {metrics['balanced_accuracy']}, "
        f"precision {metrics['precision']}, recall {metrics['recall']}, F1 {metrics['f1']}, "
        f"ROC AUC {metrics['roc_auc']} ({per_type}) in {time.monotonic() - started:.0f}s -> "
        + ", ".join(map(str, written))
    )


if __name__ == "__main__":
    main()
