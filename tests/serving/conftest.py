"""Fixtures for the service tests: a running app (in-process) on a real exported LiteRT model."""

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
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.tflite + model_card.json, converted by TensorFlow's real LiteRT converter.

    Stand-in until the pipeline's shared `tiny_model_dir` (tests/conftest.py) lands.
    """
    import keras
    import tensorflow as tf

    out = tmp_path_factory.mktemp("tiny_model")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    (out / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    card = ModelCard.from_dict(
        {
            "schema_version": 1,
            "name": "elpv-cnn",
            "version": "abc1234",
            "git_revision": "abc1234" * 5 + "abcde",
            "data_hash": "0" * 32,
            "input": {"height": 32, "width": 32},
            "threshold": 0.5,
            "labels": ["functional", "defective"],
            "metrics": {"accuracy": 0.8, "balanced_accuracy": 0.8, "roc_auc": 0.85, "f1": 0.7},
            "params": {"train": {"epochs": 1}},
            "exported_at": "2025-01-01T00:00:00+00:00",
            "export_parity_max_abs_diff": 0.0,
        }
    )
    card.save(out / "model_card.json")
    return out


def make_settings(model_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "model_path": model_dir / "model.tflite",
        "model_card_path": model_dir / "model_card.json",
        "host": "127.0.0.1",
        "inference_threads": 1,
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
