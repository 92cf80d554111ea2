"""The metric gate's decision: may the candidate model replace the one prod runs?

Pure functions over two model cards, standard library only (like `classifier.model_card`), so
the gate (`make gate`) and the promotion PR body (`gitops promote`, whose venv has no SciPy)
decide and report alike. The tests check the statistics against SciPy and hand-computed values.

The rule (summed up in docs/pipeline.md, stage "gate"):
1. Floor: the candidate's test accuracy >= `gate.min_accuracy`, always.
2. Against prod's card, on evidence, by the first method both cards allow:
   - paired: both cards carry `test_outcomes` with the same test-split fingerprint. b = images
     only the candidate gets right, c = images only prod gets right. Exact McNemar test (b of
     b + c against 1/2, two-sided), and the exact interval of the accuracy difference conditional
     on the b + c discordant pairs: (b + c) / n * (2 pi - 1) over the Clopper-Pearson interval of
     pi = b / (b + c). The interval excludes 0 exactly when McNemar's p < 1 - confidence.
   - unpaired: the splits differ (the data or the split changed) or a card has no per-image
     outcomes but records its test-image count: Newcombe's hybrid score interval (Wilson
     intervals of each accuracy) for two independent proportions; no p-value.
   - point: a card does not say on how many images it was scored: the rule before evidence,
     refused when candidate accuracy < prod accuracy - `gate.max_drop_vs_baseline`.
   Refused when the interval's upper bound is below -`gate.max_drop_vs_baseline`: the candidate
   is worse than prod by more than the allowed drop, with one-sided confidence
   (1 + `gate.confidence`) / 2. A difference the interval cannot tell from noise never refuses.
3. No prod card (before the first promotion): the first deploy; the floor alone decides.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

from classifier.model_card import ModelCard, SplitOutcomes

Method = Literal["paired", "unpaired", "point"]


@dataclass(frozen=True)
class GateRule:
    """params.yaml's `gate` section."""

    min_accuracy: float
    max_drop_vs_baseline: float
    confidence: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise ValueError(f"gate.min_accuracy must be in [0, 1], got {self.min_accuracy}")
        if not 0.0 <= self.max_drop_vs_baseline < 1.0:
            raise ValueError(
                f"gate.max_drop_vs_baseline must be in [0, 1), got {self.max_drop_vs_baseline}"
            )
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(
                f"gate.confidence must be in [0.5, 1) (e.g. 0.95), got {self.confidence}"
            )

    @classmethod
    def from_params(cls, gate: dict[str, Any]) -> GateRule:
        missing = [k for k in ("min_accuracy", "confidence") if k not in gate]
        if missing:
            raise ValueError(
                f"params.yaml's gate section lacks {', '.join(missing)}: add it (docs/pipeline.md)"
            )
        return cls(
            min_accuracy=float(gate["min_accuracy"]),
            max_drop_vs_baseline=float(gate.get("max_drop_vs_baseline", 0.0)),
            confidence=float(gate["confidence"]),
        )


# --- statistics ------------------------------------------------------------------------------


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b of b + c discordant pairs under Binomial(b + c, 1/2)
    (what `scipy.stats.binomtest(b, b + c).pvalue` gives), exact integer arithmetic."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / (1 << n))


def _binom_mass(lo: int, hi: int, n: int, p: float) -> float:
    """P(lo <= X <= hi) for X ~ Binomial(n, p), 0 < p < 1."""
    log_p, log_q = math.log(p), math.log1p(-p)
    return math.fsum(
        math.exp(
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * log_p
            + (n - i) * log_q
        )
        for i in range(max(lo, 0), min(hi, n) + 1)
    )


def _root(f: Callable[[float], float], *, increasing: bool) -> float:
    """The p in (0, 1) where the monotone `f` crosses 0 (bisection, absolute error < 1e-17)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if (f(mid) < 0) == increasing:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(x: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion, x successes of n."""
    if not 0 <= x <= n or n < 1:
        raise ValueError(f"need 0 <= x <= n and n >= 1, got x={x}, n={n}")
    tail = (1.0 - confidence) / 2
    low = 0.0 if x == 0 else _root(lambda p: _binom_mass(x, n, n, p) - tail, increasing=True)
    high = 1.0 if x == n else _root(lambda p: _binom_mass(0, x, n, p) - tail, increasing=False)
    return low, high


