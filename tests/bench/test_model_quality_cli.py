"""bench/model_quality.py's command line: `--set` trials in their own section, and its errors."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import bench.model_quality as model_quality  # the repo root is not on the import path

from classifier.pipeline.recipe import Recipe


def predictions(
    test_p: list[float], test_y: list[int], val_p: list[float], val_y: list[int]
) -> dict[str, np.ndarray]:
    return {
        "test_p": np.array(test_p),
        "test_y": np.array(test_y),
        "test_type": np.array(["mono"] * len(test_y)),
        "test_expert_p": np.array(test_y, dtype=float),
        "val_member1_p": np.array(val_p),
        "val_y": np.array(val_y),
    }


def fake_result(seed: int, params: dict[str, Any], _workdir: Path) -> dict[str, Any]:
    """What run_seed returns, without the training (the CLI plumbing is under test here)."""
    cell = {"accuracy": 0.8}
    metrics = {"accuracy": 0.8, "balanced_accuracy": 0.7, "roc_auc": 0.9, "f1": 0.6}
    metrics |= {"recall": 0.65, "precision": 0.75}
    return {
        "seed": seed,
        "metrics": {**metrics, "per_cell_type": {"mono": cell, "poly": cell}},
        "predictions": predictions([0.1, 0.9, 0.4, 0.6], [0, 1, 1, 0], [0.1, 0.9], [0, 1]),
        "train_seconds": 60.0,
        "epochs": int(params["train"]["epochs"]),
        "tflite_bytes": 2048,
        "flops": 10**6,
        "parameters": 100,
    }


@pytest.fixture(autouse=True)
def kept_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Each seed's predictions go to a scratch folder, not the checkout's build/."""
    monkeypatch.setattr(model_quality, "KEPT", tmp_path / "kept")
    return tmp_path / "kept"


def test_a_set_override_reaches_training_and_is_written_to_its_own_section(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kept_in_tmp: Path
) -> None:
    written: dict[str, str] = {}
    monkeypatch.setattr(model_quality, "run_seed", fake_result)
    monkeypatch.setattr(model_quality, "write_section", written.__setitem__)
    model_quality.main(["--seeds", "7", "--set", "train.epochs=3", "--section", "mq-trial"])
    text = written["mq-trial"]
    assert "--set train.epochs=3 --section mq-trial --seeds 7" in text
    assert "up to 3 epochs" in text  # the override is what was trained and reported
    assert "| 7 | 0.8000 | 0.7000 | 0.6500 | 0.7500 | 0.9000 |" in text
    # Each seed's numbers are printed as it ends, so a run cut short still reports them.
    expected = "seed 7: accuracy 0.8000, balanced 0.7000, ROC AUC 0.9000, recall 0.6500, training"
    assert expected in capsys.readouterr().out
    with np.load(kept_in_tmp / "mq-trial" / "seed-7.npz") as kept:
        assert kept["test_p"].tolist() == [0.1, 0.9, 0.4, 0.6]
        assert kept["val_member1_p"].tolist() == [0.1, 0.9]


def test_a_run_cut_short_keeps_the_seeds_it_finished_marked_partial(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written: dict[str, str] = {}

    def cut_at_seed_8(seed: int, params: dict[str, Any], workdir: Path) -> dict[str, Any]:
        if seed == 8:
            raise KeyboardInterrupt  # the session ends mid-run
        return fake_result(seed, params, workdir)

    monkeypatch.setattr(model_quality, "run_seed", cut_at_seed_8)
    monkeypatch.setattr(model_quality, "write_section", written.__setitem__)
    with pytest.raises(KeyboardInterrupt):
        model_quality.main(["--seeds", "7", "8", "9", "--section", "mq-cut"])
    text = written["mq-cut"]
    assert "| 7 | 0.8000 |" in text
    assert "**Partial: 1 of 3 split seeds** (not run, or cut short: 8, 9)" in text
    assert "--seeds 7 8 9" in text  # the command to finish it


def test_a_finished_run_is_not_marked_partial(monkeypatch: pytest.MonkeyPatch) -> None:
    written: dict[str, str] = {}
    monkeypatch.setattr(model_quality, "run_seed", fake_result)
    monkeypatch.setattr(model_quality, "write_section", written.__setitem__)
    model_quality.main(["--seeds", "7", "8", "--section", "mq-whole"])
    assert "| 8 | 0.8000 |" in written["mq-whole"]
    assert "Partial" not in written["mq-whole"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--section", "Model Quality"], "lowercase letters, digits and dashes"),
        (["--set", "train.nope=1"], "params.yaml has no key 'train.nope'"),
    ],
)
def test_bad_arguments_are_refused_before_any_training(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def no_training(*_args: Any) -> None:
        raise AssertionError("trained despite bad arguments")

    monkeypatch.setattr(model_quality, "run_seed", no_training)
    with pytest.raises(SystemExit) as exc:
        model_quality.main(argv)
    assert message in str(exc.value) + capsys.readouterr().err


@pytest.mark.parametrize(
    ("describe", "knobs", "words"),
    [
        ("fitting_note", {}, ""),
        ("fitting_note", {"refit": True}, ", refit on train + val (last epoch kept)"),
        (
            "fitting_note",
            {"cross_fold": True, "ensemble": 2},
            ", cross-fold (member i > 1 early-stops on its own fold of train)",
        ),
        ("targets", {}, "soft targets"),
        ("targets", {"soft_targets": False}, "binary targets"),
        ("targets", {"ordinal": True}, "ordinal head (one cut per expert level)"),
    ],
)
def test_the_section_says_what_the_members_fit_and_to_what(
    describe: str, knobs: dict[str, Any], words: str, tiny_recipe: Callable[..., Recipe]
) -> None:
    assert getattr(model_quality, describe)(tiny_recipe(**knobs)) == words


def test_the_section_names_every_augmentation_that_is_on(
    tiny_recipe: Callable[..., Recipe],
) -> None:
    recipe = tiny_recipe()
    aug = dataclasses.replace(recipe.augment, flip=True, rot90=False, brightness=0.1, mixup=0.2)
    on = dataclasses.replace(recipe, augment=aug)
    assert model_quality.augmentation(on) == "flips, brightness 0.1, mixup 0.2"
    off = dataclasses.replace(aug, flip=False, brightness=0.0, mixup=0.0)
    assert model_quality.augmentation(dataclasses.replace(recipe, augment=off)) == "none"


def test_the_section_names_sharpness_aware_steps_when_on(
    tiny_recipe: Callable[..., Recipe],
) -> None:
    on = " with sharpness-aware steps (rho 0.05)"
    assert model_quality.sam_note(tiny_recipe(sam_rho=0.05)) == on
    assert model_quality.sam_note(tiny_recipe(sam_rho=0.0)) == ""
