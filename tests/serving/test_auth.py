"""Authentication by default: no token, no start (unless an open service is asked for); two
tokens valid at once for rotation; the mode said in the log; constant-time comparison."""

from __future__ import annotations

import hmac
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from classifier.serving import auth
from classifier.serving.app import create_app
from classifier.serving.settings import Settings

from .conftest import make_settings, png_bytes, wait_ready

PRIMARY, SECONDARY = "primary-token-1", "secondary-token-2"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CLASSIFIER_"):
            monkeypatch.delenv(name)


def test_settings_refuse_no_token_unless_open_is_asked_for(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError, match="CLASSIFIER_ALLOW_UNAUTHENTICATED"):
        Settings()
    monkeypatch.setenv("CLASSIFIER_ALLOW_UNAUTHENTICATED", "true")
    assert Settings().api_tokens == ()
    monkeypatch.delenv("CLASSIFIER_ALLOW_UNAUTHENTICATED")
    monkeypatch.setenv("CLASSIFIER_API_TOKEN", PRIMARY)
    assert Settings().api_tokens == (PRIMARY.encode(),)


def test_a_secondary_token_needs_a_primary_and_tokens_are_not_blank(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLASSIFIER_API_TOKEN_SECONDARY", SECONDARY)
    monkeypatch.setenv("CLASSIFIER_ALLOW_UNAUTHENTICATED", "true")
    with pytest.raises(ValidationError, match="without CLASSIFIER_API_TOKEN"):
        Settings()
    monkeypatch.setenv("CLASSIFIER_API_TOKEN", "  ")
    with pytest.raises(ValidationError, match="empty"):
        Settings()


def test_the_server_process_refuses_to_start_without_a_token(tiny_model_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSIFIER_")}
    env |= {
        "CLASSIFIER_MODEL_DIR": str(tiny_model_dir),
        "CLASSIFIER_HOST": "127.0.0.1",
        "CLASSIFIER_PORT": "1",  # never bound: it must stop before listening
    }
    result = subprocess.run(
        [sys.executable, "-m", "classifier.serving"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("invalid settings: no CLASSIFIER_API_TOKEN"), result.stderr
    assert "CLASSIFIER_ALLOW_UNAUTHENTICATED=true" in last


@pytest.fixture
def rotating(tiny_model_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tiny_model_dir,
        allow_unauthenticated=False,
        api_token=PRIMARY,
        api_token_secondary=SECONDARY,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def _predict(client: TestClient, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    files = {"files": ("a.png", png_bytes(), "image/png")}
    return client.post("/v1/predict", files=files, headers=headers).status_code


def test_both_tokens_are_accepted_during_a_rotation(rotating: TestClient) -> None:
    assert _predict(rotating, PRIMARY) == 200
    assert _predict(rotating, SECONDARY) == 200
    assert _predict(rotating, "primary-token-") == 401
    assert _predict(rotating, PRIMARY + SECONDARY) == 401
    assert _predict(rotating, None) == 401


def test_every_token_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    tokens = (PRIMARY.encode(), SECONDARY.encode())
    assert auth.token_matches(PRIMARY.encode(), tokens)
    assert calls == list(tokens)  # no early exit after the first (matching) token


@pytest.mark.parametrize(
    ("overrides", "level", "words"),
    [
        ({"allow_unauthenticated": True}, logging.WARNING, "authentication OFF"),
        ({"api_token": PRIMARY}, logging.INFO, "authentication on"),
        (
            {"api_token": PRIMARY, "api_token_secondary": SECONDARY},
            logging.INFO,
            "2 tokens accepted",
        ),
    ],
)
def test_the_mode_is_logged_at_start(
    tiny_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
    overrides: dict[str, object],
    level: int,
    words: str,
) -> None:
    settings = make_settings(tiny_model_dir, **{"allow_unauthenticated": False, **overrides})
    with (
        caplog.at_level(logging.INFO, logger="classifier.serving"),
        TestClient(create_app(settings)) as c,
    ):
        wait_ready(c)
    (record,) = [r for r in caplog.records if "authentication" in r.getMessage()]
    assert record.levelno == level
    assert words in record.getMessage()
    assert PRIMARY not in caplog.text
    assert SECONDARY not in caplog.text
