"""Stage `train`: a compact Keras CNN trained from scratch on the prepared train split.

No pretrained weights (nothing can be downloaded here, and ELPV's grayscale EL images are far
from ImageNet anyway). The data is small (~1,700 training cells), so the model is small too —
Conv-BN-ReLU blocks, global average + max pooling — and every batch is augmented with the
symmetries ELPV cells keep: horizontal and vertical flips (busbars stay horizontal), plus mild
brightness/contrast jitter.

What made it work (measured on the validation split, docs/pipeline.md "Recipe"):
- BatchNorm momentum 0.9, not Keras' 0.99: an epoch is only ~50 steps, and with 0.99 the
  moving statistics used at inference lag the weights so far that validation accuracy jumps
  between 0.3 and 0.8 from epoch to epoch.
- Soft targets: the loss sees the experts' graded defect probability (0, 1/3, 2/3, 1) instead
  of the thresholded label, so "probably fine" and "surely fine" cells teach different things.
  Every metric stays binary (defective when P > base.threshold).
- No class weights by default: they move the 0.5 decision point towards "defective" and cost
  accuracy, the metric the gate checks (`train.balance_classes: true` brings them back).
- No 90-degree rotations and no dropout: the model underfits, and both slowed fitting (rot90
  also shows it vertical busbars, which never occur).
- Adam with a linear warmup then cosine decay; the epoch with the best validation AUC is kept.
- Two members (`train.ensemble`), seeded apart, averaged into the one saved model: models from
  different seeds differ by +-1 point of validation accuracy on their own, and their mean is
  about half a point better than one of them and steadier from seed to seed.
- Cross-fold members (`train.cross_fold`): the second early-stops on its own fold of the
  training split and fits the rest plus the validation split, so the pair fits every cell.

Writes `models/model.keras`, `metrics/train.json` and `plots/training_history.{csv,png}`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from classifier.host import cpu
from classifier.pipeline.common import (
    PipelineError,
    load_params,
    section,
    set_seeds,
    stratum,
    write_json,
)
from classifier.pipeline.prepare import load_split

MODEL_PATH = Path("models/model.keras")
POOLINGS = ("avg", "avgmax")
STEM_STRIDES = (1, 2)


@dataclass(frozen=True)
class Augmentation:
    flip: bool = True
    rot90: bool = True
    brightness: float = 0.1  # max additive shift, in [0, 1] pixel units
    contrast: float = 0.1  # max relative gain change
    # Small geometric jitter, as the cell segmentation leaves it (all 0 = off): one bilinear
    # affine warp per image, edges extended.
    shift: float = 0.0  # max translation, as a fraction of the side
    rotate: float = 0.0  # max rotation, degrees (busbars stay about horizontal)
    scale: float = 0.0  # max relative zoom in or out
    # Mixup (Zhang et al. 2018): each image blended with another of its batch, the targets and
    # weights with the same share; the share comes from Beta(mixup, mixup). 0 = off.
    mixup: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    filters: tuple[int, ...] = (16, 32, 64, 128)
    convs_per_block: int = 2
    dropout: float = 0.3
    patience: int = 8
    seed: int = 42
    augmentation: Augmentation = field(default_factory=Augmentation)
    soft_targets: bool = True  # train on the graded probability, not the 0/1 label
    # Fit the expert levels with a cumulative-logit head (`OrdinalHead`) instead of one sigmoid
    # against the graded probability; the saved model keeps one output, P(defective).
    ordinal: bool = False
    balance_classes: bool = False  # class weights n / (2 * n_class)
    bn_momentum: float = 0.9
    warmup_epochs: int = 1  # linear LR warmup before the cosine decay
    pooling: str = "avg"  # global pooling before the head: "avg" or "avgmax" (both, concatenated)
    stem_stride: int = 1  # stride of the first conv (2: read a 2x larger image at ~1x cost)
    weight_decay: float = 0.0  # decoupled (AdamW-style) weight decay; 0 = plain Adam
    # > 0: validate, keep and save an exponential moving average of the weights (Keras' own
    # `use_ema`), which smooths the epoch-to-epoch swings of ~50 steps per epoch; 0 = off.
    ema_momentum: float = 0.0
    # > 0: sharpness-aware minimisation (`SharpnessAware`) with this neighbourhood radius; each
    # step costs two forward and backward passes. 0 = plain steps.
    sam_rho: float = 0.0
    ensemble: int = 1  # members trained with seeds seed, seed + 1, ...; the model averages them
    # Fit on train + val for exactly `epochs` epochs and keep the last one. Only once the recipe
    # was chosen on validation: the validation split is then training data, not a check.
    refit: bool = False
    # Each member after the first early-stops on its own stratified fold of the training split
    # (as large as the validation split) and fits the rest plus the validation split, so the
    # members together fit every training cell. The averaged model has no held-out split left.
    cross_fold: bool = False

    @property
    def scores_validation(self) -> bool:
        """Whether the averaged model never trained on the validation split, so its score there
        means something (not after a refit or with cross-fold members)."""
        return not (self.refit or self.cross_fold)

    @classmethod
    def from_params(cls, cfg: dict[str, Any], seed: int) -> TrainConfig:
        aug = cfg.get("augment", {})
        config = cls(
            epochs=int(cfg["epochs"]),
            batch_size=int(cfg["batch_size"]),
            learning_rate=float(cfg["learning_rate"]),
            filters=tuple(int(f) for f in cfg["filters"]),
            convs_per_block=int(cfg.get("convs_per_block", 2)),
            dropout=float(cfg["dropout"]),
            patience=int(cfg["patience"]),
            seed=seed,
            augmentation=Augmentation(
                flip=bool(aug.get("flip", True)),
                rot90=bool(aug.get("rot90", True)),
                brightness=float(aug.get("brightness", 0.0)),
                contrast=float(aug.get("contrast", 0.0)),
                shift=float(aug.get("shift", 0.0)),
                rotate=float(aug.get("rotate", 0.0)),
                scale=float(aug.get("scale", 0.0)),
                mixup=float(aug.get("mixup", 0.0)),
            ),
            soft_targets=bool(cfg.get("soft_targets", True)),
            ordinal=bool(cfg.get("ordinal", False)),
            balance_classes=bool(cfg.get("balance_classes", False)),
            bn_momentum=float(cfg.get("bn_momentum", 0.9)),
            warmup_epochs=int(cfg.get("warmup_epochs", 1)),
            pooling=str(cfg.get("pooling", "avg")),
            stem_stride=int(cfg.get("stem_stride", 1)),
            weight_decay=float(cfg.get("weight_decay", 0.0)),
            ema_momentum=float(cfg.get("ema_momentum", 0.0)),
            sam_rho=float(cfg.get("sam_rho", 0.0)),
            ensemble=int(cfg.get("ensemble", 1)),
            refit=bool(cfg.get("refit", False)),
            cross_fold=bool(cfg.get("cross_fold", False)),
        )
        if config.epochs < 1 or config.batch_size < 1 or not config.filters:
            raise PipelineError("train.epochs and train.batch_size must be >= 1, filters non-empty")
        if not 0.0 < config.bn_momentum < 1.0:
            raise PipelineError(f"train.bn_momentum must be in (0, 1), got {config.bn_momentum}")
        if config.warmup_epochs < 0:
            raise PipelineError(f"train.warmup_epochs must be >= 0, got {config.warmup_epochs}")
        if config.stem_stride not in STEM_STRIDES:
            raise PipelineError(f"train.stem_stride must be 1 or 2, got {config.stem_stride}")
        if config.weight_decay < 0:
            raise PipelineError(f"train.weight_decay must be >= 0, got {config.weight_decay}")
        if not 0.0 <= config.ema_momentum < 1.0:
            raise PipelineError(
                f"train.ema_momentum must be in [0, 1) (0 = off), got {config.ema_momentum}"
            )
        if config.sam_rho < 0:
            raise PipelineError(
                "train.sam_rho is the radius of sharpness-aware minimisation's neighbourhood: use "
                f"a value >= 0 (0 = off; 0.05 is the paper's default), got {config.sam_rho}"
            )
        if config.ensemble < 1:
            raise PipelineError(f"train.ensemble must be >= 1 (members), got {config.ensemble}")
        if config.cross_fold and (config.refit or config.ensemble < 2):
            raise PipelineError(
                "train.cross_fold gives each member after the first its own validation fold: "
                "it needs train.ensemble >= 2 and train.refit: false (got "
                f"ensemble={config.ensemble}, refit={str(config.refit).lower()})"
            )
        geometry = config.augmentation
        if not (
            0 <= geometry.shift < 0.5 and 0 <= geometry.rotate <= 45 and 0 <= geometry.scale < 0.5
        ):
            raise PipelineError(
                "train.augment: shift and scale must be in [0, 0.5) and rotate in [0, 45] degrees, "
                f"got shift={geometry.shift}, scale={geometry.scale}, rotate={geometry.rotate}"
            )
        if geometry.mixup < 0:
            raise PipelineError(
                "train.augment.mixup is the Beta(a, a) parameter of the blend share: use a value "
                f">= 0 (0 = off; 0.1-0.4 are usual), got {geometry.mixup}"
            )
        if config.pooling not in POOLINGS:
            raise PipelineError(
                f"train.pooling must be one of {', '.join(POOLINGS)}, got {config.pooling!r}"
            )
        if config.ordinal and (not config.soft_targets or geometry.mixup > 0):
            raise PipelineError(
                "train.ordinal fits the expert levels of the graded defect probability: it needs "
                "train.soft_targets: true and train.augment.mixup: 0 (a blend of two levels is "
                f"no level), got soft_targets={str(config.soft_targets).lower()}, "
                f"mixup={geometry.mixup}"
            )
        return config


def make_deterministic(seed: int) -> None:
    """Same seed, same data, same machine -> same weights (TF's deterministic kernels)."""
    set_seeds(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_model(
    input_size: tuple[int, int],
    filters: Sequence[int] = (16, 32, 64, 128),
    dropout: float = 0.3,
    convs_per_block: int = 2,
    bn_momentum: float = 0.9,
    pooling: str = "avg",
    name: str = "elpv_cnn",
    *,
    stem_stride: int = 1,
    channels: int = 1,
) -> keras.Model:
    """The classifier: (N, H, W, channels) in [0, 1] -> (N, 1) P(defective).

    Each block is `convs_per_block` 3x3 Conv-BN-ReLU layers and a 2x2 max-pool, except the
    first, which has one: at full resolution a second conv is the costliest layer of the model
    for little gain on a one-channel input. Global average pooling makes the head independent of
    the input size, so the same builder serves 32x32 tests and full-size training;
    `pooling="avgmax"` concatenates global max pooling to it, so one small defect anywhere in
    the cell is not averaged away. `bn_momentum` < Keras' 0.99 lets the inference statistics
    keep up on short epochs. `stem_stride=2` makes the first conv strided: a 2x larger input
    for about the cost of the 1x one, the first layer learning the downsampling that a resize
    would do blindly (thin cracks).
    """
    if stem_stride not in STEM_STRIDES:
        raise PipelineError(f"stem_stride must be 1 or 2, got {stem_stride}")
    inputs = keras.Input(shape=(input_size[0], input_size[1], channels), name="image")
    x = inputs
    for i, width in enumerate(filters):
        for j in range(1 if i == 0 else convs_per_block):
            stride = stem_stride if i == j == 0 else 1
            x = keras.layers.Conv2D(
                width, 3, strides=stride, padding="same", use_bias=False, name=f"b{i}_conv{j}"
            )(x)
            x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"b{i}_bn{j}")(x)
            x = keras.layers.ReLU(name=f"b{i}_relu{j}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"b{i}_pool")(x)
    if pooling == "avgmax":
        x = keras.layers.Concatenate(name="gap_gmp")(
            [
                keras.layers.GlobalAveragePooling2D(name="gap")(x),
                keras.layers.GlobalMaxPooling2D(name="gmp")(x),
            ]
        )
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    else:
        raise PipelineError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="p_defective")(x)
    return keras.Model(inputs, outputs, name=name)


def model_for(
    config: TrainConfig, image_size: int, name: str = "elpv_cnn", channels: int = 1
) -> keras.Model:
    """The model `config` describes, for square `image_size` inputs of `channels` planes."""
    return build_model(
        (image_size, image_size),
        config.filters,
        config.dropout,
        config.convs_per_block,
        config.bn_momentum,
        config.pooling,
        name,
        stem_stride=config.stem_stride,
        channels=channels,
    )


def average_members(members: Sequence[keras.Model]) -> keras.Model:
    """One model whose P(defective) is the mean of the members': what evaluate, export and
    serving run, as a single graph (one .tflite, one input, one output). One member is itself."""
    if len(members) == 1:
        return members[0]
    inputs = keras.Input(shape=members[0].input_shape[1:], name="image")
    outputs = keras.layers.Average(name="p_defective")([member(inputs) for member in members])
    return keras.Model(inputs, outputs, name="elpv_cnn_ensemble")


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
        config: TrainConfig,
    ) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.x, self.y, self.weights, self.config = x, y, weights, config
        self.epoch = 0
        self.order = np.arange(len(x))
        self.on_epoch_end()

    def __len__(self) -> int:
        return int(np.ceil(len(self.x) / self.config.batch_size))

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        size = self.config.batch_size
        idx = self.order[index * size : (index + 1) * size]
        rng = np.random.default_rng([self.config.seed, self.epoch, index])
        aug = self.config.augmentation
        x, y, weights = augment_batch(self.x[idx], aug, rng), self.y[idx], self.weights[idx]
        if aug.mixup > 0:
            return mix_batch(x, y, weights, aug.mixup, rng)
        return x, y, weights

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = np.random.default_rng([self.config.seed, self.epoch]).permutation(len(self.x))


