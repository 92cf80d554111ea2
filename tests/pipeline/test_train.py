"""The model builder, augmentation and class weights."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.pipeline.common import PipelineError
from classifier.pipeline.train import Augmentation, augment_batch, build_model, class_weights


@pytest.mark.parametrize("size", [32, 48])
def test_build_model_maps_images_to_one_probability(size: int) -> None:
    model = build_model((size, size), filters=(4, 8), dropout=0.0)
    out = model.predict(np.zeros((2, size, size, 1), np.float32), verbose=0)
    assert out.shape == (2, 1)
    assert np.all((out > 0.0) & (out < 1.0))


def test_augment_batch_only_permutes_pixels_without_jitter() -> None:
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    out = augment_batch(x, Augmentation(brightness=0.0, contrast=0.0), np.random.default_rng(1))
    assert out.shape == x.shape
    assert not np.array_equal(out, x)  # 16 images: some got flipped or rotated
    # Flips and 90-degree rotations move pixels, never change them.
    np.testing.assert_array_equal(np.sort(out.reshape(16, -1)), np.sort(x.reshape(16, -1)))


def test_augment_batch_is_repeatable_and_stays_in_range() -> None:
    x = np.random.default_rng(0).random((8, 8, 8, 1)).astype(np.float32)
    aug = Augmentation(brightness=0.5, contrast=0.5)
    a = augment_batch(x, aug, np.random.default_rng(3))
    b = augment_batch(x, aug, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0.0
    assert a.max() <= 1.0


def test_class_weights_make_both_classes_count_equally() -> None:
    y = np.array([1, 0, 0, 0], dtype=np.float32)
    weights = class_weights(y)
    assert weights[1] * 1 == pytest.approx(weights[0] * 3)


def test_class_weights_reject_a_single_class() -> None:
    with pytest.raises(PipelineError, match="only one class"):
        class_weights(np.zeros(5, dtype=np.float32))
