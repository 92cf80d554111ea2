"""Memory per request: no spill of uploads to /tmp, no whole-image float64 copies.

The worst case as a whole (every slot full, the decode pool busy) is measured on a server
process in test_overload.py; these are the two mechanisms, each checked on its own.
"""

from __future__ import annotations

import tempfile
import tracemalloc

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from classifier.imaging import to_grayscale
from classifier.serving.settings import MiB

from .conftest import png_bytes


def test_large_multipart_parts_stay_in_memory(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part over 1 MiB would roll Starlette's spool over to a file in /tmp (the pod's small
    emptyDir); the service's parser keeps it in memory, bounded by MAX_UPLOAD_BYTES."""

    def no_disk(self: object) -> None:
        raise AssertionError("an upload was spilled to a temporary file")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", no_disk)
    big = png_bytes(size=(1400, 1400))  # noise: ~2 MB of PNG
    assert len(big) > 1 * MiB
    response = client.post("/v1/predict", files={"files": ("big.png", big, "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["image"] == "big.png"


def test_16_bit_images_are_rescaled_without_whole_image_float64_copies() -> None:
    side = 2048
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 65536, (side, side), dtype=np.uint16))
    assert image.mode.startswith("I;16")
    tracemalloc.start()
    try:
        gray = to_grayscale(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The image in its own dtype (2 bytes/px), the 8-bit result and its copy in the returned
    # image (1 + 1) and one block of rows in float64 (~1 here): under 6 bytes per pixel. One
    # whole-image float64 copy alone is 8, and the old code made two.
    assert peak < 6 * side * side, f"{peak / MiB:.1f} MiB for a {side}x{side} 16-bit image"
    # Same result as the whole-image formula.
    arr = np.asarray(image, dtype=np.float64)
    lo, hi = arr.min(), arr.max()
    expected = np.rint((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(gray), expected)
