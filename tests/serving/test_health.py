"""Probes: liveness always, readiness only once the model is loaded and warmed."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from classifier.model_card import ModelCard
from classifier.serving.app import create_app

from .conftest import make_settings, png_bytes, wait_ready


def test_livez_returns_alive(client: TestClient) -> None:
    response = client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readyz_returns_ready_with_version_once_loaded(client: TestClient, card: ModelCard) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["ready"] is True
    assert response.json()["model_version"] == card.version


def test_readyz_returns_503_before_the_model_loads(tiny_model_dir: Path) -> None:
    # Without the lifespan (no `with`), nothing loads the model: the state before loading.
    client = TestClient(create_app(make_settings(tiny_model_dir)))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["ready"] is False
    predict = client.post("/v1/predict", files={"files": ("a.png", b"x", "image/png")})
    assert predict.status_code == 503
    assert predict.json()["code"] == "model_not_ready"
    assert client.get("/v1/model").status_code == 503


def test_readyz_stays_503_with_reason_when_model_file_is_missing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
        for _ in range(200):
            if "failed" in (response.json().get("reason") or ""):
                break
            response = client.get("/readyz")
        assert response.status_code == 503
        assert "has no model.tflite and no model_card.json" in response.json()["reason"]
        assert client.get("/livez").status_code == 200


def test_app_can_be_started_again_after_shutdown(tiny_model_dir: Path) -> None:
    app = create_app(make_settings(tiny_model_dir))
    for _ in range(2):
        with TestClient(app) as client:
            wait_ready(client)
            response = client.post(
                "/v1/predict", files={"files": ("a.png", png_bytes(), "image/png")}
            )
            assert response.status_code == 200
        assert app.state.service.model.ready is False  # shutdown unloaded it
