"""Where to put the operating threshold: precision, recall and balanced accuracy on the
validation split over a grid of thresholds, and the rules that pick one.

    .venv/bin/python -m bench.operating_threshold            # after `dvc repro` (models/, data/)

The rule over split seeds, `recall_pick` (docs/pipeline.md, "The operating threshold"), is
applied by `bench.model_quality` to the pooled test predictions of its split seeds: going down
the grid from the most accurate threshold, the lowest one before the first whose accuracy is
worse with confidence, paired on the same cells by the gate's own rule
(`classifier.comparison`). It spends accuracy on recall only where the loss cannot be told from
noise.

This command shows one model on its own validation split, with the first rule, which did not
carry over to the test split (docs/benchmarks.md `operating-threshold`): the threshold of the
grid with the highest balanced accuracy on member 1's validation predictions; on a tie, the
higher threshold (fewer false alarms). Balanced accuracy weighs a missed defective cell against
a false alarm by the inverse of their classes' shares (ELPV: one defective cell in three, so a
miss counts about twice a false alarm). Member 1 is the only part of
the model that never fitted the validation split (it only early-stopped on it; with
`train.cross_fold`, member 2 fitted it), so its predictions are the honest ones; the averaged
model's are printed beside them for reference. The test split is not read.

Prints both tables and writes the section `operating-threshold` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.report import machine_line, write_section
from classifier.comparison import GateRule, paired_difference
from classifier.pipeline.prepare import load_split  # the package pins the CPU kernels first


@dataclass(frozen=True)
class Row:
    threshold: float
    precision: float  # 1.0 when nothing is flagged (no false alarm raised)
    recall: float
    balanced_accuracy: float
    accuracy: float
    missed: int  # defective cells at or below the threshold
    false_alarms: int  # functional cells above it


def threshold_table(
    y_true: npt.NDArray[Any], p_defective: npt.NDArray[Any], grid: list[float]
) -> list[Row]:
    """One row per threshold: a cell is called defective when P(defective) > threshold."""
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(p_defective, dtype=np.float64).ravel()
    defective, functional = int(np.sum(y == 1)), int(np.sum(y == 0))
    if defective == 0 or functional == 0:
        raise SystemExit("the split holds one class only: no threshold can be judged on it")
    rows = []
    for t in grid:
        flagged = p > t
        hits = int(np.sum(flagged & (y == 1)))
        false_alarms = int(np.sum(flagged & (y == 0)))
        recall = hits / defective
        specificity = (functional - false_alarms) / functional
        rows.append(
            Row(
                threshold=t,
                precision=hits / (hits + false_alarms) if hits + false_alarms else 1.0,
                recall=recall,
                balanced_accuracy=(recall + specificity) / 2,
                accuracy=(hits + functional - false_alarms) / len(y),
                missed=defective - hits,
                false_alarms=false_alarms,
            )
        )
    return rows


def pick(rows: list[Row]) -> Row:
    """The rule: the highest balanced accuracy; on a tie, the higher threshold."""
    return max(rows, key=lambda row: (round(row.balanced_accuracy, 12), row.threshold))


@dataclass(frozen=True)
class AgainstMostAccurate:
    """One threshold's accuracy paired against the most accurate threshold's, same cells."""

    threshold: float
    difference: float  # accuracy here minus at the most accurate threshold
    low: float  # the gate's interval of that difference (classifier.comparison)
    high: float
    worse: bool  # worse with confidence, by the gate's own rule
    most_accurate: bool  # the threshold the others are paired against


def against_most_accurate(
    y_true: npt.NDArray[Any],
    p_defective: npt.NDArray[Any],
    grid: list[float],
    rule: GateRule,
) -> list[AgainstMostAccurate]:
    """Each threshold of the grid against the most accurate one (the higher on a tie), paired on
    the same cells as the gate pairs two models: b = cells right only here, c = right only there;
    worse when the interval's upper bound is below -`max_drop_vs_baseline`."""
    y = np.asarray(y_true).astype(int).ravel() == 1
    p = np.asarray(p_defective, dtype=np.float64).ravel()
    right = {t: (p > t) == y for t in grid}
    best = max(grid, key=lambda t: (int(np.sum(right[t])), t))
    rows = []
    for t in grid:
        b = int(np.sum(right[t] & ~right[best]))
        c = int(np.sum(~right[t] & right[best]))
        difference, low, high = paired_difference(b, c, len(y), rule.confidence)
        worse = high < -rule.max_drop_vs_baseline
        rows.append(AgainstMostAccurate(t, difference, low, high, worse, t == best))
    return rows


