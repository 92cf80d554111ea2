"""The inference routes served by `direct.DirectRoutes`, and FastAPI's own path for the same
routes answering alike (the direct layer must change the cost, never the answer)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import MutableMapping
from typing import Any

import pytest
from bench.loop_cost import multipart, predict_scope
from fastapi.testclient import TestClient

from classifier.serving import inference
from classifier.serving.app import create_app
from classifier.serving.direct import DirectRoutes
from classifier.serving.settings import Settings

from .conftest import png_bytes, wait_ready

Message = MutableMapping[str, Any]


def _direct_layer(app: Any) -> DirectRoutes:
    layer = app.middleware_stack or app.build_middleware_stack()
    while not isinstance(layer, DirectRoutes):
        layer = getattr(layer, "app", None)
        assert layer is not None, "no DirectRoutes in the app's middleware stack"
    return layer


def _call(
    app: Any, asgi: Any, body: bytes, content_type: bytes, path: str = "/v1/predict"
) -> tuple[int, dict[str, Any]]:
    """One POST to `path` straight into `asgi` (a layer of `app`'s stack)."""
    scope = {**predict_scope(content_type, len(body), path), "app": app}
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    async def run() -> None:
        await asgi(scope, receive, send)

    asyncio.run_coroutine_threadsafe(run(), _loop_of(app)).result(timeout=30)
    status = sent[0]["status"]
    return status, json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def _loop_of(app: Any) -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop = app.state.test_loop
    return loop


@pytest.fixture
def served(settings: Settings) -> Any:
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        # The batcher and the model's executor belong to the TestClient's event loop.
        app.state.test_loop = client.portal.call(asyncio.get_running_loop)  # type: ignore[union-attr]
        yield app, client


def test_the_inference_routes_are_served_by_the_direct_layer(served: Any) -> None:
    app, _client = served
    routes = {(m, r.path) for r in _direct_layer(app).routes for m in r.methods}
    assert routes == {
        ("POST", "/v1/predict"),
        ("POST", "/v2/models/{model_name}/infer"),
        ("POST", "/v2/models/{model_name}/versions/{model_version}/infer"),
    }


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (png_bytes(size=(40, 40)), None),  # an answer
        (b"not an image at all", None),  # 415: unsupported image
        (png_bytes(size=(40, 40))[:60], None),  # 422: truncated
        (b"{}", b"application/json"),  # 422: invalid JSON request
        (b"x", b"text/plain"),  # 415: unsupported media type
    ],
)
def test_direct_and_fastapi_paths_answer_alike(
    served: Any, data: bytes, content_type: bytes | None
) -> None:
    app, _client = served
    direct = _direct_layer(app)
    body, kind = multipart(data) if content_type is None else (data, content_type)
    fast = _call(app, direct, body, kind)
    slow = _call(app, direct.app, body, kind)  # FastAPI's exception layer and router
    assert fast == slow
    if fast[0] != 200:
        assert fast[1]["code"] != "internal_error", fast


def test_unexpected_failure_is_our_500_body_not_a_crash(
    served: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _app, client = served

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("classifier.serving.routes.predict.predict_images", broken)
    response = client.post("/v1/predict", files={"files": ("x.png", png_bytes(), "image/png")})
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "a bug" not in response.text
    assert response.headers["x-request-id"] == response.json()["request_id"]
    # and the server still answers
    monkeypatch.setattr(
        "classifier.serving.routes.predict.predict_images", inference.predict_images
    )
    ok = client.post("/v1/predict", files={"files": ("x.png", png_bytes(), "image/png")})
    assert ok.status_code == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_fall_through_to_fastapi(served: Any, method: str) -> None:
    _app, client = served
    response = client.request(method, "/v1/predict")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def _infer_body(name: str, datatype: str, shape: list[int], data: list[Any]) -> bytes:
    return json.dumps(
        {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}
    ).encode()


PNG_B64 = base64.b64encode(png_bytes(size=(40, 40))).decode()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # an answer, on the model's path and on its version's
        ("/v2/models/{name}/infer", _infer_body("image", "BYTES", [1], [PNG_B64])),
        (
            "/v2/models/{name}/versions/{version}/infer",
            _infer_body("image", "BYTES", [1], [PNG_B64]),
        ),
        # 404: another model, another version
        ("/v2/models/other/infer", _infer_body("image", "BYTES", [1], [PNG_B64])),
        (
            "/v2/models/{name}/versions/0/infer",
            _infer_body("image", "BYTES", [1], [PNG_B64]),
        ),
        # 400: not the protocol, the wrong datatype, the wrong shape
        ("/v2/models/{name}/infer", b"{}"),
        ("/v2/models/{name}/infer", _infer_body("image", "FP32", [1], [0.5])),
        ("/v2/models/{name}/infer", _infer_body("input", "FP32", [1, 3], [0, 0, 0])),
        # 415: bytes that are no image
        ("/v2/models/{name}/infer", _infer_body("image", "BYTES", [1], ["eA=="])),
    ],
)
def test_direct_and_fastapi_paths_answer_protocol_requests_alike(
    served: Any, path: str, body: bytes
) -> None:
    app, client = served
    card = client.get("/v1/model").json()
    path = path.format(name=card["name"], version=card["version"])
    direct = _direct_layer(app)
    fast = _call(app, direct, body, b"application/json", path)
    slow = _call(app, direct.app, body, b"application/json", path)
    assert fast == slow
    assert fast[0] in {200, 400, 404, 415}, fast
    if fast[0] == 200:
        assert fast[1]["model_name"] == card["name"]
    else:
        assert set(fast[1]) == {"error"}, fast  # the protocol's error body


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_other_methods_on_infer_fall_through_to_fastapi(served: Any, method: str) -> None:
    _app, client = served
    name = client.get("/v1/model").json()["name"]
    response = client.request(method, f"/v2/models/{name}/infer")
    assert response.status_code == 405
    assert set(response.json()) == {"error"}
