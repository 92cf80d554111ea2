"""Untrusted bytes -> model input rows, refusing anything that could hurt the server.

Order matters: identify the format from the header, check the declared dimensions against the
pixel limit (a decompression bomb is a small file declaring a huge image), and only then decode.
Everything after decoding is `classifier.imaging.preprocess`, the function training uses.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from classifier.imaging import GRAY_ONLY, UnsupportedImageMode, preprocess
from classifier.serving.errors import (
    CorruptImage,
    EmptyImage,
    ImageTooLarge,
    UnsupportedImage,
)

log = logging.getLogger("classifier.serving")

# Formats a camera or a labelling tool produces. Restricting Pillow's plugins also shrinks the
# attack surface (no EPS/PostScript, no exotic parsers).
ALLOWED_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF")


class Decoded(NamedTuple):
    row: npt.NDArray[np.float32]  # (H, W, channels) float32, the model's input
    width: int  # of the file, before preprocessing
    height: int


def decode_image(
    data: bytes,
    *,
    name: str,
    size: tuple[int, int],
    max_pixels: int,
    channels: tuple[str, ...] = GRAY_ONLY,
) -> Decoded:
    """Validate and decode one image file into its model row and its original dimensions."""
    if not data:
        raise EmptyImage(f"image {name!r} is empty (0 bytes)", image=name)
    try:
        # Pillow's own bomb check warns (and errors at 2x its limit); ours below is stricter
        # and explicit, so silence the warning instead of letting it become noise or an error.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError as exc:
        raise UnsupportedImage(
            f"image {name!r} is not an image in a supported format ({', '.join(ALLOWED_FORMATS)})",
            image=name,
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image {name!r}: {exc}", image=name) from exc
    except Exception as exc:
        # Pillow's plugins raise many types (OSError, SyntaxError, struct.error, IndexError...)
        # for headers they recognise but cannot parse: all of them mean a damaged file.
        raise CorruptImage(f"image {name!r} has a damaged header: {exc}", image=name) from exc
    with image:
        width, height = image.size
        if width < 1 or height < 1:
            raise CorruptImage(f"image {name!r} declares size {width}x{height}", image=name)
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"image {name!r} is {width}x{height} = {width * height} pixels, over the limit "
                f"of {max_pixels} (CLASSIFIER_MAX_IMAGE_PIXELS); resize it before sending",
                image=name,
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
        except Image.DecompressionBombError as exc:  # a frame larger than the header said
            raise ImageTooLarge(f"image {name!r}: {exc}", image=name) from exc
        except Exception as exc:  # same reasoning as for open(): any failure is a bad file
            raise CorruptImage(
                f"image {name!r} ({image.format}) could not be decoded, it may be truncated: {exc}",
                image=name,
            ) from exc
        try:
            return Decoded(preprocess(image, size, channels), width, height)
        except UnsupportedImageMode as exc:
            raise UnsupportedImage(
                f"image {name!r} has pixel mode {image.mode!r}, which cannot be mapped to "
                "grayscale; send 8/16-bit grayscale, RGB(A), palette or CMYK",
                image=name,
            ) from exc
        except Exception as exc:
            # A decoded image that preprocessing cannot handle is still the client's file, not a
            # server fault; log it so a real preprocessing bug does not go unnoticed.
            log.warning("preprocessing failed for %r", name, exc_info=exc)
            raise CorruptImage(
                f"image {name!r} ({image.format}, mode {image.mode}) could not be converted "
                f"to the model's input: {exc}",
                image=name,
            ) from exc
