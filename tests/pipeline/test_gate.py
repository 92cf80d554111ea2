"""The metric gate fails below the floor or below the baseline, and passes otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from classifier.model_card import ModelCard, ModelInput
from classifier.pipeline import gate

REPO = Path(__file__).resolve().parents[2]


def card(accuracy: float, version: str = "abc") -> ModelCard:
    return ModelCard(
        name="elpv-defect-cnn",
        version=version,
        git_revision=version * 4,
        data_hash="x.dir",
        input=ModelInput(height=32, width=32),
        threshold=0.5,
        labels=("functional", "defective"),
        metrics={"accuracy": accuracy, "balanced_accuracy": 0.8, "roc_auc": 0.9, "f1": 0.7},
        params={},
        exported_at="2025-01-01T00:00:00+00:00",
        export_parity_max_abs_diff=0.0,
    )


def test_check_fails_below_the_floor() -> None:
    result = gate.check(card(0.80), None, min_accuracy=0.85)
    assert not result.passed
    assert "below the floor" in result.reasons[0]


def test_check_fails_below_the_baseline() -> None:
    result = gate.check(card(0.86), card(0.88, "prod"), min_accuracy=0.85)
    assert not result.passed
    assert "below the baseline prod" in result.reasons[0]


def test_check_passes_within_the_allowed_drop() -> None:
    result = gate.check(card(0.86), card(0.88), min_accuracy=0.85, max_drop_vs_baseline=0.03)
    assert result.passed
    assert result.reasons == []


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # dvc.yaml says where the export stage writes the card the gate judges by default.
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(
        "gate:\n  min_accuracy: 0.85\n  max_drop_vs_baseline: 0.0\n", encoding="utf-8"
    )
    return tmp_path


def test_main_passes_without_a_baseline_and_says_so(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card(0.9).save(workdir / "models" / "model_card.json")
    assert gate.main([]) == 0
    out = capsys.readouterr().out
    assert "no baseline" in out
    assert "PASS" in out


def test_main_fails_against_the_default_prod_baseline(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card(0.9).save(workdir / "models" / "model_card.json")
    card(0.92, "prod").save(workdir / "overlays" / "prod" / "model-card.json")
    assert gate.main([]) == 1
    assert "FAIL" in capsys.readouterr().err


def test_main_reports_an_unreadable_card(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "bad.json").write_text("{}", encoding="utf-8")
    assert gate.main(["--candidate", "bad.json"]) == 2
    assert "ERROR" in capsys.readouterr().err
