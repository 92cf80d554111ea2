"""Metric gate: may this model ship? `python -m classifier.pipeline.gate`

Fails (exit 1, one line per reason) when the candidate model card (by default the export
stage's) has a test accuracy
- below `gate.min_accuracy` in params.yaml (the floor for any model), or
- worse than the baseline's with confidence: the baseline is what production runs
  (`overlays/prod/model-card.json`, written by `gitops promote`); the two are compared paired,
  image by image, when both cards were scored on the same test split
  (`classifier.comparison` has the rule and its statistics).
Before the first promotion there is no baseline: the first deploy, judged by the floor alone,
and the report says so. `--report FILE` writes the report as Markdown (the PR comment).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from classifier.comparison import Decision, GateRule, decide
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
    decision: Decision


def check(candidate: ModelCard, baseline: ModelCard | None, rule: GateRule) -> GateResult:
    """The floor, and the comparison with the baseline (`comparison.decide`)."""
    decision = decide(candidate, baseline, rule)
    return GateResult(decision.passed, decision.reasons(), decision.lines(), decision)


def write_report(path: Path, decision: Decision) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(decision.markdown(), encoding="utf-8")
    print(f"gate: report -> {path}")


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
    parser.add_argument("--report", type=Path, default=None, help="write the report as Markdown")
    args = parser.parse_args(argv)
    try:
        cfg = section(load_params(args.params), "gate")
        candidate = ModelCard.load(args.candidate or output("export", CARD_NAME))
        baseline_path = args.baseline
        if baseline_path is None:
            if DEFAULT_BASELINE.is_file():
                baseline_path = DEFAULT_BASELINE
            else:
                print(
                    f"gate: no baseline: {DEFAULT_BASELINE} does not exist yet (nothing was "
                    "promoted to prod): first deploy, the floor alone decides"
                )
        baseline = ModelCard.load(baseline_path) if baseline_path is not None else None
        result = check(candidate, baseline, GateRule.from_params(cfg))
    except (ModelCardError, PipelineError, KeyError, ValueError) as exc:
        print(f"gate: ERROR: {exc}", file=sys.stderr)
        return 2
    for note in result.notes:
        print(f"gate: {note}")
    if args.report is not None:
        write_report(args.report, result.decision)
    if not result.passed:
        for reason in result.reasons:
            print(f"gate: FAIL: {reason}", file=sys.stderr)
        return 1
    print("gate: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
