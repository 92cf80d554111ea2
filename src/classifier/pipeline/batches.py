"""Training batches: augmentation, mixup, the per-epoch shuffled batches and their tf.data feed.

Every random draw comes from a generator seeded by (member seed, epoch, batch), so a run
repeats to the bit on the same machine.
"""

from __future__ import annotations

import os
import random
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from classifier.pipeline.common import PipelineError
from classifier.pipeline.recipe import Augmentation, Recipe


def _warp(img: npt.NDArray[np.float32], aug: Augmentation, rng: np.random.Generator) -> Any:
    """A random rotation, zoom and shift of an (H, W, C) image about its centre."""
    from scipy import ndimage

    height, width = img.shape[:2]
    angle = np.deg2rad(rng.uniform(-aug.rotate, aug.rotate))
    zoom = 1.0 + rng.uniform(-aug.scale, aug.scale)
    shift = rng.uniform(-aug.shift, aug.shift, size=2) * (height, width)
    # ndimage maps each output pixel o to the input pixel matrix @ o + offset.
    matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / zoom
    centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    offset = centre - matrix @ centre - shift
    channels = [
        ndimage.affine_transform(img[:, :, c], matrix, offset, order=1, mode="nearest")
        for c in range(img.shape[2])
    ]
    return np.stack(channels, axis=-1)


def augment_batch(
    x: npt.NDArray[np.float32], aug: Augmentation, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Random symmetries of a square cell, optional small geometric jitter, mild photometric
    jitter; values stay in [0, 1]."""
    out = x.copy()
    for i in range(len(out)):
        img = out[i]
        if aug.flip and rng.random() < 0.5:
            img = img[:, ::-1]
        if aug.flip and rng.random() < 0.5:
            img = img[::-1, :]
        if aug.rot90 and img.shape[0] == img.shape[1]:
            img = np.rot90(img, k=int(rng.integers(4)), axes=(0, 1))
        if aug.shift > 0 or aug.rotate > 0 or aug.scale > 0:
            img = _warp(img, aug, rng)
        if aug.contrast > 0 or aug.brightness > 0:
            gain = 1.0 + rng.uniform(-aug.contrast, aug.contrast)
            shift = rng.uniform(-aug.brightness, aug.brightness)
            img = np.clip(img * gain + shift, 0.0, 1.0)
        out[i] = img
    return out


def mix_batch(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.float32],
    weights: npt.NDArray[np.float32],
    alpha: float,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Mixup: image i becomes share * x[i] + (1 - share) * x[j] for a random partner j of the
    batch, its target and weight blended the same way. The share is drawn from Beta(alpha,
    alpha) and folded to >= 0.5, so every mixed image is mostly itself. Targets in [0, 1] stay
    in [0, 1]: a blend of two defect probabilities is one."""
    share = rng.beta(alpha, alpha, size=len(x)).astype(np.float32)
    share = np.maximum(share, 1.0 - share)
    partner = rng.permutation(len(x))
    pixels = share.reshape((-1,) + (1,) * (x.ndim - 1))
    return (
        (pixels * x + (1.0 - pixels) * x[partner]).astype(np.float32),
        (share * y + (1.0 - share) * y[partner]).astype(np.float32),
        (share * weights + (1.0 - share) * weights[partner]).astype(np.float32),
    )


class AugmentedBatches(keras.utils.PyDataset):  # type: ignore[misc]
    """Shuffled, augmented training batches; the RNG is seeded per epoch so runs repeat."""

    def __init__(
        self,
        x: npt.NDArray[np.float32],
        y: npt.NDArray[np.float32],
        weights: npt.NDArray[np.float32],
        recipe: Recipe,
    ) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.x, self.y, self.weights, self.recipe = x, y, weights, recipe
        self.epoch = 0
        self.order = np.arange(len(x))
        self.on_epoch_end()

    def __len__(self) -> int:
        return int(np.ceil(len(self.x) / self.recipe.batch_size))

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        size = self.recipe.batch_size
        idx = self.order[index * size : (index + 1) * size]
        rng = np.random.default_rng([self.recipe.seed, self.epoch, index])
        aug = self.recipe.augment
        x, y, weights = augment_batch(self.x[idx], aug, rng), self.y[idx], self.weights[idx]
        if aug.mixup > 0:
            return mix_batch(x, y, weights, aug.mixup, rng)
        return x, y, weights

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = np.random.default_rng([self.recipe.seed, self.epoch]).permutation(len(self.x))


def batch_dataset(batches: AugmentedBatches) -> tf.data.Dataset:
    """`batches` as the tf.data pipeline `fit` reads: the same batches in the same order, epoch
    after epoch, with tf.data's autotuning off.

    Keras turns a single-worker PyDataset into `from_generator(...).prefetch(AUTOTUNE)`, and
    with autotuning on, TensorFlow starts a model thread per iterator whose destructor waits out
    the thread's sleep (`RootDataset::Iterator::~Iterator` waiting on `Model::OptimizeLoop`):
    epochs then sit idle at their start. Building a batch is cheap next to a training step, so
    one batch of prefetch is all the overlap there is to have.
    """
    signature = tuple(
        tf.TensorSpec((None, *part.shape[1:]), tf.as_dtype(part.dtype)) for part in batches[0]
    )

    def one_epoch() -> Any:
        # What Keras' fit(PyDataset, shuffle=True) did, so every trained model stays what it
        # was, to the bit (a test checks it): advance AugmentedBatches to its next epoch before
        # each one, the first included (Keras read its spec batches at the initial state), and
        # draw the batches' order with Python's `random` too (seeded by make_deterministic).
        batches.on_epoch_end()
        order = list(range(len(batches)))
        random.shuffle(order)
        for index in order:
            yield batches[index]

    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = tf.data.Dataset.from_generator(one_epoch, output_signature=signature)
    # A known length: fit runs exactly len(batches) steps an epoch, as it did with the PyDataset.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(batches)))
    return dataset.prefetch(1).with_options(options)


def class_weights(y: npt.NDArray[np.float32]) -> dict[int, float]:
    """Weights that make both classes count equally (n / (2 * n_class)); `y` in {0, 1}."""
    n, positives = len(y), float(y.sum())
    if positives == 0 or positives == n:
        raise PipelineError("the training split has only one class: check base.threshold / labels")
    return {0: n / (2.0 * (n - positives)), 1: n / (2.0 * positives)}


def training_targets(split: dict[str, npt.NDArray[Any]], soft: bool) -> npt.NDArray[np.float32]:
    """What the loss fits: the graded defect probability (`soft`) or the binary label."""
    if not soft:
        return split["y"].astype(np.float32)
    if "p" not in split:
        raise PipelineError(
            "the prepared split has no defect probabilities (`p`): it predates soft targets; "
            "rerun `dvc repro prepare`, or set train.soft_targets: false"
        )
    p = split["p"].astype(np.float32)
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise PipelineError("defect probabilities must be in [0, 1]: check labels.csv")
    return p
