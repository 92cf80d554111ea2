"""Where to put the operating threshold: precision, recall and balanced accuracy on the
validation split over a grid of thresholds, and the rules that pick one.

    .venv/bin/python -m bench.operating_threshold            # after `dvc repro` (models/, data/)
    .venv/bin/python -m bench.operating_threshold --kept build/bench-model/model-quality

The rule over split seeds, `recall_pick` (docs/pipeline.md, "The operating threshold"), is
applied by `bench.model_quality` to the pooled test predictions of its split seeds: going down
the grid from the most accurate threshold, the lowest one before the first whose accuracy is
worse with confidence, paired on the same cells by the gate's own rule
(`classifier.comparison`). It spends accuracy on recall only where the loss cannot be told from
noise. `--kept` applies it to predictions `bench.model_quality` kept, from one run or several
(one folder per run), and writes the section `operating-threshold-over-seeds`.

Without `--kept`, this command shows one model on its own validation split, with the first rule,
which did not carry over to the test split (docs/benchmarks.md `operating-threshold`): the
threshold of the grid with the highest balanced accuracy on member 1's validation predictions;
on a tie, the higher threshold (fewer false alarms). Balanced accuracy weighs a missed defective
cell against a false alarm by the inverse of their classes' shares (ELPV: one defective cell in
three, so a miss counts about twice a false alarm). Member 1 is the only part of the model that
never fitted the validation split (it only early-stopped on it; with `train.cross_fold`, member
2 fitted it), so its predictions are the honest ones; the averaged model's are printed beside
them for reference. The test split is not read.

Prints both tables and writes the section `operating-threshold` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.report import machine_line, write_section
from classifier.comparison import GateRule, paired_difference
from classifier.pipeline.prepare import load_split  # the package pins the CPU kernels first

DEFAULT_GRID = (0.2, 0.6, 0.05)  # START, STOP, STEP: the CLI's --grid and THRESHOLDS
Predictions = dict[str, npt.NDArray[Any]]  # one split seed's, as bench.model_quality keeps them


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


def rows_on_test(predictions: Predictions) -> list[Row]:
    return threshold_table(predictions["test_y"], predictions["test_p"], THRESHOLDS)


def validation_pick(predictions: Predictions) -> Row:
    """The validation rule's pick on one split seed (member 1), as its test split scores it."""
    val = threshold_table(predictions["val_y"], predictions["val_member1_p"], THRESHOLDS)
    chosen = pick(val).threshold
    return next(row for row in rows_on_test(predictions) if row.threshold == chosen)