def batch_dataset(batches: AugmentedBatches) -> tf.data.Dataset:
    """`batches` as the tf.data pipeline `fit` reads: the same batches in the same order, epoch
    after epoch, with tf.data's autotuning off.

    Keras turns a single-worker PyDataset into `from_generator(...).prefetch(AUTOTUNE)`, and
    with autotuning on, TF 2.21 starts a model thread per iterator whose destructor waits out
    the thread's sleep: in round 16, half the epochs of a residual-branch training sat idle for
    ~20 s at their start (docs/pipeline.md round 16; gdb: `RootDataset::Iterator::~Iterator`
    waiting on `Model::OptimizeLoop`). A batch takes ~1.5 ms to build, so one batch of
    prefetch is all the overlap there is to have.
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


class ThresholdedAccuracy(keras.metrics.BinaryAccuracy):  # type: ignore[misc]
    """Binary accuracy against soft targets: the target counts as defective when > 0.5, as in
    evaluation. (Keras' BinaryAccuracy compares the 0/1 prediction with the target itself, so a
    1/3 target would count as wrong whatever the model says.)"""

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        binary = keras.ops.cast(keras.ops.greater(y_true, 0.5), y_pred.dtype)
        return super().update_state(binary, y_pred, sample_weight)


MAX_ORDINAL_LEVELS = 8  # a handful of expert grades, not a continuous probability


def ordinal_levels(targets: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], int]:
    """The distinct graded probabilities of the fitted targets (ELPV: 0, 1/3, 2/3, 1), and the
    index of the cut "p >= level" that is the binary decision (p > 0.5, as ThresholdedAccuracy).
    Cut k is "p >= levels[k + 1]": ELPV's are >= 1/3, >= 2/3 (the decision) and >= 1."""
    levels = np.unique(targets.astype(np.float32))
    if not 2 <= len(levels) <= MAX_ORDINAL_LEVELS or not levels[0] <= 0.5 < levels[-1]:
        raise PipelineError(
            f"train.ordinal needs 2-{MAX_ORDINAL_LEVELS} distinct defect probabilities in the "
            f"training targets, some <= 0.5 and some above, got {len(levels)}: "
            f"{levels[:10].tolist()}; set train.ordinal: false for continuous probabilities"
        )
    return levels, int(np.argmax(levels[1:] > 0.5))


