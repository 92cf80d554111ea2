"""Metrics, request ids and JSON logs."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from fastapi.testclient import TestClient

from classifier.model_card import ModelCard
from classifier.serving.observability import JSONFormatter

from .conftest import png_bytes


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_metrics_count_requests_latency_batches_and_model_info(
    client: TestClient, card: ModelCard
) -> None:
    files = [("files", (f"{i}.png", png_bytes(seed=i), "image/png")) for i in range(3)]
    assert client.post("/v1/predict", files=files).status_code == 200
    client.post("/v1/predict", content=b"x", headers={"Content-Type": "text/plain"})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    ok = 'method="POST",route="/v1/predict",status="200"'
    assert _metric(text, f"classifier_http_requests_total{{{ok}}}") == 1
    assert _metric(text, f"classifier_http_request_duration_seconds_count{{{ok}}}") == 1
    assert 'route="/v1/predict",status="415"' in text
    assert _metric(text, "classifier_inference_batch_size_sum") >= 3
    assert _metric(text, "classifier_inference_duration_seconds_count") >= 1
    assert _metric(text, "classifier_request_images_sum") == 3
    assert 'classifier_model_info{data_hash="' in text
    assert f'version="{card.version}"' in text
    assert _metric(text, "classifier_model_ready") == 1
    assert _metric(text, "process_resident_memory_bytes") > 0
    assert 'classifier_errors_total{code="unsupported_media_type"}' in text


def test_metrics_use_route_templates_not_raw_paths(client: TestClient) -> None:
    client.get("/does-not-exist-123")
    text = client.get("/metrics").text
    assert "does-not-exist-123" not in text
    assert 'route="unmatched",status="404"' in text


def test_request_id_is_echoed_when_given(client: TestClient) -> None:
    response = client.get("/livez", headers={"X-Request-ID": "abc-123.x"})
    assert response.headers["x-request-id"] == "abc-123.x"


@pytest.mark.parametrize("given", [None, "", "bad id with spaces", "x" * 200, 'a"b'])
def test_request_id_is_generated_when_missing_or_unsafe(
    client: TestClient, given: str | None
) -> None:
    headers = {"X-Request-ID": given} if given is not None else {}
    response = client.get("/livez", headers=headers)
    generated = response.headers["x-request-id"]
    assert len(generated) == 32
    assert generated != given


def test_access_log_is_json_with_request_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="classifier.serving.access"):
        client.post(
            "/v1/predict",
            files={"files": ("a.png", png_bytes(), "image/png")},
            headers={"X-Request-ID": "req-42"},
        )
    [record] = [r for r in caplog.records if r.name == "classifier.serving.access"]
    line = json.loads(JSONFormatter().format(record))
    assert line["request_id"] == "req-42"
    assert line["route"] == "/v1/predict"
    assert line["status"] == 200
    assert line["method"] == "POST"
    assert line["duration_ms"] > 0
    assert line["level"] == "info"


def test_json_formatter_includes_extras_and_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("t").makeRecord(
            "t", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info(), extra={"k": 1}
        )
    line = json.loads(JSONFormatter().format(record))
    assert line["msg"] == "failed x"
    assert line["k"] == 1
    assert "ValueError: boom" in line["exc"]
