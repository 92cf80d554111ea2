"""Fixtures for the service tests: a running app (in-process) on a real exported LiteRT model.

The model is the session-wide `tiny_model_dir` of tests/conftest.py, made by the pipeline's
own train + export code, so these tests run against exactly what `dvc repro` produces.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from classifier.model_card import ModelCard
from classifier.serving.app import create_app
from classifier.serving.settings import Settings


@pytest.fixture(scope="session")
def card(tiny_model_dir: Path) -> ModelCard:
    """The card of the shared `tiny_model_dir` (tests/conftest.py: exported by the pipeline)."""
    return ModelCard.load(tiny_model_dir / "model_card.json")


def make_settings(model_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "model_dir": model_dir,
        "host": "127.0.0.1",
        "inference_threads": 1,
        # The service refuses to start without a token unless told that is intended.
        "allow_unauthenticated": True,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.01)
    raise AssertionError(f"not ready after {timeout}s: {client.get('/readyz').json()}")


@pytest.fixture
def settings(tiny_model_dir: Path) -> Settings:
    return make_settings(tiny_model_dir)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def png_bytes(
    mode: str = "L", size: tuple[int, int] = (48, 40), fmt: str = "PNG", seed: int = 0
) -> bytes:
    """An image file of the given Pillow mode and format, with some structure in it."""
    rng = np.random.default_rng(seed)
    gray = Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8), mode="L")
    image = gray if mode == "L" else gray.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()
