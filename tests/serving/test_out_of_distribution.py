"""Inputs unlike the training images: flagged with reasons (default) or refused with a 422
(CLASSIFIER_OOD_ACTION=refuse), on the native API and the Open Inference Protocol alike, and
counted by reason in /metrics. The thresholds pass every ELPV cell."""

from __future__ import annotations

import base64
import importlib.resources
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image

from classifier.imaging import preprocess
from classifier.model_card import ModelCard
from classifier.serving import ood
from classifier.serving.app import create_app
from classifier.serving.settings import Settings

from .conftest import make_settings, png_bytes, wait_ready

ROOT = Path(__file__).resolve().parents[2]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


STRIP = png_bytes(size=(5000, 1))  # 1 px high, 5000 wide, not uniform
PIXEL = _png(Image.new("L", (1, 1), 200))
BLANK = _png(Image.new("L", (300, 300), 128))
CELL = png_bytes(size=(300, 300))  # textured, square, the size of an ELPV cell
IMAGES = {"strip.png": STRIP, "pixel.png": PIXEL, "blank.png": BLANK, "cell.png": CELL}
EXPECTED = {
    "strip.png": ["small_image", "aspect_ratio"],
    "pixel.png": ["small_image", "near_constant"],
    "blank.png": ["near_constant"],
    "cell.png": [],
}


@pytest.fixture(params=[1, 16], ids=["batching-off", "batching-on"])
def batch_size(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def _client(tiny_model_dir: Path, **overrides: object) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tiny_model_dir, **overrides))) as c:
        wait_ready(c)
        yield c


@pytest.fixture
def flagging(tiny_model_dir: Path, batch_size: int) -> Iterator[TestClient]:
    yield from _client(tiny_model_dir, max_batch_size=batch_size)


@pytest.fixture
def refusing(tiny_model_dir: Path, batch_size: int) -> Iterator[TestClient]:
    yield from _client(tiny_model_dir, max_batch_size=batch_size, ood_action="refuse")


def _counts(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    found = re.findall(r'classifier_out_of_distribution_total\{reason="(\w+)"\} (\S+)', text)
    return {reason: float(value) for reason, value in found}


def _multipart(names: list[str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, IMAGES[name], "image/png")) for name in names]


def _v2_body(names: list[str]) -> dict[str, object]:
    data = [base64.b64encode(IMAGES[name]).decode() for name in names]
    return {"inputs": [{"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data}]}


def test_predict_flags_each_image_with_its_reasons_and_counts_them(flagging: TestClient) -> None:
    assert _counts(flagging) == dict.fromkeys(ood.REASONS, 0.0)  # every series from the start
    response = flagging.post("/v1/predict", files=_multipart(list(IMAGES)))
    assert response.status_code == 200, response.text
    for prediction in response.json()["predictions"]:
        flags = prediction["out_of_distribution"]
        assert [f["reason"] for f in flags] == EXPECTED[prediction["image"]]
        assert all(f["message"] for f in flags)
        assert 0.0 <= prediction["probability"] <= 1.0  # flagged, still answered
    assert _counts(flagging) == {
        "small_image": 2.0,
        "aspect_ratio": 1.0,
        "near_constant": 2.0,
        "value_range": 0.0,
    }


def test_flag_messages_say_what_was_measured(flagging: TestClient) -> None:
    [strip] = flagging.post("/v1/predict", files=_multipart(["strip.png"])).json()["predictions"]
    messages = {f["reason"]: f["message"] for f in strip["out_of_distribution"]}
    assert "5000x1" in messages["small_image"]
    assert "aspect ratio 5000.00, over 1.5" in messages["aspect_ratio"]


def test_predict_refuses_out_of_distribution_images_with_a_422(refusing: TestClient) -> None:
    response = refusing.post("/v1/predict", files=_multipart(["cell.png", "blank.png"]))
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "out_of_distribution"
    assert body["image"] == "blank.png"
    assert "near_constant" in body["message"]
    assert "CLASSIFIER_OOD_ACTION=flag" in body["message"]
    assert _counts(refusing)["near_constant"] == 1.0  # refused inputs are counted too
    accepted = refusing.post("/v1/predict", files=_multipart(["cell.png"]))
    assert accepted.status_code == 200
    assert accepted.json()["predictions"][0]["out_of_distribution"] == []


def test_infer_flags_in_its_out_of_distribution_output(
    flagging: TestClient, card: ModelCard
) -> None:
    response = flagging.post(f"/v2/models/{card.name}/infer", json=_v2_body(list(IMAGES)))
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["out_of_distribution"]["data"] == [",".join(EXPECTED[n]) for n in IMAGES]
    assert outputs["probability"]["shape"] == [4, 1]
    assert _counts(flagging)["small_image"] == 2.0


def test_infer_flags_tensors_outside_the_preprocessing_range(
    flagging: TestClient, card: ModelCard
) -> None:
    size = (card.input.height, card.input.width)
    good = preprocess(Image.open(io.BytesIO(CELL)), size, card.input.channel_names)
    rows = np.stack([good, good * 3.0, np.full_like(good, 0.5)])
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.reshape(-1).tolist(),
            }
        ]
    }
    response = flagging.post(f"/v2/models/{card.name}/infer", json=body)
    assert response.status_code == 200, response.text
    [flags] = [o["data"] for o in response.json()["outputs"] if o["name"] == "out_of_distribution"]
    assert flags == ["", "value_range", "near_constant"]


def test_infer_refuses_with_a_422_and_the_protocol_error_body(
    refusing: TestClient, card: ModelCard
) -> None:
    response = refusing.post(f"/v2/models/{card.name}/infer", json=_v2_body(["strip.png"]))
    assert response.status_code == 422
    assert list(response.json()) == ["error"]
    assert "image '0' is unlike the images the model was trained on" in response.json()["error"]
    assert "aspect_ratio" in response.json()["error"]
    fine = refusing.post(f"/v2/models/{card.name}/infer", json=_v2_body(["cell.png"]))
    assert fine.status_code == 200, fine.text


def test_the_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="ood_action"):
        Settings(ood_action="warn")  # type: ignore[arg-type]


def test_no_training_image_is_flagged() -> None:
    """The thresholds come from the data: every ELPV cell passes every test, at the pipeline's
    input size. (Every 4th image keeps this quick; they are all alike in size.)"""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    side = int(params["base"]["image_size"])
    defaults = Settings(allow_unauthenticated=True)
    limits = ood.Limits(
        input_size=(side, side),
        max_aspect_ratio=defaults.ood_max_aspect_ratio,
        min_pixel_std=defaults.ood_min_pixel_std,
    )
    root = Path(str(importlib.resources.files("elpv_dataset") / "data"))
    files = sorted(root.rglob("*.png"))
    assert len(files) > 2000
    for path in files[::4]:
        with Image.open(path) as image:
            flags = ood.check_size(*image.size, limits)
            flags += ood.check_row(preprocess(image, (side, side), ("gray",)), limits)
        assert flags == [], path.name
