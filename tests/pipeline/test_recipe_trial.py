"""bench/recipe_trial.py: `--set` overrides of params.yaml, and its errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.recipe_trial import apply_override  # the repo root is not on the import path


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


def test_a_refit_is_refused_because_it_trains_on_the_split_a_trial_scores(
    tmp_path: Path,
) -> None:
    from bench.recipe_trial import main

    params_file = tmp_path / "params.yaml"
    params_file.write_text("base: {seed: 1}\ntrain: {refit: false}\n")
    with pytest.raises(SystemExit, match=r"train\.refit trains on"):
        main(["--params", str(params_file), "--set", "train.refit=true"])
