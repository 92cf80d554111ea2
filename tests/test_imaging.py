"""The shared preprocessing: every Pillow mode the service accepts lands on the same scale."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from classifier.imaging import UnsupportedImageMode, preprocess, to_grayscale


def _gradient(width: int = 40, height: int = 30) -> np.ndarray:
    row = np.linspace(0, 255, width, dtype=np.float64)
    return np.tile(row, (height, 1))


def test_preprocess_returns_model_row_shape_and_range() -> None:
    image = Image.fromarray(_gradient().astype(np.uint8), mode="L")
    out = preprocess(image, (16, 24))
    assert out.shape == (16, 24, 1)
    assert out.dtype == np.float32
    assert 0.0 <= float(out.min()) < 0.05
    assert 0.95 < float(out.max()) <= 1.0


def test_preprocess_keeps_size_when_already_right() -> None:
    pixels = _gradient().astype(np.uint8)
    out = preprocess(Image.fromarray(pixels, mode="L"), (30, 40))
    np.testing.assert_array_equal(out[:, :, 0], pixels.astype(np.float32) / 255.0)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "CMYK", "LA", "1", "YCbCr"])
def test_to_grayscale_accepts_common_modes(mode: str) -> None:
    gray = Image.fromarray(_gradient().astype(np.uint8), mode="L")
    converted = gray.convert(mode)
    out = to_grayscale(converted)
    assert out.mode == "L"
    assert out.size == gray.size


def test_to_grayscale_rescales_16_bit_by_its_range() -> None:
    # A 16-bit image using only the low 4096 levels must not come out almost black.
    wide = (_gradient() / 255.0 * 4095).astype(np.uint16)
    image = Image.fromarray(wide)
    assert image.mode == "I;16"
    out = np.asarray(to_grayscale(image))
    assert out.max() == 255
    assert out.min() == 0


def test_to_grayscale_composites_transparency_on_black() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 255, 255, 0))  # fully transparent white
    assert np.asarray(to_grayscale(rgba)).max() == 0


def test_to_grayscale_rejects_unknown_mode() -> None:
    image = Image.new("HSV", (4, 4))
    with pytest.raises(UnsupportedImageMode, match="HSV"):
        to_grayscale(image)
