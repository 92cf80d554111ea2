"""bench/recipe_trial.py: `--set` overrides of params.yaml, `--seeds`, and their errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import bench.recipe_trial as recipe_trial  # the repo root is not on the import path
from bench.trials import apply_override


def params() -> dict[str, Any]:
    return {"base": {"image_size": 128}, "train": {"dropout": 0.0, "augment": {"rot90": False}}}


@pytest.mark.parametrize(
    ("assignment", "path", "value"),
    [
        ("train.dropout=0.3", ("train", "dropout"), 0.3),
        ("train.augment.rot90=true", ("train", "augment", "rot90"), True),
        ("base.image_size=256", ("base", "image_size"), 256),
    ],
)
def test_override_sets_a_nested_key_parsed_as_yaml(
    assignment: str, path: tuple[str, ...], value: object
) -> None:
    p = params()
    apply_override(p, assignment)
    node: Any = p
    for key in path:
        node = node[key]
    assert node == value


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("train.dropout", "expected KEY=VALUE"),
        ("train.droput=0.3", "no key 'train.droput'"),
        ("training.dropout=0.3", "no section 'training'"),
    ],
)
def test_override_rejects_bad_assignments_and_changes_nothing(
    assignment: str, message: str
) -> None:
    p = params()
    with pytest.raises(SystemExit, match=message):
        apply_override(p, assignment)
    assert p == params()


@pytest.mark.parametrize("knob", ["refit", "cross_fold"])
def test_knobs_that_train_on_the_split_a_trial_scores_are_refused(
    tmp_path: Path, knob: str
) -> None:
    from bench.recipe_trial import main

    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"base: {{seed: 1}}\ntrain: {{{knob}: false}}\n")
    with pytest.raises(SystemExit, match=rf"train\.{knob} trains on"):
        main(["--params", str(params_file), "--set", f"train.{knob}=true"])


def test_each_split_seed_is_trained_apart_and_summarised(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trained: list[tuple[int, float]] = []

    def fake_trial(params: dict[str, Any], _workdir: Path) -> dict[str, Any]:
        """What run_trial returns, without the training (the CLI plumbing is under test)."""
        seed = params["base"]["seed"]
        trained.append((seed, params["train"]["dropout"]))
        return {
            "val_accuracy": {42: 0.80, 1: 0.84}[seed],
            "val_auc": {42: 0.88, 1: 0.90}[seed],
            "train_accuracy_last_epoch": [0.9, 0.9],
            "member_val_accuracy": [0.8, 0.8],
            "epochs": 3,
            "accuracy_by_type_and_probability": {"mono p=1.00": 0.5},
        }

    monkeypatch.setattr(recipe_trial, "run_trial", fake_trial)
    params_file = tmp_path / "params.yaml"
    params_file.write_text("base: {seed: 7}\ntrain: {dropout: 0.0, refit: false}\n")
    recipe_trial.main(
        ["--params", str(params_file), "--seeds", "42", "1", "--set", "train.dropout=0.3"]
    )
    assert trained == [(42, 0.3), (1, 0.3)]  # the seeds given, not base.seed; the override in each
    out = capsys.readouterr().out
    assert "split seed 1: val accuracy 0.840, val AUC 0.900" in out
    assert "over split seeds 42 1: val accuracy 0.8200 +/- 0.0283, val AUC 0.8900 +/- 0.0141" in out


def test_a_repeated_seed_is_refused_before_any_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_training(*_args: Any) -> None:
        raise AssertionError("trained despite bad arguments")

    monkeypatch.setattr(recipe_trial, "run_trial", no_training)
    params_file = tmp_path / "params.yaml"
    params_file.write_text("base: {seed: 7}\ntrain: {refit: false}\n")
    with pytest.raises(SystemExit):
        recipe_trial.main(["--params", str(params_file), "--seeds", "1", "1"])
    assert "each split seed once" in capsys.readouterr().err
