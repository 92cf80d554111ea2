"""Training batches: augmentation, mixup, class weights, targets and the tf.data feed."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest

from classifier.pipeline.batches import (
    AugmentedBatches,
    augment_batch,
    batch_dataset,
    class_weights,
    mix_batch,
    training_targets,
)
from classifier.pipeline.common import PipelineError
from classifier.pipeline.model import (
    build_model,
)
from classifier.pipeline.recipe import Augmentation, Recipe
from classifier.pipeline.train import (
    make_deterministic,
)

NO_AUGMENTATION = Augmentation(
    flip=False,
    rot90=False,
    brightness=0.0,
    contrast=0.0,
    shift=0.0,
    rotate=0.0,
    scale=0.0,
    mixup=0.0,
)


def augmentation(**on: Any) -> Augmentation:
    return dataclasses.replace(NO_AUGMENTATION, **on)


def test_augment_batch_only_permutes_pixels_without_jitter() -> None:
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    out = augment_batch(
        x,
        augmentation(flip=True, rot90=True, brightness=0.0, contrast=0.0),
        np.random.default_rng(1),
    )
    assert out.shape == x.shape
    assert not np.array_equal(out, x)  # 16 images: some got flipped or rotated
    # Flips and 90-degree rotations move pixels, never change them.
    np.testing.assert_array_equal(np.sort(out.reshape(16, -1)), np.sort(x.reshape(16, -1)))


def test_augment_batch_is_repeatable_and_stays_in_range() -> None:
    x = np.random.default_rng(0).random((8, 8, 8, 1)).astype(np.float32)
    aug = augmentation(flip=True, rot90=True, brightness=0.5, contrast=0.5)
    a = augment_batch(x, aug, np.random.default_rng(3))
    b = augment_batch(x, aug, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0.0
    assert a.max() <= 1.0


def _dot(size: int, row: int, col: int) -> np.ndarray:
    img = np.zeros((1, size, size, 1), np.float32)
    img[0, row, col, 0] = 1.0
    return img


def test_geometric_jitter_moves_pixels_by_at_most_its_bounds() -> None:
    aug = augmentation(brightness=0.0, contrast=0.0, shift=0.1)
    x = _dot(41, 20, 20)  # 0.1 of 41 px: up to 4.1 px either way
    moved = []
    for seed in range(20):
        out = augment_batch(x, aug, np.random.default_rng(seed))[0, :, :, 0]
        row, col = np.unravel_index(np.argmax(out), out.shape)
        assert abs(row - 20) <= 5
        assert abs(col - 20) <= 5
        moved.append((row, col) != (20, 20))
    assert any(moved)


def test_geometric_jitter_rotates_about_the_centre() -> None:
    aug = augmentation(brightness=0.0, contrast=0.0, rotate=30.0)
    x = _dot(41, 20, 35)  # 15 px right of the centre
    for seed in range(10):
        out = augment_batch(x, aug, np.random.default_rng(seed))[0, :, :, 0]
        row, col = np.unravel_index(np.argmax(out), out.shape)
        radius = np.hypot(row - 20, col - 20)
        assert 13.5 <= radius <= 16.5  # a rotation keeps the distance to the centre
        assert abs(np.degrees(np.arctan2(row - 20, col - 20))) <= 33.0


def test_geometric_jitter_off_is_the_identity_and_on_stays_in_range() -> None:
    x = np.random.default_rng(0).random((4, 16, 16, 1)).astype(np.float32)
    off = augmentation(brightness=0.0, contrast=0.0)
    np.testing.assert_array_equal(augment_batch(x, off, np.random.default_rng(1)), x)
    on = augmentation(brightness=0.0, contrast=0.0, shift=0.1, rotate=5.0, scale=0.1)
    out = augment_batch(x, on, np.random.default_rng(1))
    assert out.shape == x.shape
    assert out.dtype == np.float32
    assert out.min() >= 0.0
    assert out.max() <= 1.0
    assert not np.allclose(out, x)


def test_mixup_blends_each_image_with_a_partner_and_its_target_and_weight_alike() -> None:
    n = 64
    # Image i is the constant i / n, so a mixed image's value says which share it got.
    x = np.broadcast_to((np.arange(n) / n).reshape(n, 1, 1, 1), (n, 4, 4, 1)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.float32)
    weights = np.linspace(1.0, 2.0, n, dtype=np.float32)
    mixed_x, mixed_y, mixed_w = mix_batch(x, y, weights, 0.4, np.random.default_rng(5))
    assert mixed_x.shape == x.shape
    assert mixed_x.dtype == mixed_y.dtype == mixed_w.dtype == np.float32
    assert not np.allclose(mixed_x, x)
    # The same share and partner, per image, for pixels, target and weight.
    partner = np.random.default_rng(5)
    share = partner.beta(0.4, 0.4, size=n).astype(np.float32)
    share = np.maximum(share, 1.0 - share)
    j = partner.permutation(n)
    np.testing.assert_allclose(
        mixed_x[:, 0, 0, 0], share * x[:, 0, 0, 0] + (1 - share) * x[j, 0, 0, 0], atol=1e-6
    )
    np.testing.assert_allclose(mixed_y, share * y + (1 - share) * y[j], atol=1e-6)
    np.testing.assert_allclose(mixed_w, share * weights + (1 - share) * weights[j], atol=1e-6)
    assert share.min() >= 0.5  # every image stays mostly itself
    assert mixed_y.min() >= 0.0
    assert mixed_y.max() <= 1.0
    assert np.all(mixed_x == mixed_x[:, :1, :1, :])  # a blend of constants is constant


def test_batches_mix_only_when_mixup_is_on(tiny_recipe: Callable[..., Recipe]) -> None:
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    y = (np.arange(16) % 2).astype(np.float32)
    weights = np.ones(16, np.float32)
    plain = augmentation(brightness=0.0, contrast=0.0)
    off = AugmentedBatches(x, y, weights, tiny_recipe(batch_size=16, augment=plain))
    _, y_off, _ = off[0]
    assert set(np.unique(y_off)) == {0.0, 1.0}  # targets untouched
    mixed = dataclasses.replace(plain, mixup=0.4)
    on = AugmentedBatches(x, y, weights, tiny_recipe(batch_size=16, augment=mixed))
    x_on, y_on, _ = on[0]
    assert np.any((y_on > 0.0) & (y_on < 1.0))  # some targets blended
    again = AugmentedBatches(x, y, weights, tiny_recipe(batch_size=16, augment=mixed))
    np.testing.assert_array_equal(x_on, again[0][0])  # seeded: the same batch every run


def test_class_weights_make_both_classes_count_equally() -> None:
    y = np.array([1, 0, 0, 0], dtype=np.float32)
    weights = class_weights(y)
    assert weights[1] * 1 == pytest.approx(weights[0] * 3)


def test_class_weights_reject_a_single_class() -> None:
    with pytest.raises(PipelineError, match="only one class"):
        class_weights(np.zeros(5, dtype=np.float32))


def test_training_targets_are_the_graded_probabilities_when_soft() -> None:
    split = {
        "y": np.array([0, 0, 1, 1], np.float32),
        "p": np.array([0, 1 / 3, 2 / 3, 1], np.float32),
    }
    np.testing.assert_array_equal(training_targets(split, soft=True), split["p"])
    np.testing.assert_array_equal(training_targets(split, soft=False), split["y"])


def test_training_targets_reject_a_split_without_probabilities() -> None:
    with pytest.raises(PipelineError, match="dvc repro prepare"):
        training_targets({"y": np.zeros(3, np.float32)}, soft=True)


def test_training_targets_reject_probabilities_outside_zero_one() -> None:
    split = {"y": np.zeros(2, np.float32), "p": np.array([0.0, 1.5], np.float32)}
    with pytest.raises(PipelineError, match=r"\[0, 1\]"):
        training_targets(split, soft=True)


def test_the_batch_dataset_feeds_fit_what_the_keras_py_dataset_fed_it(
    tiny_recipe: Callable[..., Recipe],
) -> None:
    """Same batches, same order, epoch after epoch: the same weights to the bit as fitting the
    PyDataset itself, which is what the pipeline did before it built its own feed."""
    rng = np.random.default_rng(0)
    x = rng.random((40, 16, 16, 1)).astype(np.float32)
    y = rng.choice([0.0, 1 / 3, 2 / 3, 1.0], size=40).astype(np.float32)
    config = tiny_recipe(
        seed=3, augment=augmentation(flip=True, rot90=True, brightness=0.1, contrast=0.1)
    )
    weights = []
    for feed, shuffle in ((lambda b: b, True), (batch_dataset, False)):
        make_deterministic(3)
        model = build_model(tiny_recipe(image_size=16, filters=(4,), dropout=0.0), channels=1)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
        batches = AugmentedBatches(x, y, np.ones(40, np.float32), config)
        model.fit(
            feed(batches), epochs=3, verbose=0, shuffle=shuffle, validation_data=(x[:8], y[:8])
        )
        weights.append(model.get_weights())
    assert len(weights[0]) == len(weights[1])
    for before, after in zip(*weights, strict=True):
        np.testing.assert_array_equal(before, after)


def test_the_batch_dataset_runs_without_tf_data_autotuning(
    tiny_recipe: Callable[..., Recipe],
) -> None:
    x = np.zeros((10, 8, 8, 1), np.float32)
    config = tiny_recipe(seed=0)
    dataset = batch_dataset(
        AugmentedBatches(x, np.zeros(10, np.float32), np.ones(10, np.float32), config)
    )
    assert dataset.options().autotune.enabled is False
    assert sorted(len(b[0]) for b in dataset.as_numpy_iterator()) == [2, 8]
