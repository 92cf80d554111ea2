"""The model builder, member averaging, and the layers, losses and metrics of training."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import pytest

from classifier.pipeline.common import PipelineError
from classifier.pipeline.model import (
    DecisionAccuracy,
    DecisionAUC,
    OrdinalCrossentropy,
    OrdinalHead,
    SharpnessAware,
    ThresholdedAccuracy,
    average_members,
    build_model,
    ordinal_levels,
)
from classifier.pipeline.recipe import Recipe


@pytest.mark.parametrize("size", [32, 48])
def test_build_model_maps_images_to_one_probability(
    size: int, tiny_recipe: Callable[..., Recipe]
) -> None:
    model = build_model(tiny_recipe(image_size=size), channels=1)
    out = model.predict(np.zeros((2, size, size, 1), np.float32), verbose=0)
    assert out.shape == (2, 1)
    assert np.all((out > 0.0) & (out < 1.0))


def test_build_model_uses_the_given_batchnorm_momentum(tiny_recipe: Callable[..., Recipe]) -> None:
    model = build_model(
        tiny_recipe(image_size=32, filters=(4, 8), convs_per_block=2, bn_momentum=0.9), channels=1
    )
    momenta = {
        layer.momentum
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert momenta == {0.9}


def test_avgmax_pooling_feeds_the_head_both_average_and_max_features(
    tiny_recipe: Callable[..., Recipe],
) -> None:
    avg = build_model(
        tiny_recipe(image_size=32, filters=(4, 8), dropout=0.0, pooling="avg"), channels=1
    )
    both = build_model(
        tiny_recipe(image_size=32, filters=(4, 8), dropout=0.0, pooling="avgmax"), channels=1
    )
    assert both.get_layer("gmp") is not None
    # The head reads twice the features: average and max of the last block.
    assert both.get_layer("p_defective").kernel.shape == (2 * 8, 1)
    assert avg.get_layer("p_defective").kernel.shape == (8, 1)
    out = both.predict(np.zeros((3, 32, 32, 1), np.float32), verbose=0)
    assert out.shape == (3, 1)


def test_thresholded_accuracy_counts_soft_targets_by_their_side_of_one_half() -> None:
    metric = ThresholdedAccuracy()
    # Targets 1/3 and 2/3 are "functional" and "defective"; the predictions agree with both.
    metric.update_state(np.array([[1 / 3], [2 / 3]]), np.array([[0.2], [0.9]]))
    assert float(metric.result()) == pytest.approx(1.0)
    plain = keras.metrics.BinaryAccuracy()
    plain.update_state(np.array([[1 / 3], [2 / 3]]), np.array([[0.2], [0.9]]))
    assert float(plain.result()) == pytest.approx(0.0)  # why the thresholded one exists


def test_average_members_outputs_the_mean_of_the_members(
    tiny_recipe: Callable[..., Recipe],
) -> None:
    members = [
        build_model(tiny_recipe(image_size=32, filters=(4,), dropout=0.0), channels=1, name=f"m{i}")
        for i in range(3)
    ]
    for i, member in enumerate(members):  # distinct heads, so the members disagree
        kernel, bias = member.get_layer("p_defective").get_weights()
        member.get_layer("p_defective").set_weights([kernel + i, bias - i])
    x = np.random.default_rng(0).random((5, 32, 32, 1)).astype(np.float32)
    each = np.stack([m.predict(x, verbose=0) for m in members])
    assert np.ptp(each, axis=0).max() > 0.01
    ensemble = average_members(members)
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), each.mean(axis=0), atol=1e-6)
    assert average_members(members[:1]) is members[0]


def test_a_strided_stem_halves_the_first_feature_map_and_nothing_else(
    tiny_recipe: Callable[..., Recipe],
) -> None:
    plain = build_model(tiny_recipe(image_size=64, filters=(4, 8), dropout=0.0), channels=1)
    strided = build_model(
        tiny_recipe(image_size=64, filters=(4, 8), dropout=0.0, stem_stride=2), channels=1
    )
    assert plain.get_layer("b0_conv0").output.shape[1:3] == (64, 64)
    assert strided.get_layer("b0_conv0").output.shape[1:3] == (32, 32)
    assert strided.count_params() == plain.count_params()
    assert strided.predict(np.zeros((2, 64, 64, 1), np.float32), verbose=0).shape == (2, 1)


def test_sharpness_aware_step_takes_the_gradient_at_the_worst_nearby_weights() -> None:
    # One SGD step on a linear model, by hand: climb rho along the normalised gradient, take the
    # gradient there, apply it at the original weights.
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = rng.normal(size=(8, 1)).astype(np.float32)
    w0 = rng.normal(size=(3, 1)).astype(np.float32)
    rho, lr = 0.5, 0.1

    def gradient(w: np.ndarray) -> np.ndarray:  # of the mean squared error
        return np.asarray(2.0 * x.T @ (x @ w - y) / len(x), np.float32)

    g = gradient(w0)
    expected = w0 - lr * gradient(w0 + rho * g / np.linalg.norm(g))
    plain_step = w0 - lr * g

    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(1, use_bias=False, kernel_initializer=tf.constant_initializer(w0))(
        inputs
    )
    model = SharpnessAware(inputs, outputs, rho=rho)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    kept = model.layers[-1].kernel.numpy()
    np.testing.assert_allclose(kept, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(kept, plain_step, atol=1e-3)  # the test tells SAM from plain SGD
    # the reported loss is the one at the weights before the step
    assert history.history["loss"][0] == pytest.approx(float(np.mean((x @ w0 - y) ** 2)), rel=1e-5)


ELPV_LEVELS = np.array([0.0, 1 / 3, 2 / 3, 1.0], np.float32)


def test_ordinal_levels_are_the_graded_probabilities_and_the_decision_cut_is_above_half() -> None:
    levels, decision = ordinal_levels(np.repeat(ELPV_LEVELS, 3))
    np.testing.assert_allclose(levels, ELPV_LEVELS)
    assert decision == 1  # cuts: >= 1/3, >= 2/3 (p > 0.5), >= 1
    _, binary_decision = ordinal_levels(np.array([0.0, 1.0, 1.0], np.float32))
    assert binary_decision == 0


@pytest.mark.parametrize(
    "targets",
    [np.linspace(0, 1, 20, dtype=np.float32), np.array([0.0, 0.25, 0.5], np.float32)],
    ids=["continuous", "nothing-above-half"],
)
def test_ordinal_levels_reject_targets_without_a_few_levels_on_both_sides(
    targets: np.ndarray,
) -> None:
    with pytest.raises(PipelineError, match=r"train\.ordinal needs"):
        ordinal_levels(targets)


def test_ordinal_crossentropy_scores_each_cut_against_its_hard_target() -> None:
    loss = OrdinalCrossentropy(ELPV_LEVELS.tolist())
    y_pred = np.array([[0.9, 0.6, 0.2], [0.7, 0.4, 0.1]], np.float32)
    p = np.array([2 / 3, 0.0], np.float32)  # cuts reached: >= 1/3 and >= 2/3; none
    targets = np.array([[1, 1, 0], [0, 0, 0]], np.float32)
    bce = -(targets * np.log(y_pred) + (1 - targets) * np.log(1 - y_pred)).mean(axis=1)
    assert float(loss(p, y_pred)) == pytest.approx(float(bce.mean()), rel=1e-5)


def test_decision_metrics_read_only_the_decision_column() -> None:
    y_true = np.array([[1.0], [2 / 3], [1 / 3], [0.0]], np.float32)
    # column 1 ranks and thresholds perfectly; columns 0 and 2 are the reverse
    y_pred = np.array(
        [[0.1, 0.9, 0.1], [0.2, 0.8, 0.2], [0.8, 0.3, 0.8], [0.9, 0.1, 0.9]], np.float32
    )
    accuracy, auc = DecisionAccuracy(1), DecisionAUC(1)
    accuracy.update_state(y_true, y_pred)
    auc.update_state(y_true, y_pred)
    assert float(accuracy.result()) == pytest.approx(1.0)
    assert float(auc.result()) == pytest.approx(1.0)
    wrong = DecisionAccuracy(0)
    wrong.update_state(y_true, y_pred)
    assert float(wrong.result()) == pytest.approx(0.0)


def test_ordinal_head_folds_its_decision_cut_into_the_plain_sigmoid_output(
    tiny_recipe: Callable[..., Recipe],
) -> None:
    model = build_model(tiny_recipe(image_size=32, filters=(4, 8), dropout=0.0), channels=1)
    head = OrdinalHead([1.0, -0.5, -2.0])
    trainer = keras.Model(model.inputs, head(model.get_layer("p_defective").input))
    x = np.random.default_rng(0).random((6, 32, 32, 1)).astype(np.float32)
    cuts = trainer.predict(x, verbose=0)
    assert cuts.shape == (6, 3)
    assert np.all(np.diff(cuts, axis=1) < 0)  # one shared score: the cuts stay ordered
    head.fold_into(model.get_layer("p_defective"), 1)
    np.testing.assert_allclose(model.predict(x, verbose=0)[:, 0], cuts[:, 1], rtol=1e-5)
