"""The classifier's Keras model, and the layers, losses and metrics its training uses.

`build_model` makes one member from a `Recipe`; `average_members` joins members into the one
model that evaluate, export and serving run. `training_head` says what a member is fitted
through: its own sigmoid output, or the ordinal head with its loss and metrics, which exist only
while training: `TrainingHead.fold` turns the head's decision cut into the plain model's sigmoid
output, so the saved model holds built-in Keras layers only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from classifier.pipeline.common import PipelineError
from classifier.pipeline.recipe import Recipe


def build_model(recipe: Recipe, *, channels: int, name: str = "elpv_cnn") -> keras.Model:
    """The classifier `recipe` describes: (N, H, W, channels) in [0, 1] -> (N, 1) P(defective),
    H = W = `recipe.image_size`.

    Each block is `convs_per_block` 3x3 Conv-BN-ReLU layers and a 2x2 max-pool, except the
    first, which has one: at full resolution a second conv is the costliest layer of the model
    for little gain on a one-channel input. Global average pooling makes the head independent of
    the input size, so the same builder serves tiny test inputs and full-size training;
    `pooling="avgmax"` concatenates global max pooling to it, so one small defect anywhere in
    the cell is not averaged away. A `bn_momentum` below Keras' 0.99 lets the inference
    statistics keep up on short epochs. `stem_stride=2` makes the first conv strided: a 2x
    larger input for about the cost of the 1x one, the first layer learning the downsampling
    that a resize would do blindly (thin cracks).
    """
    size = recipe.image_size
    inputs = keras.Input(shape=(size, size, channels), name="image")
    x = inputs
    for i, width in enumerate(recipe.filters):
        for j in range(1 if i == 0 else recipe.convs_per_block):
            stride = recipe.stem_stride if i == j == 0 else 1
            x = keras.layers.Conv2D(
                width, 3, strides=stride, padding="same", use_bias=False, name=f"b{i}_conv{j}"
            )(x)
            x = keras.layers.BatchNormalization(momentum=recipe.bn_momentum, name=f"b{i}_bn{j}")(x)
            x = keras.layers.ReLU(name=f"b{i}_relu{j}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"b{i}_pool")(x)
    if recipe.pooling == "avgmax":
        x = keras.layers.Concatenate(name="gap_gmp")(
            [
                keras.layers.GlobalAveragePooling2D(name="gap")(x),
                keras.layers.GlobalMaxPooling2D(name="gmp")(x),
            ]
        )
    else:  # "avg": Recipe admits no other
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(recipe.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="p_defective")(x)
    return keras.Model(inputs, outputs, name=name)


def average_members(members: Sequence[keras.Model]) -> keras.Model:
    """One model whose P(defective) is the mean of the members': what evaluate, export and
    serving run, as a single graph (one .tflite, one input, one output). One member is itself."""
    if len(members) == 1:
        return members[0]
    inputs = keras.Input(shape=members[0].input_shape[1:], name="image")
    outputs = keras.layers.Average(name="p_defective")([member(inputs) for member in members])
    return keras.Model(inputs, outputs, name="elpv_cnn_ensemble")


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


@dataclass(frozen=True)
class TrainingHead:
    """What a member is fitted through: the outputs, loss and metrics `fit` sees. With the
    ordinal head, `fold` then turns the kept epoch's decision cut into the model's own output."""

    outputs: list[Any]
    loss: str | keras.losses.Loss
    metrics: list[Any]
    ordinal: OrdinalHead | None  # None: the model's own sigmoid output is fitted
    decision: int  # the ordinal head's column that is the binary decision

    def fold(self, model: keras.Model) -> None:
        """After training: the decision cut becomes `model`'s output layer (a no-op without the
        ordinal head)."""
        if self.ordinal is not None:
            self.ordinal.fold_into(model.get_layer("p_defective"), self.decision)


def training_head(
    model: keras.Model, targets: npt.NDArray[np.float32], ordinal: bool
) -> TrainingHead:
    """How `model` (from `build_model`) is fitted to `targets` in [0, 1]: its sigmoid output
    with binary cross-entropy, or (`ordinal`) an `OrdinalHead` on its pooled features with one
    cut per level of the targets (`ordinal_levels`)."""
    if not ordinal:
        metrics = [ThresholdedAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
        return TrainingHead(model.outputs, "binary_crossentropy", metrics, None, 0)
    levels, decision = ordinal_levels(targets)
    # Start each cut at the log-odds of its share of the training targets.
    above = np.clip([np.mean(targets >= cut - 1e-4) for cut in levels[1:]], 1e-3, 1 - 1e-3)
    head = OrdinalHead(np.log(above / (1.0 - above)), name="ordinal")
    return TrainingHead(
        outputs=[head(model.get_layer("p_defective").input)],
        loss=OrdinalCrossentropy(levels.tolist()),
        metrics=[DecisionAccuracy(decision, name="accuracy"), DecisionAUC(decision, name="auc")],
        ordinal=head,
        decision=decision,
    )


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
