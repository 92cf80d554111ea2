"""The gate's decision on evidence: statistics checked against SciPy and hand-computed exact
values, and the rule on synthetic per-image outcomes (worse, better, same, borderline, another
split, no prod card, old cards)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import binomtest

from classifier import comparison
from classifier.comparison import GateRule, decide
from classifier.model_card import ModelCard, ModelInput, SplitOutcomes

RULE = GateRule(min_accuracy=0.5, max_drop_vs_baseline=0.0, confidence=0.95)


def paths(n: int, prefix: str = "images/cell") -> list[str]:
    return [f"{prefix}{i:04d}.png" for i in range(n)]


def plain_card(accuracy: float, version: str, **fields: Any) -> ModelCard:
    """A card; without `test_outcomes` in `fields` it is like those exported before them."""
    return ModelCard(
        **{
            "name": "elpv-defect-cnn",
            "version": version,
            "git_revision": version * 4,
            "data_hash": "x.dir",
            "input": ModelInput(height=32, width=32),
            "threshold": 0.5,
            "labels": ("functional", "defective"),
            "metrics": {"accuracy": accuracy, "balanced_accuracy": 0.8, "roc_auc": 0.9, "f1": 0.7},
            "params": {},
            "exported_at": "2026-01-01T00:00:00+00:00",
            "export_parity_max_abs_diff": 0.0,
            **fields,
        }
    )


def card(correct: list[bool], version: str, *, prefix: str = "images/cell") -> ModelCard:
    """A card with per-image outcomes `correct` on n images named by `prefix`."""
    n = len(correct)
    outcomes = SplitOutcomes.of(paths(n, prefix), [i % 2 for i in range(n)], correct)
    return plain_card(round(sum(correct) / n, 6), version, test_outcomes=outcomes)


def pair(n: int, prod_right: int, b: int, c: int) -> tuple[ModelCard, ModelCard]:
    """(candidate, prod) on the same n images: prod gets the first `prod_right` right; the
    candidate also gets b of prod's mistakes right and c of prod's right answers wrong."""
    prod = [i < prod_right for i in range(n)]
    cand = list(prod)
    for i in range(prod_right, prod_right + b):
        cand[i] = True
    for i in range(c):
        cand[i] = False
    return card(cand, "cand"), card(prod, "prod")


# --- statistics ------------------------------------------------------------------------------


def test_mcnemar_matches_hand_computed_exact_values() -> None:
    # Two-sided: 2 * P(X <= min(b, c)) under Binomial(b + c, 1/2), capped at 1.
    assert comparison.mcnemar_exact_p(0, 6) == 2 / 2**6
    assert comparison.mcnemar_exact_p(0, 5) == 2 / 2**5
    assert comparison.mcnemar_exact_p(8, 1) == 2 * (1 + 9) / 2**9
    assert comparison.mcnemar_exact_p(2, 30) == 2 * (1 + 32 + 496) / 2**32
    assert comparison.mcnemar_exact_p(4, 4) == 1.0
    assert comparison.mcnemar_exact_p(0, 0) == 1.0


@pytest.mark.parametrize("n", [1, 2, 7, 32, 150, 400])
def test_mcnemar_and_clopper_pearson_match_scipy(n: int) -> None:
    for x in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        reference = binomtest(x, n)
        assert comparison.mcnemar_exact_p(x, n - x) == pytest.approx(reference.pvalue, rel=1e-9)
        for confidence in (0.9, 0.95, 0.99):
            ci = reference.proportion_ci(confidence, method="exact")
            low, high = comparison.clopper_pearson(x, n, confidence)
            assert low == pytest.approx(ci.low, abs=1e-10)
            assert high == pytest.approx(ci.high, abs=1e-10)


def test_clopper_pearson_with_no_successes_has_a_closed_form() -> None:
    # P(X = 0 | p) = (1 - p)^n = 0.025 at the upper bound.
    assert comparison.clopper_pearson(0, 6, 0.95) == (0.0, pytest.approx(1 - 0.025 ** (1 / 6)))
    assert comparison.clopper_pearson(6, 6, 0.95) == (pytest.approx(0.025 ** (1 / 6)), 1.0)


def test_paired_interval_is_the_scaled_discordant_interval() -> None:
    diff, low, high = comparison.paired_difference(0, 6, 100, 0.95)
    assert diff == pytest.approx(-0.06)
    assert low == pytest.approx(-0.06)
    assert high == pytest.approx(0.06 * (2 * (1 - 0.025 ** (1 / 6)) - 1))
    assert comparison.paired_difference(0, 0, 100, 0.95) == (0.0, 0.0, 0.0)


def test_newcombe_matches_the_published_examples() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10.
    for (x1, n1, x2, n2), (low, high) in [
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((6, 7, 2, 7), (0.0582, 0.8062)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ]:
        diff, lo, hi = comparison.newcombe_difference(x1, n1, x2, n2, 0.95)
        assert diff == pytest.approx(x1 / n1 - x2 / n2)
        assert (round(lo, 4), round(hi, 4)) == (low, high)


# --- the decision ----------------------------------------------------------------------------


def test_clearly_worse_is_refused() -> None:
    candidate, prod = pair(600, 540, b=2, c=30)
    decision = decide(candidate, prod, RULE)
    c = decision.comparison
    assert c is not None
    assert c.method == "paired"
    assert (c.improved, c.regressed) == (2, 30)
    assert c.difference == pytest.approx(-28 / 600)
    assert c.p_value == pytest.approx(binomtest(2, 32).pvalue)
    assert c.high < 0
    assert not decision.passed
    assert "worse than the baseline prod with confidence" in decision.reasons()[0]


def test_clearly_better_passes() -> None:
    candidate, prod = pair(600, 510, b=30, c=2)
    decision = decide(candidate, prod, RULE)
    assert decision.comparison is not None
    assert decision.comparison.low > 0
    assert decision.passed
    assert decision.reasons() == []


def test_the_same_model_passes() -> None:
    candidate, prod = pair(600, 520, b=0, c=0)
    decision = decide(candidate, prod, RULE)
    c = decision.comparison
    assert c is not None
    assert (c.improved, c.regressed, c.p_value) == (0, 0, 1.0)
    assert (c.difference, c.low, c.high) == (0.0, 0.0, 0.0)
    assert decision.passed


@pytest.mark.parametrize(
    ("b", "c", "refused"),
    [
        (0, 5, False),  # p = 2/32 = 0.0625: could be noise
        (0, 6, True),  # p = 2/64 = 0.03125: worse with confidence
        (1, 7, False),  # p = 18/256 = 0.0703
        (1, 8, True),  # p = 20/512 = 0.0391
    ],
)
def test_borderline_the_rule_decides_on_both_sides_of_the_line(
    b: int, c: int, refused: bool
) -> None:
    candidate, prod = pair(100, 90, b=b, c=c)
    decision = decide(candidate, prod, RULE)
    comp = decision.comparison
    assert comp is not None
    assert comp.p_value is not None
    assert (comp.p_value < 0.05) is refused  # the interval and the test agree
    assert (comp.high < 0) is refused
    assert decision.passed is not refused


def test_the_allowed_drop_and_the_confidence_move_the_line() -> None:
    candidate, prod = pair(100, 90, b=0, c=6)  # upper bound -0.0049
    tolerant = GateRule(min_accuracy=0.5, max_drop_vs_baseline=0.01, confidence=0.95)
    assert decide(candidate, prod, tolerant).passed
    candidate, prod = pair(100, 90, b=0, c=5)  # refused at 90 %: P(X = 0) = 1/32 < 0.05
    assert decide(candidate, prod, RULE).passed
    assert not decide(candidate, prod, GateRule(0.5, 0.0, 0.90)).passed


def test_the_floor_still_refuses_a_better_model() -> None:
    candidate, prod = pair(100, 70, b=10, c=0)
    decision = decide(candidate, prod, GateRule(0.85, 0.0, 0.95))
    assert not decision.passed
    assert decision.reasons() == ["accuracy 0.8000 is below the floor gate.min_accuracy=0.8500"]


def test_another_split_falls_back_to_the_unpaired_interval() -> None:
    candidate = card([i < 56 for i in range(70)], "cand", prefix="other/cell")
    prod = card([i < 48 for i in range(80)], "prod")
    c = decide(candidate, prod, RULE).comparison
    assert c is not None
    assert c.method == "unpaired"
    assert "test splits differ" in c.why
    assert c.p_value is None
    assert c.improved is None
    assert (round(c.low, 4), round(c.high, 4)) == (0.0524, 0.3339)
    # The same figures the other way round: worse with confidence.
    worse = decide(prod, candidate, RULE)
    assert worse.comparison is not None
    assert (round(worse.comparison.low, 4), round(worse.comparison.high, 4)) == (-0.3339, -0.0524)
    assert not worse.passed


def _without_outcomes(c: ModelCard, **extra: object) -> ModelCard:
    return ModelCard(**{**c.__dict__, "test_outcomes": None, "extra": dict(extra)})


def test_an_old_prod_card_is_compared_unpaired_or_by_point() -> None:
    candidate, prod = pair(200, 180, b=0, c=4)
    old = _without_outcomes(prod, test_images=200)
    c = decide(candidate, old, RULE).comparison
    assert c is not None
    assert c.method == "unpaired"
    assert "prod's card has no per-image test outcomes" in c.why
    expected = comparison.newcombe_difference(176, 200, 180, 200, 0.95)
    assert (c.difference, c.low, c.high) == pytest.approx(expected)
    # No test-image count either: the point rule of before (any drop refuses).
    decision = decide(candidate, _without_outcomes(prod), RULE)
    assert decision.comparison is not None
    assert decision.comparison.method == "point"
    assert not decision.passed
    assert "point estimates" in decision.reasons()[0]


def test_no_prod_card_is_the_first_deploy_floor_only() -> None:
    candidate, _ = pair(100, 90, b=0, c=0)
    decision = decide(candidate, None, RULE)
    assert decision.passed
    assert decision.comparison is None
    assert any("first deploy" in line for line in decision.lines())
    assert "**first deploy**" in decision.markdown()
    assert not decide(candidate, None, GateRule(0.95, 0.0, 0.95)).passed


def test_the_report_shows_the_evidence() -> None:
    candidate, prod = pair(600, 540, b=2, c=30)
    decision = decide(candidate, prod, RULE)
    md = decision.markdown()
    c = decision.comparison
    assert c is not None
    assert "REFUSED" in md
    assert "b = 2 right only by the candidate, c = 30 right only by prod" in md
    assert f"p = {c.p_value:.4g}" in md
    assert f"95% interval **[{c.low:+.4f}, {c.high:+.4f}]**" in md
    assert "refuse when its upper bound < -gate.max_drop_vs_baseline = +0.0000" in md
    text = "\n".join(decision.lines())
    assert "b=2" in text
    assert "c=30" in text
    assert f"[{c.low:+.4f}, {c.high:+.4f}]" in text


def test_rule_from_params_needs_the_confidence() -> None:
    assert GateRule.from_params({"min_accuracy": 0.85, "confidence": 0.9}) == GateRule(
        0.85, 0.0, 0.9
    )
    with pytest.raises(ValueError, match="lacks confidence"):
        GateRule.from_params({"min_accuracy": 0.85})
    with pytest.raises(ValueError, match=r"gate\.confidence must be in \[0\.5, 1\)"):
        GateRule.from_params({"min_accuracy": 0.85, "confidence": 95})


def test_promotion_evidence_uses_the_params_rule(tmp_path: Path) -> None:
    candidate, prod = pair(100, 90, b=0, c=5)
    params = tmp_path / "params.yaml"
    missing = comparison.promotion_evidence(candidate, prod, params)
    assert "No gate rule to apply (params.yaml: " in missing
    assert "not found" in missing
    params.write_text(
        "gate:\n  min_accuracy: 0.5\n  max_drop_vs_baseline: 0.0\n  confidence: 0.9\n"
    )
    md = comparison.promotion_evidence(candidate, prod, params)
    assert "90% interval" in md
    assert "REFUSED" in md
    assert math.isclose(float(md.split("p = ")[1].split(".\n")[0]), 0.0625)
