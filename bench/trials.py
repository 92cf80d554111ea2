"""What the recipe benchmarks share: params.yaml with `--set` overrides, and the pipeline's own
prepare and training on one split seed (`bench.model_quality`, `bench.recipe_trial`,
`bench.epoch_cost`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from classifier.pipeline.common import input_channels, section


def apply_override(params: dict[str, Any], assignment: str) -> None:
    """Set `a.b.c=value` (value parsed as YAML) in `params`; the key must already exist."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.dropout=0.3")
    *parents, leaf = key.split(".")
    node: Any = params
    for name in parents:
        if not isinstance(node, dict) or name not in node:
            raise SystemExit(f"--set {assignment!r}: params.yaml has no section {name!r}")
        node = node[name]
    if not isinstance(node, dict) or leaf not in node:
        raise SystemExit(f"--set {assignment!r}: params.yaml has no key {key!r}")
    node[leaf] = yaml.safe_load(raw)


def prepare_split(params: dict[str, Any], seed: int, out: Path) -> None:
    """The pipeline's prepare of `params`' dataset into `out`, split by `seed`."""
    from classifier.pipeline.prepare import prepare

    base, prep = section(params, "base"), section(params, "prepare")
    prepare(
        Path(base["data_dir"]),
        out,
        image_size=int(base["image_size"]),
        threshold=float(base["threshold"]),
        test_fraction=float(prep["test_fraction"]),
        val_fraction=float(prep["val_fraction"]),
        seed=seed,
        channels=input_channels(base),
    )


def split_and_train(params: dict[str, Any], seed: int, out: Path) -> Any:
    """The pipeline's prepare (split `seed`) into `out`, then its training on that split, as
    `dvc repro` does (members seeded from `seed`); returns train.Trained."""
    from classifier.pipeline.prepare import load_split
    from classifier.pipeline.recipe import Recipe
    from classifier.pipeline.train import member_data, train_members

    prepare_split(params, seed, out)
    recipe = dataclasses.replace(Recipe.from_params(params), seed=seed)
    train, val = load_split(out, "train"), load_split(out, "val")
    return train_members(recipe, member_data(train, val, recipe))