def over_split_seeds(
    seeds: list[tuple[int, Predictions]], current: float, rule: GateRule
) -> list[str]:
    """Markdown: the grid over the split seeds' test sets (the averaged model), `recall_pick` on
    the pooled cells, and the validation rule's pick per seed; `seeds` as (seed, predictions)
    with bench.model_quality's keys (test_y, test_p, val_y, val_member1_p)."""
    per_seed = [rows_on_test(predictions) for _, predictions in seeds]
    pooled = against_most_accurate(
        np.concatenate([predictions["test_y"] for _, predictions in seeds]),
        np.concatenate([predictions["test_p"] for _, predictions in seeds]),
        THRESHOLDS,
        rule,
    )
    chosen = recall_pick(pooled).threshold
    cells = sum(len(predictions["test_y"]) for _, predictions in seeds)
    lines = [
        f"The operating threshold on the same test splits (now {current:g}): mean over the "
        "split seeds, the lowest split's accuracy, and the accuracy paired against the most "
        f"accurate threshold's on all {cells} test cells, with the gate's interval "
        f"({rule.confidence:.0%}). A cell is called defective when P(defective) > threshold. "
        "The rule (`bench.operating_threshold.recall_pick`, in bold): going down from the most "
        "accurate threshold, the lowest before the first that is worse with confidence.",
        "",
        "| threshold | accuracy | lowest split | balanced acc. | precision | recall "
        "| missed | false alarms | vs most accurate, pooled |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, (t, against) in enumerate(zip(THRESHOLDS, pooled, strict=True)):
        rows = [seed_rows[i] for seed_rows in per_seed]
        mark = "**" if t == chosen else ""
        now = " (now)" if abs(t - current) < 1e-9 else ""

        def mean(key: str, rows: list[Row] = rows) -> float:
            return statistics.mean(float(getattr(row, key)) for row in rows)

        paired = (
            "most accurate"
            if against.most_accurate
            else f"{against.difference:+.2%} ({against.low:+.2%} to {against.high:+.2%})"
            + (", worse" if against.worse else "")
        )
        lines.append(
            f"| {mark}{t:g}{mark}{now} | {mean('accuracy'):.4f} "
            f"| {min(row.accuracy for row in rows):.4f} | {mean('balanced_accuracy'):.4f} "
            f"| {mean('precision'):.3f} | {mean('recall'):.3f} | {mean('missed'):.1f} "
            f"| {mean('false_alarms'):.1f} | {paired} |"
        )
    picks = [(seed, validation_pick(predictions)) for seed, predictions in seeds]
    lines += [
        "",
        f"The rule's pick: {chosen:g}.",
        "",
        "The validation rule (`bench.operating_threshold`: the highest balanced accuracy of "
        "member 1 on the validation split) per split seed, scored on that seed's test split: "
        + "; ".join(
            f"{seed}: {row.threshold:g} (accuracy {row.accuracy:.4f}, balanced "
            f"{row.balanced_accuracy:.4f}, recall {row.recall:.3f})"
            for seed, row in picks
        )
        + ".",
    ]
    return lines


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


# The grid bench.model_quality scores on every split seed.
THRESHOLDS = grid_of(*DEFAULT_GRID)


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


def load_kept(folders: list[Path]) -> list[tuple[int, Predictions]]:
    """bench.model_quality's kept predictions (seed-S.npz) in `folders`, by split seed."""
    seeds: dict[int, Predictions] = {}
    for folder in folders:
        files = sorted(folder.glob("seed-*.npz"))
        if not files:
            raise SystemExit(
                f"--kept {folder}: no seed-S.npz in it; `bench.model_quality` keeps them in "
                "build/bench-model/SECTION"
            )
        for path in files:
            name = path.stem.removeprefix("seed-")
            if not name.isdigit():
                raise SystemExit(f"{path}: expected seed-S.npz with S a split seed")
            seed = int(name)
            if seed in seeds:
                raise SystemExit(f"--kept: split seed {seed} is in two folders; give it once")
            with np.load(path) as kept:
                missing = {"test_y", "test_p", "val_y", "val_member1_p"} - set(kept.files)
                if missing:
                    raise SystemExit(f"{path} lacks {', '.join(sorted(missing))}")
                seeds[seed] = {key: kept[key] for key in kept.files}
    return sorted(seeds.items())


def main_over_split_seeds(folders: list[Path], params_file: Path, command: str) -> None:
    """`--kept`: the rule over split seeds on kept predictions, section
    `operating-threshold-over-seeds`."""
    from classifier.pipeline.common import load_params
    from classifier.pipeline.evaluate import operating_threshold

    seeds = load_kept(folders)
    params = load_params(params_file)
    lines = over_split_seeds(
        seeds, operating_threshold(params), GateRule.from_params(params["gate"])
    )
    text = "\n".join(lines)
    print(text)
    names = ", ".join(str(seed) for seed, _ in seeds)
    write_section(
        "operating-threshold-over-seeds",
        "## The operating threshold over split seeds\n\n"
        f"Command: `{command}` (bench/operating_threshold.py, on the predictions "
        f"`bench.model_quality` kept: split seeds {names}). The models, their machine and "
        "their training are in the `bench.model_quality` sections of the same predictions.\n\n"
        + text
        + "\n",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument(
        "--grid",
        nargs=3,
        type=float,
        default=list(DEFAULT_GRID),
        metavar=("START", "STOP", "STEP"),
        help="the thresholds to score (default 0.2 0.6 0.05)",
    )
    parser.add_argument(
        "--kept",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="instead of a model: the predictions bench.model_quality kept "
        "(build/bench-model/SECTION), judged by the rule over split seeds",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "-m", "bench.operating_threshold", *given])
    if args.kept:
        main_over_split_seeds(args.kept, args.params, command)
        return
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