def recall_pick(rows: list[AgainstMostAccurate]) -> AgainstMostAccurate:
    """The rule over split seeds: going down the grid from the most accurate threshold, the
    lowest one reached before the first that is worse with confidence. A lower threshold buys
    recall with false alarms; this spends accuracy on recall only as far as the test cells
    cannot tell the loss from noise, by the same paired rule the gate applies to two models."""
    ordered = sorted(rows, key=lambda row: row.threshold)
    most_accurate = next(i for i, row in enumerate(ordered) if row.most_accurate)
    chosen = ordered[most_accurate]
    for row in reversed(ordered[:most_accurate]):
        if row.worse:
            break
        chosen = row
    return chosen


def held_out_member(model: Any) -> Any:
    """Member 1 of a model `average_members` joined (the model itself when it has one member)."""
    import keras

    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return members[0] if members else model


def grid_of(start: float, stop: float, step: float) -> list[float]:
    """Thresholds start, start + step, ... <= stop, rounded to the step's decimals."""
    if not 0 < start <= stop < 1 or step <= 0:
        raise SystemExit(f"--grid {start} {stop} {step}: need 0 < START <= STOP < 1 and STEP > 0")
    count = round((stop - start) / step) + 1
    return [round(start + i * step, 6) for i in range(count)]


def table(rows: list[Row], chosen: Row | None) -> str:
    lines = [
        "| threshold | precision | recall | balanced accuracy | accuracy | missed | false alarms |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mark = "**" if row == chosen else ""
        lines.append(
            f"| {mark}{row.threshold:g}{mark} | {row.precision:.3f} | {row.recall:.3f} "
            f"| {row.balanced_accuracy:.3f} | {row.accuracy:.3f} | {row.missed} "
            f"| {row.false_alarms} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument(
        "--grid",
        nargs=3,
        type=float,
        default=[0.2, 0.6, 0.05],
        metavar=("START", "STOP", "STEP"),
        help="the thresholds to score (default 0.2 0.6 0.05)",
    )
    args = parser.parse_args(argv)
    grid = grid_of(*args.grid)
    if not args.model.is_file():
        raise SystemExit(f"{args.model} not found: run `dvc repro` (or `dvc pull`) first")

    import keras

    val = load_split(args.prepared, "val")
    model = keras.models.load_model(args.model)
    member = held_out_member(model)
    p_member = np.asarray(member.predict(val["x"], batch_size=64, verbose=0)).ravel()
    p_model = np.asarray(model.predict(val["x"], batch_size=64, verbose=0)).ravel()
    member_rows = threshold_table(val["y"], p_member, grid)
    chosen = pick(member_rows)
    model_rows = threshold_table(val["y"], p_model, grid)
    defective = int(np.sum(np.asarray(val["y"]) > 0.5))
    text = (
        f"Member 1 (held out) on the validation split ({len(val['y'])} cells, {defective} "
        f"defective):\n\n{table(member_rows, chosen)}\n\nThe averaged model (what ships; "
        f"member 2 fitted this split, so it looks better than it is):\n\n"
        f"{table(model_rows, None)}\n\nThe rule's pick: {chosen.threshold:g}"
    )
    print(text)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "-m", "bench.operating_threshold", *given])
    write_section(
        "operating-threshold",
        "## The operating threshold, on the validation split\n\n"
        f"Command: `{command}` (bench/operating_threshold.py) — machine: {machine_line()}; "
        f"model: {args.model}. A cell is called defective when P(defective) > threshold. The "
        "rule: the highest balanced accuracy on member 1's predictions (the member that never "
        "fitted this split), the higher threshold on a tie; in bold.\n\n" + text + "\n",
    )


if __name__ == "__main__":
    main()