class OrdinalHead(keras.layers.Layer):  # type: ignore[misc]
    """Cumulative-logit head (rank-consistent, CORAL: Cao et al. 2020): one score s = w.h + b of
    the pooled features h and one learned offset per cut; column k is P(p >= levels[k + 1]) =
    sigmoid(s + offset_k). Each cut is a binary task with hard targets, so the decision column
    learns "defective or not" from every cell while the other cuts still tell a surely intact or
    surely cracked cell from an uncertain one. Training only: `fold_into` turns the decision
    column into the plain model's sigmoid output, so nothing custom is saved or served."""

    def __init__(self, initial_offsets: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial_offsets = [float(v) for v in initial_offsets]

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], 1), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(1,), initializer="zeros")
        self.offsets = self.add_weight(
            name="offsets",
            shape=(len(self.initial_offsets),),
            initializer=keras.initializers.Constant(self.initial_offsets),
        )

    def call(self, features: Any) -> Any:
        score = keras.ops.matmul(features, self.kernel) + self.bias
        return keras.ops.sigmoid(score + self.offsets)

    def fold_into(self, output: keras.layers.Dense, column: int) -> None:
        """Give the plain model's sigmoid output layer this head's column `column`."""
        offset = self.offsets.numpy()[column]
        output.set_weights([self.kernel.numpy(), self.bias.numpy() + offset])