def paired_difference(b: int, c: int, n: int, confidence: float) -> tuple[float, float, float]:
    """(difference, low, high) of accuracy(candidate) - accuracy(baseline) on n paired images,
    b = right only by the candidate, c = right only by the baseline: the exact interval
    conditional on the b + c discordant pairs (consistent with `mcnemar_exact_p`)."""
    if b < 0 or c < 0 or b + c > n:
        raise ValueError(f"need b, c >= 0 and b + c <= n, got b={b}, c={c}, n={n}")
    d = b + c
    if d == 0:
        return 0.0, 0.0, 0.0
    low, high = clopper_pearson(b, d, confidence)
    share = d / n
    return (b - c) / n, share * (2 * low - 1), share * (2 * high - 1)


def wilson(x: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion, x successes of n."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    center = (x + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(x * (n - x) / n + z * z / 4)
    return max(0.0, center - half), min(1.0, center + half)


def newcombe_difference(
    x1: int, n1: int, x2: int, n2: int, confidence: float
) -> tuple[float, float, float]:
    """(difference, low, high) of x1/n1 - x2/n2 for two independent proportions: Newcombe's
    hybrid score interval (method 10 of Newcombe 1998, from the two Wilson intervals)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, confidence)
    l2, u2 = wilson(x2, n2, confidence)
    d = p1 - p2
    return d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


# --- comparing two cards ---------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Candidate vs baseline accuracy on the test split; `low`/`high` bound the difference."""

    method: Method
    why: str  # why this method, in a sentence
    candidate_accuracy: float
    baseline_accuracy: float
    candidate_images: int | None
    baseline_images: int | None
    difference: float  # candidate - baseline
    low: float
    high: float
    confidence: float
    improved: int | None = None  # b: images only the candidate gets right (paired only)
    regressed: int | None = None  # c: images only the baseline gets right (paired only)
    p_value: float | None = None  # exact McNemar (paired only)
    fingerprint: str | None = None  # the shared test split (paired only)


def _images(card: ModelCard) -> int | None:
    """On how many test images the card's accuracy was measured, when the card says."""
    if card.test_outcomes is not None:
        return card.test_outcomes.images
    count = card.extra.get("test_images")
    return count if isinstance(count, int) and count > 0 else None


def _correct(card: ModelCard, images: int) -> int:
    if card.test_outcomes is not None:
        return sum(card.test_outcomes.flags())
    return round(card.metrics["accuracy"] * images)


def _unpaired_why(candidate: SplitOutcomes | None, baseline: SplitOutcomes | None) -> str:
    if candidate is not None and baseline is not None:
        return (
            f"the test splits differ ({candidate.fingerprint[:19]}... vs "
            f"{baseline.fingerprint[:19]}...): the data or the split changed, so the two "
            "models were scored on different images"
        )
    which = [
        name
        for name, outcomes in (("the candidate's", candidate), ("prod's", baseline))
        if outcomes is None
    ]
    return f"{' and '.join(which)} card has no per-image test outcomes (exported before them)"


def compare(candidate: ModelCard, baseline: ModelCard, confidence: float) -> Comparison:
    """Paired when both cards carry outcomes on the same split, else unpaired, else point."""
    co, bo = candidate.test_outcomes, baseline.test_outcomes
    n_c, n_b = _images(candidate), _images(baseline)
    measured = partial(
        Comparison,
        candidate_accuracy=candidate.metrics["accuracy"],
        baseline_accuracy=baseline.metrics["accuracy"],
        candidate_images=n_c,
        baseline_images=n_b,
        confidence=confidence,
    )
    if co is not None and bo is not None and co.fingerprint == bo.fingerprint:
        pairs = list(zip(co.flags(), bo.flags(), strict=True))
        b = sum(1 for mine, theirs in pairs if mine and not theirs)
        c = sum(1 for mine, theirs in pairs if theirs and not mine)
        diff, low, high = paired_difference(b, c, co.images, confidence)
        return measured(
            method="paired",
            why="both cards record per-image outcomes on the same test split",
            difference=diff,
            low=low,
            high=high,
            improved=b,
            regressed=c,
            p_value=mcnemar_exact_p(b, c),
            fingerprint=co.fingerprint,
        )
    why = _unpaired_why(co, bo)
    if n_c is None or n_b is None:
        diff = candidate.metrics["accuracy"] - baseline.metrics["accuracy"]
        return measured(
            method="point",
            why=f"{why}, and a card does not say on how many test images it was scored",
            difference=diff,
            low=diff,
            high=diff,
        )
    diff, low, high = newcombe_difference(
        _correct(candidate, n_c), n_c, _correct(baseline, n_b), n_b, confidence
    )
    return measured(method="unpaired", why=why, difference=diff, low=low, high=high)


# --- the decision and its report -------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    rule: GateRule
    candidate: str  # "name version"
    candidate_accuracy: float
    baseline: str | None  # the baseline's version; None before the first promotion
    comparison: Comparison | None

    @property
    def below_floor(self) -> bool:
        return self.candidate_accuracy < self.rule.min_accuracy

    @property
    def worse_than_baseline(self) -> bool:
        c = self.comparison
        return c is not None and c.high < -self.rule.max_drop_vs_baseline

    @property
    def passed(self) -> bool:
        return not (self.below_floor or self.worse_than_baseline)

    def reasons(self) -> list[str]:
        """Why the candidate is refused (empty when it passes)."""
        out = []
        if self.below_floor:
            out.append(
                f"accuracy {self.candidate_accuracy:.4f} is below the floor "
                f"gate.min_accuracy={self.rule.min_accuracy:.4f}"
            )
        c = self.comparison
        if c is not None and self.worse_than_baseline:
            allowed = 0.0 - self.rule.max_drop_vs_baseline  # 0.0 -: never -0.0
            if c.method == "point":
                out.append(
                    f"accuracy {c.candidate_accuracy:.4f} is below the baseline {self.baseline}'s "
                    f"{c.baseline_accuracy:.4f} by more than gate.max_drop_vs_baseline="
                    f"{self.rule.max_drop_vs_baseline:.4f} (point estimates: no evidence)"
                )
            else:
                out.append(
                    f"worse than the baseline {self.baseline} with confidence: accuracy "
                    f"difference {c.difference:+.4f}, {_pct(c.confidence)} interval "
                    f"[{c.low:+.4f}, {c.high:+.4f}] lies below {allowed:+.4f} "
                    "(-gate.max_drop_vs_baseline)"
                )
        return out

    def lines(self) -> list[str]:
        """The report as plain lines (what the gate prints)."""
        out = [f"candidate {self.candidate}: accuracy {self.candidate_accuracy:.4f}"]
        floor = "FAIL" if self.below_floor else "ok"
        out.append(f"floor gate.min_accuracy={self.rule.min_accuracy:.4f}: {floor}")
        c = self.comparison
        if c is None:
            out.append(
                "no prod model card: first deploy, nothing to compare with; the floor alone decides"
            )
            return out
        out.append(
            f"vs prod {self.baseline} (accuracy {c.baseline_accuracy:.4f}): {c.method}, {c.why}"
        )
        if c.method == "paired":
            out.append(
                f"  same {c.candidate_images} test images ({c.fingerprint}); discordant: "
                f"b={c.improved} right only by the candidate, c={c.regressed} right only by "
                f"prod; exact McNemar p={c.p_value:.4g}"
            )
        elif c.method == "unpaired":
            out.append(
                f"  {c.candidate_images} candidate vs {c.baseline_images} prod test images "
                "(independent samples)"
            )
        out.append(f"  {_difference(c, '')}")
        out.append(
            f"  rule: {self._rule_text()}: {'REFUSED' if self.worse_than_baseline else 'ok'}"
        )
        return out

    def _rule_text(self) -> str:
        c, drop = self.comparison, self.rule.max_drop_vs_baseline
        bound = "the difference" if c is not None and c.method == "point" else "its upper bound"
        return f"refuse when {bound} < -gate.max_drop_vs_baseline = {0.0 - drop:+.4f}"

    def markdown(self, title: str = "Metric gate") -> str:
        """The report as a Markdown snippet (PR comment, promotion PR body)."""
        verdict = "pass" if self.passed else "REFUSED"
        out = [f"### {title}: **{verdict}**", ""]
        c = self.comparison
        floor = "**below**" if self.below_floor else "ok"
        if c is None:
            out += [
                f"Candidate `{self.candidate}`: accuracy {self.candidate_accuracy:.4f}; floor "
                f"`gate.min_accuracy` {self.rule.min_accuracy:.4f}: {floor}.",
                "",
                "No prod model card yet: this is the **first deploy**, there is nothing to "
                "compare with, and the floor alone decides.",
            ]
            return "\n".join(out) + "\n"
        out += [
            f"| | prod `{self.baseline}` | candidate `{self.candidate}` |",
            "|---|---|---|",
            f"| test accuracy | {c.baseline_accuracy:.4f} | {c.candidate_accuracy:.4f} |",
            f"| test images | {_count(c.baseline_images)} | {_count(c.candidate_images)} |",
            "",
            f"- Floor `gate.min_accuracy` {self.rule.min_accuracy:.4f}: {floor}.",
            f"- Comparison: **{c.method}**, because {c.why}.",
        ]
        if c.method == "paired":
            out.append(
                f"- Discordant pairs: b = {c.improved} right only by the candidate, "
                f"c = {c.regressed} right only by prod; exact McNemar p = {c.p_value:.4g}."
            )
        out.append(f"- Accuracy {_difference(c, '**')}.")
        outcome = (
            "**worse with confidence: refused**" if self.worse_than_baseline else "not refused"
        )
        out.append(f"- Rule: {self._rule_text()} → {outcome}.")
        return "\n".join(out) + "\n"


def _difference(c: Comparison, bold: str) -> str:
    text = f"difference candidate - prod: {bold}{c.difference:+.4f}{bold}"
    if c.method == "point":
        return f"{text} (no interval)"
    interval = f"[{c.low:+.4f}, {c.high:+.4f}]"
    return f"{text}, {_pct(c.confidence)} interval {bold}{interval}{bold}"


def _pct(confidence: float) -> str:
    return f"{100 * confidence:g}%"


def _count(images: int | None) -> str:
    return "unknown" if images is None else str(images)


def decide(candidate: ModelCard, baseline: ModelCard | None, rule: GateRule) -> Decision:
    """The gate's decision: the floor, and the comparison with the baseline when there is one."""
    return Decision(
        rule=rule,
        candidate=f"{candidate.name} {candidate.version}",
        candidate_accuracy=candidate.metrics["accuracy"],
        baseline=baseline.version if baseline is not None else None,
        comparison=(
            compare(candidate, baseline, rule.confidence) if baseline is not None else None
        ),
    )


def promotion_evidence(candidate: ModelCard, baseline: ModelCard | None, params: Path) -> str:
    """The promotion PR body's section: the gate's decision on the two cards under `params`'s
    `gate` rule (a report: the gate itself ran when the candidate was built)."""
    import yaml  # the delivery tools' dependency too; not the pipeline's params loader

    if not params.is_file():
        return f"### Metric gate\n\nNo gate rule to apply ({params.name}: not found).\n"
    try:
        gate = (yaml.safe_load(params.read_text(encoding="utf-8")) or {}).get("gate")
        if not isinstance(gate, dict):
            raise ValueError("no `gate` section")
        rule = GateRule.from_params(gate)
    except (OSError, yaml.YAMLError, AttributeError, KeyError, ValueError) as exc:
        return f"### Metric gate\n\nNo gate rule to apply ({params.name}: {exc}).\n"
    return decide(candidate, baseline, rule).markdown()
