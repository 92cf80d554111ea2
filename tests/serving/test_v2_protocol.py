"""The Open Inference Protocol (KServe v2 REST), spoken by Triton's own HTTP client against the
real server process, and its error cases: always a 4xx with `{"error": ...}`, never a 5xx."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from PIL import Image
from tritonclient.utils import InferenceServerException

from classifier.imaging import preprocess
from classifier.model_card import ModelCard

from .conftest import png_bytes
from .test_server_process import Server, start_server, stop


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tiny_model_dir, tmp_path_factory.mktemp("v2") / "server.log")
    yield s
    stop(s)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield c
    c.close()


IMAGES = [png_bytes(seed=s, size=(300, 300)) for s in range(3)]


def native(server: Server, images: list[bytes]) -> list[float]:
    files = [("files", (f"{i}.png", d, "image/png")) for i, d in enumerate(images)]
    response = httpx.post(f"{server.url}/v1/predict", files=files, timeout=30)
    assert response.status_code == 200, response.text
    return [p["probability"] for p in response.json()["predictions"]]


def image_input(images: list[bytes], *, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    if binary:
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    else:  # JSON carries strings: image files go base64-encoded
        encoded = [base64.b64encode(d) for d in images]
        tensor.set_data_from_numpy(np.array(encoded, dtype=np.object_), binary_data=False)
    return tensor


def rows(images: list[bytes], card: ModelCard) -> np.ndarray:
    size = (card.input.height, card.input.width)
    return np.stack(
        [preprocess(Image.open(io.BytesIO(d)), size, card.input.channel_names) for d in images]
    )


def test_health_and_metadata_name_the_model_after_its_card(
    client: triton.InferenceServerClient, card: ModelCard
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(card.name)
    assert client.is_model_ready(card.name, model_version=card.version)
    assert not client.is_model_ready("resnet50")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata(card.name)
    assert metadata["name"] == card.name
    assert metadata["versions"] == [card.version]
    shape = [-1, card.input.height, card.input.width, card.input.channels]
    assert {(t["name"], t["datatype"]) for t in metadata["inputs"]} == {
        ("image", "BYTES"),
        ("input", "FP32"),
    }
    assert next(t for t in metadata["inputs"] if t["name"] == "input")["shape"] == shape
    assert [t["name"] for t in metadata["outputs"]] == ["probability", "out_of_distribution"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_on_image_bytes_answers_what_predict_answers(
    client: triton.InferenceServerClient, server: Server, card: ModelCard, binary: bool
) -> None:
    outputs = [triton.InferRequestedOutput("probability", binary_data=binary)]
    result = client.infer(card.name, [image_input(IMAGES, binary=binary)], outputs=outputs)
    probability = result.as_numpy("probability")
    assert probability is not None
    assert probability.shape == (3, 1)
    assert probability.dtype == np.float32
    np.testing.assert_allclose(probability[:, 0], native(server, IMAGES), atol=1e-6)
    assert result.get_response()["model_version"] == card.version


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_on_preprocessed_rows_answers_what_predict_answers(
    client: triton.InferenceServerClient, server: Server, card: ModelCard, binary: bool
) -> None:
    batch = rows(IMAGES, card)
    tensor = triton.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    result = client.infer(card.name, [tensor])  # no outputs named: all of them, binary
    probability = result.as_numpy("probability")
    assert probability is not None
    np.testing.assert_allclose(probability[:, 0], native(server, IMAGES), atol=1e-6)
    flags = result.as_numpy("out_of_distribution")
    assert flags is not None
    assert flags.tolist() == [b"", b"", b""]  # 300 x 300 noise: like a cell in size and spread


def _refused(call: Callable[[], object]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_client_sees_the_protocol_errors(
    client: triton.InferenceServerClient, card: ModelCard
) -> None:
    """tritonclient reads `{"error": ...}` into its exception: the message reaches the caller."""
    inputs = [image_input(IMAGES[:1], binary=True)]
    unknown = _refused(lambda: client.infer("resnet50", inputs))
    assert unknown.status() == "404"
    assert f"this server serves {card.name!r}" in unknown.message()
    wrong_version = _refused(lambda: client.infer(card.name, inputs, model_version="0" * 7))
    assert wrong_version.status() == "404"
    flat = triton.InferInput("input", [1, card.input.height * card.input.width], "FP32")
    flat.set_data_from_numpy(np.zeros((1, card.input.height * card.input.width), np.float32))
    shape = _refused(lambda: client.infer(card.name, [flat]))
    assert shape.status() == "400"
    assert "expected [N, " in shape.message()
    as_int = triton.InferInput("input", [1, card.input.height, card.input.width, 1], "INT32")
    as_int.set_data_from_numpy(np.zeros((1, card.input.height, card.input.width, 1), np.int32))
    datatype = _refused(lambda: client.infer(card.name, [as_int]))
    assert datatype.status() == "400"
    assert "expected FP32" in datatype.message()
    not_an_image = _refused(
        lambda: client.infer(card.name, [image_input([b"GIF89a?"], binary=True)])
    )
    assert not_an_image.status() is not None
    assert 400 <= int(not_an_image.status()) < 500
    assert "'0'" in not_an_image.message()  # names the element


def _v2(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{path}", timeout=30, **kwargs)


H, W = 32, 32  # the tiny model's input


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({}, 400, "inputs: Field required"),
        ({"inputs": []}, 400, "inputs"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["eA=="]}]}, 400,
         "unknown input 'x'"),
        ({"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [0.5]}]}, 400,
         "expected BYTES"),
        ({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["eA=="]}]},
         400, "but 1 elements"),
        ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%"]}]}, 400,
         "not valid base64"),
        ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["eA=="]}]},
         415, "not an image"),
        ({"inputs": [{"name": "input", "shape": [1, H, W, 1], "datatype": "FP32",
                      "data": [0.5] * (H * W - 1)}]}, 400, "needs 1024"),
        ({"inputs": [{"name": "input", "shape": [1, H, W, 1], "datatype": "FP32",
                      "data": ["a"] * (H * W)}]}, 400, "must be numbers"),
        ({"inputs": [{"name": "input", "shape": [1, H, W, 1], "datatype": "FP32",
                      "data": [1e39] * (H * W)}]}, 400, "NaN or infinite"),
        ({"inputs": [{"name": "input", "shape": [0, H, W, 1], "datatype": "FP32", "data": []}]},
         400, "at least 1"),
        ({"inputs": [{"name": "input", "shape": [17, H, W, 1], "datatype": "FP32", "data": []}]},
         413, "CLASSIFIER_MAX_IMAGES_PER_REQUEST"),
        ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["eA=="]}],
          "outputs": [{"name": "logits"}]}, 400, "unknown output 'logits'"),
    ],
)  # fmt: skip
def test_bad_requests_get_a_4xx_with_the_protocol_error_body(
    server: Server, card: ModelCard, body: dict[str, object], status: int, says: str
) -> None:
    response = _v2(server, f"{card.name}/infer", json=body)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"]
    assert says in response.json()["error"]


def test_broken_binary_framing_is_a_400(server: Server, card: ModelCard) -> None:
    header = b'{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES",'
    header += b'"parameters":{"binary_data_size":12}}]}'
    cases = [
        (header + b"\x05\x00\x00\x00ab", len(header), "does not match"),  # 6 bytes, 12 declared
        (header + b"\x50\x00\x00\x00" + b"x" * 8, len(header), "shorter than"),
        (header, len(header) + 1, "not a length within"),
        (b"not json" + b"\0" * 4, 8, "not an inference request"),
    ]
    for body, length, says in cases:
        response = _v2(
            server,
            f"{card.name}/infer",
            content=body,
            headers={"Inference-Header-Content-Length": str(length)},
        )
        assert response.status_code == 400, response.text
        assert says in response.json()["error"]


def test_unknown_v2_paths_and_methods_use_the_protocol_error_body(
    server: Server, card: ModelCard
) -> None:
    assert httpx.get(f"{server.url}/v2/models/{card.name}/stats").json().keys() == {"error"}
    response = httpx.get(f"{server.url}/v2/models/{card.name}/infer")
    assert response.status_code == 405
    assert response.json().keys() == {"error"}
    assert httpx.get(f"{server.url}/v2/models/nope").status_code == 404


def test_infer_needs_the_token_when_one_is_set(tiny_model_dir: Path, card: ModelCard) -> None:
    """The protocol is no way around the bearer token."""
    from classifier.serving.app import create_app

    from .conftest import make_settings, wait_ready

    app = create_app(make_settings(tiny_model_dir, api_token="s3cret"))
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                        "data": [base64.b64encode(IMAGES[0]).decode()]}]}  # fmt: skip
    with TestClient(app) as c:
        wait_ready(c)
        refused = c.post(f"/v2/models/{card.name}/infer", json=body)
        assert refused.status_code == 401
        assert refused.json().keys() == {"error"}
        allowed = c.post(
            f"/v2/models/{card.name}/infer",
            json=body,
            headers={"Authorization": "Bearer s3cret"},
        )
        assert allowed.status_code == 200, allowed.text


def test_oversized_bodies_get_a_413_with_the_protocol_error_body(
    tiny_model_dir: Path, card: ModelCard
) -> None:
    """The body cap sits in the middleware, before routing: it still answers in v2's form."""
    from classifier.serving.app import create_app

    from .conftest import make_settings, wait_ready

    app = create_app(make_settings(tiny_model_dir, max_upload_bytes=2048))
    with TestClient(app) as c:
        wait_ready(c)
        response = c.post(f"/v2/models/{card.name}/infer", content=b"x" * 4096)
        assert response.status_code == 413
        assert list(response.json()) == ["error"]
        assert "CLASSIFIER_MAX_UPLOAD_BYTES" in response.json()["error"]
        native = c.post("/v1/predict", content=b"x" * 4096)
        assert native.json()["code"] == "payload_too_large"  # the native form is unchanged