class OrdinalCrossentropy(keras.losses.Loss):  # type: ignore[misc]
    """Binary cross-entropy of every cut of `OrdinalHead`, averaged: the target of cut k is
    p >= levels[k + 1] for the graded probability p (binary validation labels 0/1 fall below
    every cut or above it)."""

    def __init__(self, levels: Sequence[float], name: str = "ordinal_crossentropy") -> None:
        super().__init__(name=name)
        self.cuts = [float(v) for v in levels[1:]]

    def call(self, y_true: Any, y_pred: Any) -> Any:
        p = keras.ops.reshape(keras.ops.cast(y_true, y_pred.dtype), (-1, 1))
        cuts = keras.ops.convert_to_tensor(self.cuts, dtype=y_pred.dtype)
        targets = keras.ops.cast(keras.ops.greater_equal(p, cuts - 1e-4), y_pred.dtype)
        return keras.ops.mean(keras.ops.binary_crossentropy(targets, y_pred), axis=-1)


class DecisionAUC(keras.metrics.AUC):  # type: ignore[misc]
    """ROC AUC of one column of a multi-column output (the ordinal head's decision cut) against
    the target's side of 0.5."""

    def __init__(self, column: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.column = column

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        binary = keras.ops.cast(keras.ops.greater(y_true, 0.5), y_pred.dtype)
        column = y_pred[:, self.column : self.column + 1]
        return super().update_state(binary, column, sample_weight)


class DecisionAccuracy(ThresholdedAccuracy):
    """ThresholdedAccuracy of one column of a multi-column output."""

    def __init__(self, column: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.column = column

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        column = y_pred[:, self.column : self.column + 1]
        return super().update_state(y_true, column, sample_weight)


class SharpnessAware(keras.Model):  # type: ignore[misc]
    """Sharpness-aware minimisation (Foret et al., ICLR 2021), as a functional model's training
    step: move the weights up the loss gradient to the worst point within an L2 ball of radius
    `rho`, take the gradient there, and apply it to the original weights with the optimizer.
    It prefers flat minima, which generalise better on small data; each step costs 2 passes.

    Build it on another model's inputs and outputs (`SharpnessAware(m.inputs, m.outputs,
    rho=...)`): the layers, so the weights, are shared, and the plain model is what is saved."""

    def __init__(self, *args: Any, rho: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rho = rho

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
        gradients = tape.gradient(loss, variables)
        scale = self.rho / (tf.linalg.global_norm(gradients) + 1e-12)
        ascent = [None if g is None else g * scale for g in gradients]
        for variable, step in zip(variables, ascent, strict=True):
            if step is not None:
                variable.assign_add(step)
        with tf.GradientTape() as tape:
            sharp_pred = self(x, training=True)
            sharp_loss = self.compute_loss(
                x=x, y=y, y_pred=sharp_pred, sample_weight=sample_weight, training=False
            )
        sharp_gradients = tape.gradient(sharp_loss, variables)
        for variable, step in zip(variables, ascent, strict=True):
            if step is not None:
                variable.assign_sub(step)
        self.optimizer.apply_gradients(zip(sharp_gradients, variables, strict=True))
        for metric in self.metrics:  # the loss and metrics of the weights before the step
            if metric.name == "loss":
                metric.update_state(loss)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)  # type: ignore[no-any-return]


def lr_schedule(
    config: TrainConfig, steps_per_epoch: int
) -> keras.optimizers.schedules.CosineDecay:
    """Linear warmup to `learning_rate` over `warmup_epochs`, then cosine decay to 2 % of it.

    The warmup is capped at `epochs - 1` so a short run (a 1-epoch smoke test) keeps a decay
    phase instead of failing on the shared params.
    """
    warmup = min(config.warmup_epochs, config.epochs - 1) * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        config.learning_rate * (0.1 if warmup else 1.0),
        decay_steps=config.epochs * steps_per_epoch - warmup,
        alpha=0.02,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def train_model(
    model: keras.Model,
    train: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
    val: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
    config: TrainConfig,
    verbose: int = 2,
) -> dict[str, list[float]]:
    """Fit `model` in place (best validation-AUC epoch restored); returns the per-epoch history.

    `train` is (images, targets): targets in [0, 1], soft or binary (see `training_targets`);
    `val` is (images, binary labels). With `config.refit`, `train` already holds the validation
    images (`member_data`): `val` is not used, the run lasts `epochs` and ends at the last one.
    """
    x_train, y_train = train
    if config.balance_classes:
        weights_by_class = class_weights((y_train > 0.5).astype(np.float32))
        sample_weights = np.where(y_train > 0.5, weights_by_class[1], weights_by_class[0])
    else:
        sample_weights = np.ones(len(y_train))
    batches = AugmentedBatches(x_train, y_train, sample_weights.astype(np.float32), config)
    loss: str | keras.losses.Loss = "binary_crossentropy"
    metrics = [ThresholdedAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    outputs, head, decision = model.outputs, None, 0
    if config.ordinal:
        levels, decision = ordinal_levels(y_train)
        # Start each cut at the log-odds of its share of the training targets.
        above = np.clip([np.mean(y_train >= cut - 1e-4) for cut in levels[1:]], 1e-3, 1 - 1e-3)
        head = OrdinalHead(np.log(above / (1.0 - above)), name="ordinal")
        outputs = [head(model.get_layer("p_defective").input)]
        loss = OrdinalCrossentropy(levels.tolist())
        metrics = [DecisionAccuracy(decision, name="accuracy"), DecisionAUC(decision, name="auc")]
    trainer = model
    if config.sam_rho:
        trainer = SharpnessAware(model.inputs, outputs, rho=config.sam_rho, name=model.name)
    elif head is not None:
        trainer = keras.Model(model.inputs, outputs, name=model.name)
    trainer.compile(
        optimizer=keras.optimizers.Adam(
            lr_schedule(config, len(batches)),
            weight_decay=config.weight_decay or None,
            use_ema=config.ema_momentum > 0,
            ema_momentum=config.ema_momentum or 0.99,
        ),
        loss=loss,
        metrics=metrics,
    )
    callbacks = [
        # First, so validation and the early-stopping snapshot both see the averaged weights.
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema_momentum else []),
        keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=config.patience, restore_best_weights=True
        ),
    ]
    history = trainer.fit(
        batch_dataset(batches),
        shuffle=False,  # batch_dataset shuffles
        validation_data=None if config.refit else val,
        epochs=config.epochs,
        callbacks=[] if config.refit else callbacks,
        verbose=verbose,  # 2 = one line per epoch: progress without a progress bar in CI logs
    )
    if head is not None:  # the kept epoch's decision cut becomes the saved model's output
        head.fold_into(model.get_layer("p_defective"), decision)
    # The saved .keras file records the compile config; keep only built-in objects in it so any
    # Keras can load the model without importing this module (ThresholdedAccuracy is local).
    # The ordinal head's optimizer state holds the head's variables, which the saved model
    # lacks: save a fresh optimizer for the model's own variables instead.
    optimizer = trainer.optimizer
    if head is not None:
        optimizer = keras.optimizers.Adam(config.learning_rate)
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
    train: dict[str, npt.NDArray[Any]], val: dict[str, npt.NDArray[Any]], config: TrainConfig
) -> list[MemberData]:
    """Per member, what it fits and early-stops on (prepare's splits, `load_split`):
    - by default every member fits the training split and early-stops on the validation split;
    - `refit`: every member fits train + val (the validation data is then not used);
    - `cross_fold`: member 1 as by default; member i > 1 early-stops on its own stratified fold
      of the training split (`cross_folds`, the validation split's size) and fits the rest of
      it plus the validation split, so no training cell is left only to pick epochs."""
    targets = training_targets(train, config.soft_targets)
    held_out = (val["x"], val["y"].astype(np.float32))
    if config.refit:
        fit = (
            np.concatenate([train["x"], val["x"]]),
            np.concatenate([targets, training_targets(val, config.soft_targets)]),
        )
        return [MemberData(fit, held_out)] * config.ensemble
    shared = MemberData((train["x"], targets), held_out)
    if not config.cross_fold:
        return [shared] * config.ensemble
    val_targets = training_targets(val, config.soft_targets)
    data = [shared]
    for fold in cross_folds(train, config.ensemble - 1, len(val["x"]), config.seed):
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


