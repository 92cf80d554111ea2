"""Image -> model input. The one preprocessing function used by training *and* serving, so the
two can never drift apart. Pillow + NumPy only: the service must not need TensorFlow."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

# Pillow modes we accept and how to bring each to 8-bit grayscale ("L").
# 16-bit and 32-bit integer modes are rescaled by their real range, not clipped, so a 16-bit
# electroluminescence image keeps its contrast.
_WIDE_INT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
SUPPORTED_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "F"})
SUPPORTED_MODES = SUPPORTED_MODES | _WIDE_INT_MODES


class UnsupportedImageMode(ValueError):
    """The image's pixel mode cannot be mapped to grayscale."""


def to_grayscale(image: Image.Image) -> Image.Image:
    """Return an 8-bit grayscale ("L") copy of any supported Pillow image."""
    mode = image.mode
    if mode == "L":
        return image
    if mode not in SUPPORTED_MODES:
        raise UnsupportedImageMode(f"unsupported pixel mode {mode!r}")
    if mode in _WIDE_INT_MODES or mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
    if mode in {"LA", "PA", "RGBA", "P"} and ("A" in mode or "transparency" in image.info):
        # Composite transparent pixels on black, the background of an EL image.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    return image.convert("L")


def preprocess(image: Image.Image, size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Grayscale, resize to `size` = (height, width) and scale to [0, 1].

    Returns an array of shape (height, width, 1), dtype float32: one row of the model's input.
    """
    height, width = size
    gray = to_grayscale(image)
    if gray.size != (width, height):
        gray = gray.resize((width, height), Image.Resampling.BILINEAR)
    arr = np.asarray(gray, dtype=np.float32) / np.float32(255.0)
    return arr[:, :, np.newaxis]
