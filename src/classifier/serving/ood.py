"""Cheap tests for inputs unlike the images the model was trained on.

The model answers for anything that decodes: a 1x5000 strip, a single pixel or a blank frame
all get a probability, often a confident one. These tests flag such inputs so a caller (or the
service, with `CLASSIFIER_OOD_ACTION=refuse`) can tell an answer about a solar cell from an
answer about something else. Each test is one the training data supports (the figures behind
the thresholds: docs/serving.md, "Inputs the model was not trained for"):

- `small_image`: the shorter side is below the model's input side. Training images are always
  downscaled to the input size; an image that has to be enlarged shows the model interpolated
  pixels it never saw, and a crack narrower than a pixel of the original cannot be resolved.
- `aspect_ratio`: every training image is a square cell; a long strip or a whole module is a
  different object, and the resize to a square input distorts it.
- `near_constant`: the pixels hardly vary. Every training cell shows busbars, cell edges and
  grain; a blank or uniform frame carries no evidence either way.
- `value_range` (preprocessed tensors only): preprocessing scales pixels to [0, 1]; a tensor
  outside it was not made by that preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Reason = Literal["small_image", "aspect_ratio", "near_constant", "value_range"]
REASONS: tuple[Reason, ...] = ("small_image", "aspect_ratio", "near_constant", "value_range")


@dataclass(frozen=True)
class Flag:
    reason: Reason
    message: str


@dataclass(frozen=True)
class Limits:
    """Thresholds: from the settings (ratio, spread) and the model card (input size)."""

    input_size: tuple[int, int]  # (height, width) of the model input
    max_aspect_ratio: float
    min_pixel_std: float


def check_size(width: int, height: int, limits: Limits) -> list[Flag]:
    """Flags for the dimensions of an image file, before preprocessing."""
    flags: list[Flag] = []
    min_side = min(limits.input_size)
    if min(width, height) < min_side:
        flags.append(
            Flag(
                "small_image",
                f"{width}x{height} has a side shorter than the model input's {min_side} px",
            )
        )
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        flags.append(
            Flag(
                "aspect_ratio",
                f"{width}x{height} has aspect ratio {ratio:.2f}, over "
                f"{limits.max_aspect_ratio:g} (a solar cell image is about square)",
            )
        )
    return flags


def check_row(row: npt.NDArray[np.float32], limits: Limits, *, tensor: bool = False) -> list[Flag]:
    """Flags for one model input row (H, W, C); `tensor` = sent preprocessed by the client."""
    flags: list[Flag] = []
    if tensor:
        low, high = float(row.min()), float(row.max())
        if low < 0.0 or high > 1.0:
            flags.append(
                Flag(
                    "value_range",
                    f"values span [{low:.3g}, {high:.3g}], outside the [0, 1] that "
                    "preprocessing produces",
                )
            )
    # The most varied plane decides: any plane with structure is evidence.
    spread = float(row.reshape(-1, row.shape[-1]).std(axis=0).max())
    if spread < limits.min_pixel_std:
        flags.append(
            Flag(
                "near_constant",
                f"pixel standard deviation {spread:.4f} is under {limits.min_pixel_std:g} "
                "(a blank or uniform image)",
            )
        )
    return flags
