"""Project-wide fixtures.

`tiny_model_dir`: a real, tiny exported model for any test that needs one (serving, container).
It is built by the pipeline's own code — `model.build_model`, `train.train_model`,
`evaluate.evaluate_predictions`, `export.export_bundle` — on a few ELPV images shipped by the
installed `elpv-dataset` package, at 32x32 for one epoch: seconds, no download, and a file made
exactly the way `dvc repro` makes `models/model.tflite` + `models/model_card.json`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from classifier.pipeline.recipe import Recipe

# Every `dvc` the tests start would otherwise leave a usage report in TMPDIR: DVC hands it to a
# detached sender that cannot reach its endpoint from CI, and nothing removes it.
os.environ["DVC_NO_ANALYTICS"] = "1"

TINY_SIZE = 32
TINY_IMAGES_PER_CLASS = 8
# A small recipe for tests, every key written out (the code has no defaults to fall back on):
# two narrow blocks at 32x32, two epochs, one member, flips and quarter turns only.
TINY_PARAMS: dict[str, Any] = {
    "base": {"seed": 0, "image_size": TINY_SIZE},
    "train": {
        "epochs": 2,
        "batch_size": 8,
        "learning_rate": 1e-3,
        "warmup_epochs": 1,
        "filters": [4, 8],
        "convs_per_block": 2,
        "bn_momentum": 0.9,
        "dropout": 0.0,
        "soft_targets": True,
        "ordinal": False,
        "balance_classes": False,
        "patience": 2,
        "pooling": "avg",
        "stem_stride": 1,
        "weight_decay": 0.0,
        "ema_momentum": 0.0,
        "sam_rho": 0.0,
        "ensemble": 1,
        "refit": False,
        "cross_fold": False,
        "augment": {
            "flip": True,
            "rot90": True,
            "brightness": 0.0,
            "contrast": 0.0,
            "shift": 0.0,
            "rotate": 0.0,
            "scale": 0.0,
            "mixup": 0.0,
        },
    },
}


def make_tiny_recipe(**changes: Any) -> Recipe:
    """`TINY_PARAMS`' recipe, parsed as params.yaml's is, with `changes` to its fields."""
    import dataclasses

    from classifier.pipeline.recipe import Recipe

    return dataclasses.replace(Recipe.from_params(TINY_PARAMS), **changes)


@pytest.fixture
def tiny_params() -> dict[str, Any]:
    """A fresh copy of `TINY_PARAMS`, params.yaml's `base` and `train` sections, to edit."""
    import copy

    return copy.deepcopy(TINY_PARAMS)


@pytest.fixture(scope="session")
def tiny_recipe() -> Callable[..., Recipe]:
    """`make_tiny_recipe`: `tiny_recipe(epochs=3, ensemble=2)` is the tiny recipe so changed."""
    return make_tiny_recipe


def tiny_training_images(
    size: int = TINY_SIZE, channels: tuple[str, ...] = ("gray",)
) -> tuple[Any, Any, Any]:
    """(x, y, cell types) for a few package images, half defective, through `preprocess`."""
    import numpy as np
    from PIL import Image

    from classifier.imaging import preprocess
    from classifier.pipeline.ingest import package_data_dir

    source = package_data_dir()
    chosen: dict[int, list[tuple[str, str]]] = {0: [], 1: []}
    for line in (source / "labels.csv").read_text(encoding="utf-8").splitlines():
        rel, probability, cell_type = line.split()
        label = int(float(probability) > 0.5)
        if len(chosen[label]) < TINY_IMAGES_PER_CLASS:
            chosen[label].append((rel, cell_type))
        if all(len(v) == TINY_IMAGES_PER_CLASS for v in chosen.values()):
            break
    rows = [(rel, t, label) for label, items in chosen.items() for rel, t in items]
    x = np.stack(
        [preprocess(Image.open(source / rel), (size, size), channels) for rel, _, _ in rows]
    )
    y = np.array([label for _, _, label in rows], dtype=np.float32)
    types = np.array([t for _, t, _ in rows])
    return x, y, types


def build_tiny_model_dir(out_dir: Path, channels: tuple[str, ...] = ("gray",)) -> Path:
    """Train (1 epoch) and export a tiny CNN reading `channels` into `out_dir`; returns it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from classifier.pipeline.evaluate import evaluate_predictions
    from classifier.pipeline.export import export_bundle
    from classifier.pipeline.model import build_model
    from classifier.pipeline.train import make_deterministic, train_model

    recipe = make_tiny_recipe(epochs=1, patience=1)
    make_deterministic(recipe.seed)
    x, y, types = tiny_training_images(channels=channels)
    model = build_model(recipe, channels=len(channels))
    train_model(model, (x, y), (x, y), recipe, verbose=0)
    p = model.predict(x, verbose=0).ravel()
    metrics = evaluate_predictions(y, p, types, threshold=0.5)
    export_bundle(
        model,
        out_dir,
        name="elpv-defect-cnn-tiny",
        metrics={k: float(metrics[k]) for k in ("accuracy", "balanced_accuracy", "roc_auc", "f1")},
        params={"tiny": {"image_size": TINY_SIZE, "epochs": 1, "filters": list(recipe.filters)}},
        data_hash="tiny-test-fixture",
        threshold=0.5,
        parity_images=x,
        parity_tolerance=1e-4,
        channels=channels,
        extra={"purpose": "test fixture: trained for one epoch on 16 images, not a real model"},
    )
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with `model.tflite` + `model_card.json` (32x32 input), built once a session."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_darkest_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As `tiny_model_dir`, for a model reading two planes: gray and darkest."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny_darkest"), ("gray", "darkest"))
