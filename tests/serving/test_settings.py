"""Settings come from CLASSIFIER_* variables with the contract's names and defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from classifier.serving.app import create_app
from classifier.serving.settings import Settings

from .conftest import make_settings


@pytest.fixture(autouse=True)
def _open_by_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about other settings; authentication has its own (test_auth.py)."""
    monkeypatch.setenv("CLASSIFIER_ALLOW_UNAUTHENTICATED", "true")


def test_defaults_follow_the_service_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("CLASSIFIER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CLASSIFIER_ALLOW_UNAUTHENTICATED", "true")
    settings = Settings()
    assert settings.model_dir == Path("/opt/model")
    assert settings.model_path == Path("/opt/model/model.tflite")
    assert settings.card_path == Path("/opt/model/model_card.json")
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)  # noqa: S104 (the contract)
    assert settings.api_token is None
    assert settings.threads >= 1
    assert settings.max_image_pixels == 2048 * 2048
    assert settings.max_in_flight is None  # sized from the memory limit
    assert settings.request_timeout_s == 10


def test_environment_overrides_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "CLASSIFIER_MODEL_DIR": "/m",
        "CLASSIFIER_PORT": "9000",
        "CLASSIFIER_HOST": "127.0.0.1",
        "CLASSIFIER_LOG_LEVEL": "debug",
        "CLASSIFIER_INFERENCE_THREADS": "3",
        "CLASSIFIER_MAX_BATCH_SIZE": "8",
        "CLASSIFIER_MAX_BATCH_WAIT_MS": "2.5",
        "CLASSIFIER_MAX_UPLOAD_BYTES": "2048",
        "CLASSIFIER_MAX_IMAGES_PER_REQUEST": "4",
        "CLASSIFIER_API_TOKEN": "t0k",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert (s.model_path, s.card_path) == (Path("/m/model.tflite"), Path("/m/model_card.json"))
    assert (s.port, s.host, s.log_level, s.threads) == (9000, "127.0.0.1", "debug", 3)
    assert (s.max_batch_size, s.max_batch_wait_ms) == (8, 2.5)
    assert (s.max_upload_bytes, s.max_images_per_request) == (2048, 4)
    assert s.api_token is not None
    assert s.api_token.get_secret_value() == "t0k"
    assert "t0k" not in repr(s)  # the secret never reaches a log line


@pytest.mark.parametrize(
    ("inference", "interpreter", "expected"),
    [(1, None, 1), (2, None, 2), (4, None, 4), (2, 1, 1), (1, 3, 3)],
)
def test_model_threads_follow_the_cpu_budget_unless_set(
    monkeypatch: pytest.MonkeyPatch, inference: int, interpreter: int | None, expected: int
) -> None:
    monkeypatch.setenv("CLASSIFIER_INFERENCE_THREADS", str(inference))
    if interpreter is not None:
        monkeypatch.setenv("CLASSIFIER_INTERPRETER_THREADS", str(interpreter))
    else:
        monkeypatch.delenv("CLASSIFIER_INTERPRETER_THREADS", raising=False)
    settings = Settings()
    # The decode pool always gets the whole CPU budget; the interpreter can be set apart.
    assert (settings.threads, settings.model_threads) == (inference, expected)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "0"),
        ("INTERPRETER_THREADS", "0"),
        ("PORT", "http"),
        ("MAX_BATCH_SIZE", "0"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_invalid_values_are_refused_with_the_field_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"CLASSIFIER_{name}", value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()


def test_app_sizes_interpreter_and_decode_pool_from_the_settings(tiny_model_dir: Path) -> None:
    settings = make_settings(tiny_model_dir, inference_threads=2, interpreter_threads=1)
    service = create_app(settings).state.service
    assert service.model.threads == 1
    assert service.decode_pool._max_workers == 2
    service.decode_pool.shutdown()
