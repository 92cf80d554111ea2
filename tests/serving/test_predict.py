"""Predict: multipart and JSON forms, several images, labels from the card, auth, parity."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from fastapi.testclient import TestClient
from PIL import Image

from classifier.imaging import preprocess
from classifier.model_card import ModelCard
from classifier.serving.app import create_app

from .conftest import make_settings, png_bytes, wait_ready


def test_predict_returns_probability_label_and_version_for_one_image(
    client: TestClient, card: ModelCard
) -> None:
    response = client.post("/v1/predict", files={"files": ("cell.png", png_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == card.version
    [prediction] = body["predictions"]
    assert prediction["image"] == "cell.png"
    assert 0.0 <= prediction["probability"] <= 1.0
    negative, positive = card.labels
    expected = positive if prediction["probability"] > card.threshold else negative
    assert prediction["label"] == expected
    assert prediction["model_version"] == card.version


def test_predict_keeps_order_for_several_images(client: TestClient) -> None:
    files = [("files", (f"{i}.png", png_bytes(seed=i), "image/png")) for i in range(5)]
    response = client.post("/v1/predict", files=files)
    assert response.status_code == 200, response.text
    names = [p["image"] for p in response.json()["predictions"]]
    assert names == [f"{i}.png" for i in range(5)]


def _called_directly(
    model_dir: Path, data: list[bytes], channels: tuple[str, ...] = ("gray",)
) -> list[float]:
    """P(defective) of each image file: imaging.preprocess, then the .tflite, no service."""
    interpreter = Interpreter(model_path=str(model_dir / "model.tflite"))
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    out = []
    for d in data:
        row = preprocess(Image.open(io.BytesIO(d)), (32, 32), channels)[np.newaxis]
        interpreter.set_tensor(index, row)
        interpreter.invoke()
        out.append(
            float(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0, 0])
        )
    return out


def test_predict_matches_the_model_called_directly(
    client: TestClient, tiny_model_dir: Path
) -> None:
    """Serving parity: same bytes -> imaging.preprocess -> the same .tflite gives the same P."""
    data = [png_bytes(seed=s, size=(300, 300)) for s in range(3)]
    files = [("files", (f"{i}.png", d, "image/png")) for i, d in enumerate(data)]
    served = [
        p["probability"] for p in client.post("/v1/predict", files=files).json()["predictions"]
    ]
    np.testing.assert_allclose(served, _called_directly(tiny_model_dir, data), atol=1e-6)


def test_predict_computes_the_planes_the_card_names(tiny_darkest_model_dir: Path) -> None:
    """A model reading gray + darkest: the service builds both planes from the card, so its
    answer is what preprocess(..., channels) + the .tflite give. (A service that ignored the card
    would send gray-only rows, which the two-plane model refuses: this test would fail.)"""
    card = ModelCard.load(tiny_darkest_model_dir / "model_card.json")
    assert card.input.channel_names == ("gray", "darkest")
    assert card.input.channels == 2
    assert "darkest" in card.input.preprocessing
    data = [png_bytes(seed=s, size=(300, 300)) for s in range(3)]
    files = [("files", (f"{i}.png", d, "image/png")) for i, d in enumerate(data)]
    with TestClient(create_app(make_settings(tiny_darkest_model_dir))) as c:
        wait_ready(c)
        response = c.post("/v1/predict", files=files)
    assert response.status_code == 200, response.text
    served = [p["probability"] for p in response.json()["predictions"]]
    expected = _called_directly(tiny_darkest_model_dir, data, ("gray", "darkest"))
    np.testing.assert_allclose(served, expected, atol=1e-6)


def test_predict_accepts_json_with_base64_images(client: TestClient) -> None:
    payload = {
        "images": [
            {"data": base64.b64encode(png_bytes(seed=1)).decode(), "name": "a"},
            {"data": base64.b64encode(png_bytes(seed=2, fmt="JPEG")).decode()},
        ]
    }
    response = client.post("/v1/predict", json=payload)
    assert response.status_code == 200, response.text
    assert [p["image"] for p in response.json()["predictions"]] == ["a", "1"]


def test_predict_json_and_multipart_agree(client: TestClient) -> None:
    data = png_bytes(seed=7)
    multipart = client.post("/v1/predict", files={"files": ("x", data, "image/png")}).json()
    as_json = client.post(
        "/v1/predict", json={"images": [{"data": base64.b64encode(data).decode()}]}
    ).json()
    assert multipart["predictions"][0]["probability"] == as_json["predictions"][0]["probability"]


@pytest.fixture
def token_client(tiny_model_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(tiny_model_dir, api_token="s3cret-token")
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", "Basic czNjcmV0LXRva2Vu", "Bearer", "s3cret-token"]
)
def test_predict_refuses_missing_or_wrong_token_when_one_is_set(
    token_client: TestClient, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = token_client.post(
        "/v1/predict", files={"files": ("a.png", png_bytes(), "image/png")}, headers=headers
    )
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_predict_accepts_the_right_token(token_client: TestClient) -> None:
    response = token_client.post(
        "/v1/predict",
        files={"files": ("a.png", png_bytes(), "image/png")},
        headers={"Authorization": "Bearer s3cret-token"},
    )
    assert response.status_code == 200


def test_probes_and_model_need_no_token(token_client: TestClient) -> None:
    for path in ("/livez", "/readyz", "/v1/model", "/metrics"):
        assert token_client.get(path).status_code == 200, path
