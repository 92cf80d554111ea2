"""Stage `train`: the members of the recipe trained from scratch and averaged into one model.

    python -m classifier.pipeline.train PREPARED MODEL METRICS PLOTS

Reads the prepared `train` and `val` splits from PREPARED and the recipe from params.yaml
(`classifier.pipeline.recipe`); the model comes from `classifier.pipeline.model`, the augmented
batches from `classifier.pipeline.batches`. This module holds the training loop: the optimizer
and its schedule, early stopping on validation AUC, what each member fits and early-stops on
(`member_data`), the members' seeds, and what the stage writes: the averaged Keras model, a
JSON summary (scores, best epochs, time, size, the CPU) and the per-epoch history into PLOTS as
CSV (one row per member and epoch) and PNG. The paths are the stage's command line in dvc.yaml.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from classifier.host import cpu
from classifier.pipeline.batches import (
    AugmentedBatches,
    batch_dataset,
    class_weights,
    training_targets,
)
from classifier.pipeline.common import (
    PARAMS_FILE,
    PipelineError,
    load_params,
    set_seeds,
    stratum,
    write_json,
)
from classifier.pipeline.kernels import kernel_record, require_pinned
from classifier.pipeline.model import (
    SharpnessAware,
    average_members,
    build_model,
    training_head,
)
from classifier.pipeline.prepare import load_split
from classifier.pipeline.recipe import Recipe

HISTORY_CSV = "training_history.csv"
HISTORY_PNG = "training_history.png"


def make_deterministic(seed: int) -> None:
    """Same seed, same data, same machine -> same weights (TF's deterministic kernels)."""
    set_seeds(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def lr_schedule(recipe: Recipe, steps_per_epoch: int) -> keras.optimizers.schedules.CosineDecay:
    """Linear warmup to `learning_rate` over `warmup_epochs`, then cosine decay to 2 % of it.

    The warmup is capped at `epochs - 1` so a short run (a 1-epoch smoke test) keeps a decay
    phase instead of failing on the shared params.
    """
    warmup = min(recipe.warmup_epochs, recipe.epochs - 1) * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        recipe.learning_rate * (0.1 if warmup else 1.0),
        decay_steps=recipe.epochs * steps_per_epoch - warmup,
        alpha=0.02,
        warmup_target=recipe.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def train_model(
    model: keras.Model,
    train: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
    val: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
    recipe: Recipe,
    verbose: int = 2,
) -> dict[str, list[float]]:
    """Fit `model` in place (best validation-AUC epoch restored); returns the per-epoch history.

    `train` is (images, targets): targets in [0, 1], soft or binary (see `training_targets`);
    `val` is (images, binary labels). With `recipe.refit`, `train` already holds the validation
    images (`member_data`): `val` is not used, the run lasts `epochs` and ends at the last one.
    """
    x_train, y_train = train
    if recipe.balance_classes:
        weights_by_class = class_weights((y_train > 0.5).astype(np.float32))
        sample_weights = np.where(y_train > 0.5, weights_by_class[1], weights_by_class[0])
    else:
        sample_weights = np.ones(len(y_train))
    batches = AugmentedBatches(x_train, y_train, sample_weights.astype(np.float32), recipe)
    head = training_head(model, y_train, recipe.ordinal)
    trainer = model
    if recipe.sam_rho:
        trainer = SharpnessAware(model.inputs, head.outputs, rho=recipe.sam_rho, name=model.name)
    elif head.ordinal is not None:
        trainer = keras.Model(model.inputs, head.outputs, name=model.name)
    trainer.compile(
        optimizer=keras.optimizers.Adam(
            lr_schedule(recipe, len(batches)),
            weight_decay=recipe.weight_decay or None,
            use_ema=recipe.ema_momentum > 0,
            ema_momentum=recipe.ema_momentum or 0.99,
        ),
        loss=head.loss,
        metrics=head.metrics,
    )
    callbacks = [
        # First, so validation and the early-stopping snapshot both see the averaged weights.
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if recipe.ema_momentum else []),
        keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=recipe.patience, restore_best_weights=True
        ),
    ]
    history = trainer.fit(
        batch_dataset(batches),
        shuffle=False,  # batch_dataset shuffles
        validation_data=None if recipe.refit else val,
        epochs=recipe.epochs,
        callbacks=[] if recipe.refit else callbacks,
        verbose=verbose,  # 2 = one line per epoch: progress without a progress bar in CI logs
    )
    head.fold(model)
    # The saved .keras file records the compile config; keep only built-in objects in it so any
    # Keras can load the model without importing our modules (ThresholdedAccuracy is ours).
    # The ordinal head's optimizer state holds the head's variables, which the saved model
    # lacks: save a fresh optimizer for the model's own variables instead.
    optimizer = trainer.optimizer
    if head.ordinal is not None:
        optimizer = keras.optimizers.Adam(recipe.learning_rate)
        optimizer.build(model.trainable_variables)
    model.compile(
        optimizer=optimizer,
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return {k: [float(v) for v in values] for k, values in history.history.items()}


Images = npt.NDArray[np.float32]


@dataclass(frozen=True)
class MemberData:
    """What one member fits, (images, targets in [0, 1]), and early-stops on, (images, binary
    labels)."""

    fit: tuple[Images, Images]
    val: tuple[Images, Images]


def cross_folds(
    train: dict[str, npt.NDArray[Any]], folds: int, size: int, seed: int
) -> list[npt.NDArray[np.int64]]:
    """`folds` disjoint index sets of the training split, `size` images each, stratified by label
    and cell type as prepare's splits are."""
    from sklearn.model_selection import train_test_split

    keys = np.array([stratum(int(y), t) for y, t in zip(train["y"], train["type"], strict=True)])
    pool = np.arange(len(keys))
    chosen = []
    for i in range(folds):
        try:
            pool, fold = train_test_split(
                pool, test_size=size, random_state=seed + i, stratify=keys[pool]
            )
        except ValueError as exc:  # sklearn: too few images left to hold every group
            raise PipelineError(
                f"cannot carve {folds} stratified validation folds of {size} images out of "
                f"{len(keys)} training images: {exc}; use fewer members (train.ensemble) or "
                "train.cross_fold: false"
            ) from exc
        chosen.append(np.sort(fold))
    return chosen


def member_data(
    train: dict[str, npt.NDArray[Any]], val: dict[str, npt.NDArray[Any]], recipe: Recipe
) -> list[MemberData]:
    """Per member, what it fits and early-stops on (prepare's splits, `load_split`):
    - by default every member fits the training split and early-stops on the validation split;
    - `refit`: every member fits train + val (the validation data is then not used);
    - `cross_fold`: member 1 as by default; member i > 1 early-stops on its own stratified fold
      of the training split (`cross_folds`, the validation split's size) and fits the rest of
      it plus the validation split, so no training cell is left only to pick epochs."""
    targets = training_targets(train, recipe.soft_targets)
    held_out = (val["x"], val["y"].astype(np.float32))
    if recipe.refit:
        fit = (
            np.concatenate([train["x"], val["x"]]),
            np.concatenate([targets, training_targets(val, recipe.soft_targets)]),
        )
        return [MemberData(fit, held_out)] * recipe.ensemble
    shared = MemberData((train["x"], targets), held_out)
    if not recipe.cross_fold:
        return [shared] * recipe.ensemble
    val_targets = training_targets(val, recipe.soft_targets)
    data = [shared]
    for fold in cross_folds(train, recipe.ensemble - 1, len(val["x"]), recipe.seed):
        rest = np.setdiff1d(np.arange(len(targets)), fold)
        fit = (
            np.concatenate([train["x"][rest], val["x"]]),
            np.concatenate([targets[rest], val_targets]),
        )
        data.append(MemberData(fit, (train["x"][fold], train["y"][fold].astype(np.float32))))
    return data


@dataclass(frozen=True)
class Trained:
    model: keras.Model  # the members averaged (`average_members`)
    histories: list[dict[str, list[float]]]  # per member, per epoch
    seconds: float  # training wall time, all members


def train_members(recipe: Recipe, data: Sequence[MemberData], verbose: int = 2) -> Trained:
    """Train `recipe.ensemble` members, member i from seed `recipe.seed + i` (its own weights
    and batch order) on `data[i]` (`member_data`), and average them. Member 0 is what a single
    model would be. The models read as many input planes as the images have (`base.channels`)."""
    if len(data) != recipe.ensemble:
        raise PipelineError(f"{len(data)} members' data for train.ensemble={recipe.ensemble}")
    members, histories = [], []
    started = time.monotonic()
    for i in range(recipe.ensemble):
        member_recipe = dataclasses.replace(recipe, seed=recipe.seed + i)
        make_deterministic(member_recipe.seed)
        name = "elpv_cnn" if recipe.ensemble == 1 else f"elpv_cnn_member{i + 1}"
        model = build_model(member_recipe, channels=data[i].fit[0].shape[-1], name=name)
        if recipe.ensemble > 1 and verbose:
            print(
                f"train: member {i + 1} of {recipe.ensemble} (seed {member_recipe.seed})",
                flush=True,
            )
        histories.append(train_model(model, data[i].fit, data[i].val, member_recipe, verbose))
        members.append(model)
    return Trained(average_members(members), histories, time.monotonic() - started)


def save_history(
    histories: Sequence[dict[str, list[float]]], csv_path: Path, png_path: Path
) -> None:
    """Per-epoch curves of every member as CSV (DVC plots; one row per member and epoch) and
    PNG (to look at)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    csv_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(histories[0]) if histories else []
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["member", "epoch", *keys])
        for member, history in enumerate(histories, start=1):
            for e in range(len(history[keys[0]]) if keys else 0):
                writer.writerow([member, e + 1, *(f"{history[k][e]:.6g}" for k in keys)])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "auc"), strict=True):
        for member, history in enumerate(histories, start=1):
            for prefix, style in (("", "--"), ("val_", "-")):
                if prefix + metric in history:
                    values = history[prefix + metric]
                    label = prefix + metric + (f" (member {member})" if len(histories) > 1 else "")
                    ax.plot(range(1, len(values) + 1), values, style, label=label)
        ax.set_xlabel("epoch")
        ax.set_title(metric + ("" if metric == "loss" else ": train (dashed), validation"))
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def training_summary(
    trained: Trained, val: dict[str, npt.NDArray[Any]], recipe: Recipe
) -> dict[str, Any]:
    """metrics/train.json: the saved model's validation accuracy and AUC (the members averaged,
    each at its best-validation-AUC epoch), each member's best epoch and scores on the data it
    early-stopped on (a dict per member, not lists, so `dvc metrics show` lists them), time,
    size, and the CPU and TensorFlow it ran on. After a `refit` the validation split was
    training data: every score is null and the epoch the last. With `cross_fold` members the
    averaged model's score is null (member 2 fitted the validation split); each member's, on its
    own fold, stays."""
    from sklearn.metrics import roc_auc_score

    y = val["y"] > 0.5
    per_member = {}
    for i, h in enumerate(trained.histories, start=1):
        b = len(h["loss"]) - 1 if recipe.refit else int(np.argmax(h["val_auc"]))
        per_member[f"member_{i}"] = {
            "best_epoch": b + 1,
            "val_auc": None if recipe.refit else h["val_auc"][b],
            "val_accuracy": None if recipe.refit else h["val_accuracy"][b],
        }
    val_accuracy = val_auc = None
    if recipe.scores_validation:
        p = trained.model.predict(val["x"], batch_size=64, verbose=0).ravel()
        val_accuracy = float(np.mean((p > 0.5) == y))
        if 0 < y.sum() < len(y):
            val_auc = float(roc_auc_score(y, p))
    return {
        "members": len(trained.histories),
        "epochs_run": max(len(h["loss"]) for h in trained.histories),
        "refit": recipe.refit,
        "cross_fold": recipe.cross_fold,
        "ordinal": recipe.ordinal,
        "per_member": per_member,
        "val_accuracy": val_accuracy,
        "val_auc": val_auc,
        "train_seconds": round(trained.seconds, 1),
        "parameters": int(trained.model.count_params()),
        # The host, and whether its kernels were pinned (kernels.py): unpinned, the weights
        # depend on the CPU's vector set and core count, not only on the seeds.
        "trained_on": {**cpu(), "tensorflow": tf.__version__, **kernel_record()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="prepare's output: train.npz and val.npz")
    parser.add_argument("model", type=Path, help="the averaged Keras model to write (.keras)")
    parser.add_argument("metrics", type=Path, help="the training summary to write (.json)")
    parser.add_argument("plots", type=Path, help=f"where to write {HISTORY_CSV} and {HISTORY_PNG}")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    args = parser.parse_args(argv)
    require_pinned()
    recipe = Recipe.from_params(load_params(args.params))
    train_split, val_split = load_split(args.prepared, "train"), load_split(args.prepared, "val")
    size = recipe.image_size
    data = member_data(train_split, val_split, recipe)
    n_train, n_val = len(train_split["x"]), len(val_split["x"])
    if recipe.refit:
        images = f"{n_train + n_val} train + val images (refit: {recipe.epochs} epochs, last kept)"
    elif recipe.cross_fold:
        images = (
            f"{n_train + n_val} train + val images (cross-fold: member 1 early-stops on the "
            f"{n_val} val images, each other member on its own fold of {n_val} train images), "
            f"up to {recipe.epochs} epochs"
        )
    else:
        images = f"{n_train} train / {n_val} val images, up to {recipe.epochs} epochs"
    print(
        f"train: {images} at {size}x{size} x {train_split['x'].shape[-1]} channel(s), "
        f"{recipe.ensemble} member(s), "
        + (
            "an ordinal head"
            if recipe.ordinal
            else f"{'soft' if recipe.soft_targets else 'binary'} targets"
        ),
        flush=True,
    )
    trained = train_members(recipe, data)
    args.model.parent.mkdir(parents=True, exist_ok=True)
    trained.model.save(args.model)
    summary = training_summary(trained, val_split, recipe)
    write_json(args.metrics, summary)
    save_history(trained.histories, args.plots / HISTORY_CSV, args.plots / HISTORY_PNG)
    auc = "n/a" if summary["val_auc"] is None else f"{summary['val_auc']:.4f}"
    best_epochs = ", ".join(str(m["best_epoch"]) for m in summary["per_member"].values())
    if recipe.refit:
        scores = "validation split trained on (refit)"
    elif recipe.cross_fold:
        scores = (
            "member val accuracy "
            + ", ".join(f"{m['val_accuracy']:.4f}" for m in summary["per_member"].values())
            + " (each on its own fold)"
        )
    else:
        scores = f"val accuracy {summary['val_accuracy']:.4f}, AUC {auc}"
    print(
        f"train: {scores} ({recipe.ensemble} member(s), kept epochs {best_epochs}) in "
        f"{trained.seconds:.0f}s -> {args.model}, {args.metrics}, {args.plots / HISTORY_PNG}"
    )


if __name__ == "__main__":
    main()
