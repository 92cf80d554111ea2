"""Metric gate: may this model ship? `python -m classifier.pipeline.gate`

Fails (exit 1, one line per reason) when the candidate model card (by default the export
stage's) has a test accuracy
- below `gate.min_accuracy` in params.yaml (the floor for any model), or
- below the baseline card's accuracy by more than `gate.max_drop_vs_baseline` (the baseline is
  what production runs: `overlays/prod/model-card.json`, written by `gitops bump`).
A missing default baseline is normal before the first deployment: reported, not a failure.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from classifier.model_card import ModelCard, ModelCardError
from classifier.pipeline.common import PARAMS_FILE, PipelineError, load_params, section
from classifier.pipeline.export import CARD_NAME
from classifier.pipeline.stages import output

DEFAULT_BASELINE = Path("overlays/prod/model-card.json")


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]  # why it failed (empty when it passed)
    notes: list[str]  # what was compared


def check(
    candidate: ModelCard,
    baseline: ModelCard | None,
    *,
    min_accuracy: float,
    max_drop_vs_baseline: float = 0.0,
) -> GateResult:
    """Compare the candidate's test accuracy with the floor and with the baseline's."""
    accuracy = candidate.metrics["accuracy"]
    reasons: list[str] = []
    notes = [f"candidate {candidate.name} {candidate.version}: accuracy {accuracy:.4f}"]
    if accuracy < min_accuracy:
        reasons.append(
            f"accuracy {accuracy:.4f} is below the floor gate.min_accuracy={min_accuracy:.4f}"
        )
    else:
        notes.append(f"floor gate.min_accuracy={min_accuracy:.4f}: ok")
    if baseline is not None:
        base_accuracy = baseline.metrics["accuracy"]
        allowed = base_accuracy - max_drop_vs_baseline
        if accuracy < allowed:
            reasons.append(
                f"accuracy {accuracy:.4f} is below the baseline {baseline.version}'s "
                f"{base_accuracy:.4f} (allowed drop gate.max_drop_vs_baseline="
                f"{max_drop_vs_baseline:.4f})"
            )
        else:
            notes.append(f"baseline {baseline.version} accuracy {base_accuracy:.4f}: ok")
    return GateResult(passed=not reasons, reasons=reasons, notes=notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--candidate",
        type=Path,
        default=None,
        help="model card to judge (default: the export stage's, as dvc.yaml names it)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help=f"model card to beat (default: {DEFAULT_BASELINE} when it exists)",
    )
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    args = parser.parse_args(argv)
    try:
        cfg = section(load_params(args.params), "gate")
        candidate = ModelCard.load(args.candidate or output("export", CARD_NAME))
        baseline_path = args.baseline
        if baseline_path is None:
            if DEFAULT_BASELINE.is_file():
                baseline_path = DEFAULT_BASELINE
            else:
                print(f"gate: no baseline ({DEFAULT_BASELINE} does not exist yet): floor only")
        baseline = ModelCard.load(baseline_path) if baseline_path is not None else None
        result = check(
            candidate,
            baseline,
            min_accuracy=float(cfg["min_accuracy"]),
            max_drop_vs_baseline=float(cfg.get("max_drop_vs_baseline", 0.0)),
        )
    except (ModelCardError, PipelineError, KeyError, ValueError) as exc:
        print(f"gate: ERROR: {exc}", file=sys.stderr)
        return 2
    for note in result.notes:
        print(f"gate: {note}")
    if not result.passed:
        for reason in result.reasons:
            print(f"gate: FAIL: {reason}", file=sys.stderr)
        return 1
    print("gate: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
