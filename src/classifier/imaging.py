"""Image -> model input. The one preprocessing function used by training *and* serving, so the
two can never drift apart. Pillow + NumPy only: the service must not need TensorFlow."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

# Pillow modes we accept and how to bring each to 8-bit grayscale ("L").
# 16-bit and 32-bit integer modes are rescaled by their real range, not clipped, so a 16-bit
# electroluminescence image keeps its contrast.
_WIDE_INT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
SUPPORTED_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "F"})
SUPPORTED_MODES = SUPPORTED_MODES | _WIDE_INT_MODES


# The input channels a model can ask for (params `base.channels`, recorded in the model card):
# - "gray": the cell, resized to the model's input size.
# - "darkest": each pixel's darkest neighbour at the native resolution (a minimum filter about
#   as wide as the resize step), then the same resize. A 3x downscale averages a crack one pixel
#   wide to a third of its contrast or less; after the minimum filter it keeps two thirds or more.
CHANNELS = ("gray", "darkest")
GRAY_ONLY = ("gray",)


class UnsupportedImageMode(ValueError):
    """The image's pixel mode cannot be mapped to grayscale."""


class UnknownChannel(ValueError):
    """A requested input channel is not one of `CHANNELS`."""


def check_channels(channels: Sequence[str]) -> tuple[str, ...]:
    """`channels` as a tuple, or UnknownChannel naming the offender and the choices."""
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown or not channels or len(set(channels)) < len(channels):
        raise UnknownChannel(
            f"input channels {list(channels)!r}: each must be one of {', '.join(CHANNELS)}, "
            "at least one, none twice"
        )
    return tuple(channels)


def to_grayscale(image: Image.Image) -> Image.Image:
    """Return an 8-bit grayscale ("L") copy of any supported Pillow image."""
    mode = image.mode
    if mode == "L":
        return image
    if mode not in SUPPORTED_MODES:
        raise UnsupportedImageMode(f"unsupported pixel mode {mode!r}")
    if mode in _WIDE_INT_MODES or mode == "F":
        return _rescale_to_8_bit(image)
    if mode in {"LA", "PA", "RGBA", "P"} and ("A" in mode or "transparency" in image.info):
        # Composite transparent pixels on black, the background of an EL image.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    return image.convert("L")


# Rows rescaled at a time: the float64 working copy is this many rows, not the whole image
# (a 16-bit image at the service's pixel limit would otherwise take 8 bytes per pixel, twice).
_RESCALE_ROWS = 256


def _rescale_to_8_bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float image -> "L", stretched over its real range.

    The same float64 arithmetic as a whole-image rescale, done in blocks of rows, so the peak
    memory is the image in its own dtype plus the 8-bit result, whatever its size.
    """
    arr = np.asarray(image)
    lo, hi = float(arr.min()), float(arr.max())
    out = np.zeros(arr.shape, dtype=np.uint8)
    if hi > lo:
        scale = 255.0 / (hi - lo)
        for start in range(0, arr.shape[0], _RESCALE_ROWS):
            block = arr[start : start + _RESCALE_ROWS].astype(np.float64)
            block -= lo
            block *= scale
            np.rint(block, out=block)
            out[start : start + _RESCALE_ROWS] = block
    return Image.fromarray(out, mode="L")


def min_filter_width(native: tuple[int, int], size: tuple[int, int]) -> int:
    """The odd minimum-filter width nearest to one resize step from `native` (width, height) to
    `size` (height, width), ties upwards: 3 for ELPV's 300 px -> 96 px, 1 (no filter) below a
    2x step."""
    step = max(native[0] / size[1], native[1] / size[0])
    return 2 * int(step // 2) + 1


def describe(channels: Sequence[str]) -> str:
    """`preprocess` in words, for the model card (other clients must reproduce it)."""
    text = "grayscale, bilinear resize to height x width, scale to [0, 1]"
    if tuple(channels) == GRAY_ONLY:
        return text
    words = {
        "gray": "gray: that image",
        "darkest": "darkest: before the resize, a minimum filter at the native size whose width "
        "is the odd number nearest to the size ratio (ties upwards)",
    }
    return f"{text}; channels {', '.join(words[c] for c in check_channels(channels))}"


def preprocess(
    image: Image.Image, size: tuple[int, int], channels: Sequence[str] = GRAY_ONLY
) -> npt.NDArray[np.float32]:
    """Grayscale, resize to `size` = (height, width), scale to [0, 1], one plane per channel
    (`CHANNELS`; the default is the grayscale cell alone).

    Returns an array of shape (height, width, len(channels)), dtype float32: one row of the
    model's input.
    """
    height, width = size
    gray = to_grayscale(image)
    planes = []
    for channel in check_channels(channels):
        plane = gray
        if channel == "darkest":
            k = min_filter_width(gray.size, size)
            plane = gray.filter(ImageFilter.MinFilter(k)) if k > 1 else gray
        if plane.size != (width, height):
            plane = plane.resize((width, height), Image.Resampling.BILINEAR)
        planes.append(np.asarray(plane, dtype=np.float32) / np.float32(255.0))
    return np.stack(planes, axis=-1)
