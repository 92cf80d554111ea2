"""The metric gate command: the floor, the baseline (prod's card by default), the report.
The statistics and the rule itself: test_comparison.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.test_comparison import pair, plain_card

from classifier.comparison import GateRule
from classifier.model_card import ModelCard
from classifier.pipeline import gate

REPO = Path(__file__).resolve().parents[2]


def card(accuracy: float, version: str = "abc") -> ModelCard:
    """A card without per-image outcomes or a test-image count (as exported before them)."""
    return plain_card(accuracy, version)


def rule(min_accuracy: float = 0.85, max_drop: float = 0.0) -> GateRule:
    return GateRule(min_accuracy, max_drop, 0.95)


def test_check_fails_below_the_floor() -> None:
    result = gate.check(card(0.80), None, rule())
    assert not result.passed
    assert "below the floor" in result.reasons[0]


def test_check_without_evidence_fails_below_the_baseline() -> None:
    result = gate.check(card(0.86), card(0.88, "prod"), rule())
    assert not result.passed
    assert "below the baseline prod" in result.reasons[0]


def test_check_without_evidence_passes_within_the_allowed_drop() -> None:
    result = gate.check(card(0.86), card(0.88), rule(max_drop=0.03))
    assert result.passed
    assert result.reasons == []


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # dvc.yaml says where the export stage writes the card the gate judges by default.
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(
        "gate:\n  min_accuracy: 0.85\n  max_drop_vs_baseline: 0.0\n  confidence: 0.95\n",
        encoding="utf-8",
    )
    return tmp_path


def test_main_without_a_prod_card_is_the_first_deploy_and_says_so(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card(0.9).save(workdir / "models" / "model_card.json")
    assert gate.main(["--report", "build/gate.md"]) == 0
    out = capsys.readouterr().out
    assert "overlays/prod/model-card.json does not exist yet" in out
    assert "first deploy, the floor alone decides" in out
    assert "PASS" in out
    report = (workdir / "build" / "gate.md").read_text(encoding="utf-8")
    assert report.startswith("### Metric gate: **pass**")
    assert "**first deploy**" in report


def test_main_fails_against_the_default_prod_baseline(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card(0.9).save(workdir / "models" / "model_card.json")
    card(0.92, "prod").save(workdir / "overlays" / "prod" / "model-card.json")
    assert gate.main([]) == 1
    assert "FAIL" in capsys.readouterr().err


def test_main_refuses_a_model_worse_with_confidence_and_reports_it(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate, prod = pair(600, 560, b=2, c=30)  # candidate 0.8867, above the floor
    candidate.save(workdir / "models" / "model_card.json")
    prod.save(workdir / "overlays" / "prod" / "model-card.json")
    assert gate.main(["--report", "gate.md"]) == 1
    captured = capsys.readouterr()
    assert "b=2 right only by the candidate, c=30 right only by prod" in captured.out
    assert "FAIL: worse than the baseline prod with confidence" in captured.err
    assert "**REFUSED**" in (workdir / "gate.md").read_text(encoding="utf-8")


def test_main_passes_a_drop_it_cannot_tell_from_noise(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate, prod = pair(100, 90, b=0, c=5)  # 0.85 vs 0.90 on the same images, p = 0.0625
    candidate.save(workdir / "models" / "model_card.json")
    prod.save(workdir / "prod.json")
    assert gate.main(["--baseline", "prod.json"]) == 0
    assert "exact McNemar p=0.0625" in capsys.readouterr().out


def test_main_reports_an_unreadable_card(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "bad.json").write_text("{}", encoding="utf-8")
    assert gate.main(["--candidate", "bad.json"]) == 2
    assert "ERROR" in capsys.readouterr().err


def test_main_asks_for_a_missing_confidence(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("params.yaml").write_text("gate:\n  min_accuracy: 0.85\n", encoding="utf-8")
    card(0.9).save(workdir / "models" / "model_card.json")
    assert gate.main([]) == 2
    assert "gate section lacks confidence" in capsys.readouterr().err