def train_members(
    config: TrainConfig, image_size: int, data: Sequence[MemberData], verbose: int = 2
) -> Trained:
    """Train `config.ensemble` members, member i from seed `config.seed + i` (its own weights
    and batch order) on `data[i]` (`member_data`), and average them. Member 0 is what a single
    model would be. The models read as many input planes as the images have (`base.channels`)."""
    if len(data) != config.ensemble:
        raise PipelineError(f"{len(data)} members' data for train.ensemble={config.ensemble}")
    members, histories = [], []
    started = time.monotonic()
    for i in range(config.ensemble):
        member_config = dataclasses.replace(config, seed=config.seed + i)
        make_deterministic(member_config.seed)
        name = "elpv_cnn" if config.ensemble == 1 else f"elpv_cnn_member{i + 1}"
        model = model_for(member_config, image_size, name, channels=data[i].fit[0].shape[-1])
        if config.ensemble > 1 and verbose:
            print(
                f"train: member {i + 1} of {config.ensemble} (seed {member_config.seed})",
                flush=True,
            )
        histories.append(train_model(model, data[i].fit, data[i].val, member_config, verbose))
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
    trained: Trained, val: dict[str, npt.NDArray[Any]], config: TrainConfig
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
        b = len(h["loss"]) - 1 if config.refit else int(np.argmax(h["val_auc"]))
        per_member[f"member_{i}"] = {
            "best_epoch": b + 1,
            "val_auc": None if config.refit else h["val_auc"][b],
            "val_accuracy": None if config.refit else h["val_accuracy"][b],
        }
    val_accuracy = val_auc = None
    if config.scores_validation:
        p = trained.model.predict(val["x"], batch_size=64, verbose=0).ravel()
        val_accuracy = float(np.mean((p > 0.5) == y))
        if 0 < y.sum() < len(y):
            val_auc = float(roc_auc_score(y, p))
    return {
        "members": len(trained.histories),
        "epochs_run": max(len(h["loss"]) for h in trained.histories),
        "refit": config.refit,
        "cross_fold": config.cross_fold,
        "ordinal": config.ordinal,
        "per_member": per_member,
        "val_accuracy": val_accuracy,
        "val_auc": val_auc,
        "train_seconds": round(trained.seconds, 1),
        "parameters": int(trained.model.count_params()),
        # The weights depend on the CPU's vector set, not only on the seeds (classifier.host).
        "trained_on": {**cpu(), "tensorflow": tf.__version__},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    base = section(params, "base")
    config = TrainConfig.from_params(section(params, "train"), seed=int(base["seed"]))
    train_split, val_split = load_split(args.prepared, "train"), load_split(args.prepared, "val")
    size = int(base["image_size"])
    data = member_data(train_split, val_split, config)
    n_train, n_val = len(train_split["x"]), len(val_split["x"])
    if config.refit:
        images = f"{n_train + n_val} train + val images (refit: {config.epochs} epochs, last kept)"
    elif config.cross_fold:
        images = (
            f"{n_train + n_val} train + val images (cross-fold: member 1 early-stops on the "
            f"{n_val} val images, each other member on its own fold of {n_val} train images), "
            f"up to {config.epochs} epochs"
        )
    else:
        images = f"{n_train} train / {n_val} val images, up to {config.epochs} epochs"
    print(
        f"train: {images} at {size}x{size} x {train_split['x'].shape[-1]} channel(s), "
        f"{config.ensemble} member(s), "
        + (
            "an ordinal head"
            if config.ordinal
            else f"{'soft' if config.soft_targets else 'binary'} targets"
        ),
        flush=True,
    )
    trained = train_members(config, size, data)
    MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
    trained.model.save(MODEL_PATH)
    summary = training_summary(trained, val_split, config)
    write_json(Path("metrics/train.json"), summary)
    save_history(
        trained.histories, Path("plots/training_history.csv"), Path("plots/training_history.png")
    )
    auc = "n/a" if summary["val_auc"] is None else f"{summary['val_auc']:.4f}"
    best_epochs = ", ".join(str(m["best_epoch"]) for m in summary["per_member"].values())
    if config.refit:
        scores = "validation split trained on (refit)"
    elif config.cross_fold:
        scores = (
            "member val accuracy "
            + ", ".join(f"{m['val_accuracy']:.4f}" for m in summary["per_member"].values())
            + " (each on its own fold)"
        )
    else:
        scores = f"val accuracy {summary['val_accuracy']:.4f}, AUC {auc}"
    print(
        f"train: {scores} ({config.ensemble} member(s), kept epochs {best_epochs}) in "
        f"{trained.seconds:.0f}s -> {MODEL_PATH}, metrics/train.json, plots/training_history.png"
    )


if __name__ == "__main__":
    main()
