"""The shared preprocessing: every Pillow mode the service accepts lands on the same scale."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from classifier.imaging import (
    UnknownChannel,
    UnsupportedImageMode,
    min_filter_width,
    preprocess,
    to_grayscale,
)


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


def _cell_with_crack(size: int = 300, crack_row: int = 151) -> Image.Image:
    """A bright, flat 'cell' with a dark horizontal line one pixel wide: a thin crack."""
    pixels = np.full((size, size), 200, dtype=np.uint8)
    pixels[crack_row, 20:-20] = 40
    return Image.fromarray(pixels, mode="L")


@pytest.mark.parametrize("crack_row", [150, 151, 152])  # wherever it falls on the pixel grid
def test_darkest_channel_keeps_a_thin_crack_that_the_resize_fades(crack_row: int) -> None:
    out = preprocess(_cell_with_crack(crack_row=crack_row), (96, 96), ("gray", "darkest"))
    assert out.shape == (96, 96, 2)
    assert out.dtype == np.float32
    background, depth = 200 / 255.0, 160 / 255.0
    gray_depth = background - float(out[:, :, 0].min())
    darkest_depth = background - float(out[:, :, 1].min())
    # The ~3x downscale averages the one-pixel line to a third of its depth or less...
    assert gray_depth < 0.35 * depth
    # ...the minimum filter first widens it to the resize step: twice that depth or more.
    assert darkest_depth > 0.6 * depth
    assert darkest_depth > 2 * gray_depth
    # Away from the crack both channels are the flat cell.
    np.testing.assert_allclose(out[:20, :, :], background, atol=1e-6)


def test_gray_channel_is_the_same_whatever_else_is_asked() -> None:
    image = _cell_with_crack()
    alone = preprocess(image, (96, 96))
    both = preprocess(image, (96, 96), channels=("gray", "darkest"))
    assert alone.shape == (96, 96, 1)
    np.testing.assert_array_equal(both[:, :, :1], alone)
    flipped = preprocess(image, (96, 96), channels=("darkest", "gray"))
    np.testing.assert_array_equal(flipped[:, :, ::-1], both)


@pytest.mark.parametrize(
    ("native", "size", "width"),
    [
        ((300, 300), (96, 96), 3),
        ((300, 300), (64, 64), 5),
        ((300, 300), (150, 150), 3),
        ((300, 300), (200, 200), 1),
        ((64, 64), (64, 64), 1),
        ((600, 300), (96, 96), 7),
    ],
)
def test_min_filter_spans_one_resize_step(
    native: tuple[int, int], size: tuple[int, int], width: int
) -> None:
    assert min_filter_width(native, size) == width


def test_darkest_without_a_downscale_is_the_gray_cell() -> None:
    pixels = _gradient().astype(np.uint8)
    out = preprocess(Image.fromarray(pixels, mode="L"), (30, 40), channels=("darkest",))
    np.testing.assert_array_equal(out[:, :, 0], pixels.astype(np.float32) / 255.0)


@pytest.mark.parametrize("channels", [("grey",), (), ("gray", "gray")])
def test_unknown_missing_or_repeated_channels_are_refused(channels: tuple[str, ...]) -> None:
    image = _cell_with_crack(32, 16)
    with pytest.raises(UnknownChannel, match="gray, darkest"):
        preprocess(image, (16, 16), channels=channels)
