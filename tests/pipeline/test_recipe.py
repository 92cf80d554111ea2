"""The recipe: parsed once from params.yaml, every key required, every value checked."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from classifier.pipeline.common import PipelineError
from classifier.pipeline.recipe import AUGMENT_KEYS, TRAIN_KEYS, Recipe

REPO = Path(__file__).resolve().parents[2]


def test_params_yaml_is_a_valid_recipe_field_for_key() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    recipe = Recipe.from_params(params)
    train = params["train"]
    assert recipe.seed == params["base"]["seed"]
    assert recipe.image_size == params["base"]["image_size"]
    for key in TRAIN_KEYS:
        expected = train[key]
        assert getattr(recipe, key) == (tuple(expected) if isinstance(expected, list) else expected)
    assert dataclasses.asdict(recipe.augment) == train["augment"]
    # every key of the train section is a recipe field, and every field a key: one set of names
    assert set(train) == set(TRAIN_KEYS) | {"augment"}
    assert set(train["augment"]) == set(AUGMENT_KEYS)


@pytest.mark.parametrize(
    ("section", "key"), [("base", "seed"), ("train", "epochs"), ("train", "ordinal")]
)
def test_a_missing_key_is_named_with_the_fix(
    tiny_params: dict[str, Any], section: str, key: str
) -> None:
    del tiny_params[section][key]
    with pytest.raises(PipelineError, match=rf"{section}\.{key} is missing: .* add it"):
        Recipe.from_params(tiny_params)


def test_a_missing_augmentation_key_is_named(tiny_params: dict[str, Any]) -> None:
    del tiny_params["train"]["augment"]["rot90"]
    with pytest.raises(PipelineError, match=r"train\.augment\.rot90 is missing"):
        Recipe.from_params(tiny_params)


@pytest.mark.parametrize(
    ("where", "message"),
    [("train", r"train has unknown key\(s\) dropuot"), ("augment", r"augment has unknown")],
)
def test_a_misspelt_key_is_refused_not_ignored(
    tiny_params: dict[str, Any], where: str, message: str
) -> None:
    mapping = tiny_params["train"] if where == "train" else tiny_params["train"]["augment"]
    mapping["dropuot"] = 0.3
    with pytest.raises(PipelineError, match=message):
        Recipe.from_params(tiny_params)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("epochs", "80", "train.epochs must be a whole number"),
        ("epochs", 2.5, "train.epochs must be a whole number"),
        ("ordinal", "yes", "train.ordinal must be true or false"),
        ("ordinal", 1, "train.ordinal must be true or false"),
        ("learning_rate", True, "train.learning_rate must be a number"),
        ("filters", [4, "8"], "train.filters must be a list of whole numbers"),
        ("pooling", 1, "train.pooling must be a string"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(
    tiny_params: dict[str, Any], key: str, value: Any, message: str
) -> None:
    tiny_params["train"][key] = value
    with pytest.raises(PipelineError, match=message):
        Recipe.from_params(tiny_params)


def test_numbers_are_read_as_the_field_types(tiny_params: dict[str, Any]) -> None:
    tiny_params["train"].update({"learning_rate": 1, "dropout": 0})
    recipe = Recipe.from_params(tiny_params)
    assert isinstance(recipe.learning_rate, float)
    assert isinstance(recipe.dropout, float)
    assert recipe.filters == (4, 8)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("bn_momentum", 1.0, "bn_momentum"),
        ("warmup_epochs", -1, "warmup_epochs"),
        ("epochs", 0, "train.epochs, train.batch_size and train.patience must be >= 1"),
        ("filters", [], "train.filters must list one width"),
        ("dropout", 1.0, r"train.dropout must be in \[0, 1\)"),
        ("pooling", "median", "train.pooling must be one of avg, avgmax"),
        ("ensemble", 0, "train.ensemble must be >= 1"),
        ("stem_stride", 3, "train.stem_stride must be 1 or 2"),
        ("weight_decay", -0.1, "train.weight_decay must be >= 0"),
        ("ema_momentum", 1.0, "train.ema_momentum must be in"),
        ("ema_momentum", -0.5, "train.ema_momentum must be in"),
        ("sam_rho", -0.05, "train.sam_rho is the radius"),
        ("augment", {"shift": 0.6}, "shift and scale must be in"),
        ("augment", {"rotate": -1}, "rotate in"),
        ("augment", {"scale": 0.5}, "shift and scale must be in"),
        ("augment", {"brightness": -0.1}, "brightness and contrast are maximum jitters"),
        ("augment", {"mixup": -0.2}, "train.augment.mixup is the Beta"),
        ("soft_targets", False, "train.ordinal fits the expert levels"),
    ],
)
def test_out_of_range_values_are_refused(
    tiny_params: dict[str, Any], key: str, value: Any, message: str
) -> None:
    train = tiny_params["train"]
    if key == "augment":
        train["augment"].update(value)
    else:
        train[key] = value
    train["ordinal"] = key == "soft_targets"
    with pytest.raises(PipelineError, match=message):
        Recipe.from_params(tiny_params)


def test_the_ordinal_head_refuses_mixup(tiny_params: dict[str, Any]) -> None:
    tiny_params["train"]["ordinal"] = True
    tiny_params["train"]["augment"]["mixup"] = 0.2
    with pytest.raises(PipelineError, match="a blend of two levels is no level"):
        Recipe.from_params(tiny_params)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"ensemble": 1}, "ensemble >= 2"), ({"ensemble": 2, "refit": True}, "refit: false")],
)
def test_cross_fold_needs_several_members_and_no_refit(
    tiny_recipe: Callable[..., Recipe], changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(PipelineError, match=message):
        tiny_recipe(**changes, cross_fold=True)


def test_a_recipe_made_in_code_is_checked_too(tiny_recipe: Callable[..., Recipe]) -> None:
    with pytest.raises(PipelineError, match=r"train\.stem_stride must be 1 or 2"):
        tiny_recipe(stem_stride=4)


@pytest.mark.parametrize(
    ("changes", "scores"),
    [({}, True), ({"refit": True}, False), ({"cross_fold": True, "ensemble": 2}, False)],
)
def test_only_a_model_that_never_fitted_the_validation_split_is_scored_on_it(
    tiny_recipe: Callable[..., Recipe], changes: dict[str, Any], scores: bool
) -> None:
    assert tiny_recipe(**changes).scores_validation is scores
