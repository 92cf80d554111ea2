"""Backpressure on a real server process: a bound on predict requests in flight (503
`overloaded` with Retry-After beyond it), a deadline per request (503 `deadline_exceeded`, and
the request's queued work dropped), probes that answer while the server is saturated.

Requests are held in flight by uploads that stall half-way (the server cannot finish them
before the rest of the body arrives), or by a 1 s micro-batch wait, so saturation does not
depend on how fast (or how busy) this machine is.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from classifier.serving import settings as settings_module
from classifier.serving.admission import (
    BASELINE_BYTES,
    LAG_SAMPLE_S,
    UNBOUNDED_DEFAULT,
    Admission,
    AdmissionGate,
    decode_pool_bytes,
    max_in_flight_for,
    request_bytes,
)
from classifier.serving.memory import cgroup_memory_limit
from classifier.serving.observability import Message, Metrics, Receive, Scope, Send
from classifier.serving.settings import MiB

from .conftest import make_settings, png_bytes
from .test_server_process import Server, start_server, stop


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def _predict(url: str, timeout: float = 30) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/predict",
        files={"files": ("a.png", png_bytes(), "image/png")},
        timeout=timeout,
    )


class StalledUpload:
    """A predict request whose sender stops half-way through a valid body: it holds a slot
    for as long as the test wants, whatever the machine's speed, and completes on `finish`."""

    def __init__(self, port: int) -> None:
        png = png_bytes()
        body = (
            b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--b--\r\n"
        )
        self.rest = body[len(body) // 2 :]
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )

    def reply(self) -> str:
        data = b""
        while chunk := self.sock.recv(65536):
            data += chunk
        self.sock.close()
        return data.decode("latin-1")

    def finish(self) -> str:
        self.sock.sendall(self.rest)
        return self.reply()


def _saturate(server: Server, n: int = 2) -> list[StalledUpload]:
    stalled = [StalledUpload(server.port) for _ in range(n)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until the server has admitted all of them
        metrics = httpx.get(f"{server.url}/metrics").text
        if _metric(metrics, "classifier_admission_in_flight") == n:
            return stalled
        time.sleep(0.05)
    raise AssertionError("the stalled uploads were not admitted")


@pytest.fixture(scope="module")
def slow_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two slots, a long deadline."""
    s = start_server(
        tiny_model_dir,
        tmp_path_factory.mktemp("admission") / "server.log",
        CLASSIFIER_MAX_IN_FLIGHT="2",
        CLASSIFIER_REQUEST_TIMEOUT_S="60",
    )
    yield s
    stop(s)


@pytest.fixture(scope="module")
def short_deadline(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A deadline (0.4 s) shorter than the batch wait (1 s): every predict times out."""
    s = start_server(
        tiny_model_dir,
        tmp_path_factory.mktemp("deadline") / "server.log",
        CLASSIFIER_MAX_IN_FLIGHT="2",
        CLASSIFIER_MAX_BATCH_SIZE="16",  # micro-batching on, whatever the default: rows wait in it
        CLASSIFIER_MAX_BATCH_WAIT_MS="1000",
        CLASSIFIER_REQUEST_TIMEOUT_S="0.4",
    )
    yield s
    stop(s)


def test_requests_beyond_the_limit_get_503_overloaded_at_once(slow_server: Server) -> None:
    stalled = _saturate(slow_server)
    refused = _predict(slow_server.url)
    assert refused.status_code == 503
    body = refused.json()
    assert body["code"] == "overloaded"
    assert "CLASSIFIER_MAX_IN_FLIGHT" in body["message"]
    assert refused.headers["retry-after"] == "1"
    assert body["request_id"] == refused.headers["x-request-id"]
    # The admitted ones are served in full once their bodies arrive: nothing lost in flight.
    for upload in stalled:
        reply = upload.finish()
        assert reply.startswith("HTTP/1.1 200"), reply
        assert '"predictions"' in reply
    # And the slots are free again.
    assert _predict(slow_server.url).status_code == 200
    metrics = httpx.get(f"{slow_server.url}/metrics").text
    assert _metric(metrics, 'classifier_errors_total{code="overloaded"}') == 1
    # Counted as refused (it never reached routing), not as an unknown path.
    refused_label = 'method="POST",route="refused",status="503"'
    assert _metric(metrics, f"classifier_http_requests_total{{{refused_label}}}") == 1
    assert _metric(metrics, "classifier_admission_limit") == 2
    assert _metric(metrics, "classifier_admission_in_flight") == 0


def test_v2_inference_beyond_the_limit_gets_the_protocols_error_body(slow_server: Server) -> None:
    stalled = _saturate(slow_server)
    refused = httpx.post(f"{slow_server.url}/v2/models/any/infer", json={"inputs": []}, timeout=30)
    assert refused.status_code == 503
    assert set(refused.json()) == {"error"}
    assert "CLASSIFIER_MAX_IN_FLIGHT" in refused.json()["error"]
    assert refused.headers["retry-after"] == "1"
    for upload in stalled:
        assert upload.finish().startswith("HTTP/1.1 200")


def test_probes_and_metrics_answer_while_saturated(slow_server: Server) -> None:
    """Readiness stays 200 when all slots are taken: see docs/serving.md ("Backpressure")."""
    stalled = _saturate(slow_server)
    try:
        for path in ("/readyz", "/livez", "/metrics", "/v1/model"):
            response = httpx.get(f"{slow_server.url}{path}", timeout=5)
            assert response.status_code == 200, path
        assert httpx.get(f"{slow_server.url}/readyz").json()["ready"] is True
        still = httpx.get(f"{slow_server.url}/metrics").text
        assert _metric(still, "classifier_admission_in_flight") == 2  # still saturated
    finally:
        for upload in stalled:
            assert upload.finish().startswith("HTTP/1.1 200")


def test_a_request_past_its_deadline_gets_503_and_never_reaches_the_model(
    short_deadline: Server,
) -> None:
    started = time.monotonic()
    response = _predict(short_deadline.url)
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "deadline_exceeded"
    assert "CLASSIFIER_REQUEST_TIMEOUT_S" in body["message"]
    assert response.headers["retry-after"] == "1"
    assert elapsed >= 0.4, elapsed  # and the 1 s batch wait did not end it: 503, not 200
    time.sleep(1.5)  # past the batch wait: had the row stayed queued, the model would have run
    metrics = httpx.get(f"{short_deadline.url}/metrics").text
    assert _metric(metrics, "classifier_inference_batch_size_count") == 0
    assert _metric(metrics, "classifier_admission_in_flight") == 0
    assert _metric(metrics, 'classifier_errors_total{code="deadline_exceeded"}') >= 1


def test_a_slow_upload_cannot_hold_a_slot_past_the_deadline(short_deadline: Server) -> None:
    """Two senders that stall mid-body (slowloris) lose their slots at the deadline."""
    stalled = [StalledUpload(short_deadline.port) for _ in range(2)]
    for upload in stalled:
        reply = upload.reply()
        assert reply.startswith("HTTP/1.1 503"), reply
        assert '"code":"deadline_exceeded"' in reply
    metrics = httpx.get(f"{short_deadline.url}/metrics").text
    assert _metric(metrics, "classifier_admission_in_flight") == 0
    assert _predict(short_deadline.url).json()["code"] == "deadline_exceeded"  # admitted again


def test_the_limit_is_sized_from_the_memory_limit(tiny_model_dir: Path) -> None:
    settings = make_settings(tiny_model_dir, memory_limit_mib=512, inference_threads=2)
    budget = 512 * MiB - BASELINE_BYTES - decode_pool_bytes(settings)
    assert max_in_flight_for(settings) == budget // request_bytes(settings)
    # A larger body limit or pixel limit leaves room for fewer requests.
    bigger = make_settings(
        tiny_model_dir, memory_limit_mib=512, inference_threads=2, max_upload_bytes=16 * MiB
    )
    assert max_in_flight_for(bigger) < max_in_flight_for(settings)
    # An explicit setting wins; never below 1.
    assert max_in_flight_for(make_settings(tiny_model_dir, max_in_flight=3)) == 3
    assert max_in_flight_for(make_settings(tiny_model_dir, memory_limit_mib=64)) == 1


def test_the_memory_limit_comes_from_the_cgroup_unless_set(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_module, "cgroup_memory_limit", lambda: None)
    assert max_in_flight_for(make_settings(tiny_model_dir)) == UNBOUNDED_DEFAULT
    monkeypatch.setattr(settings_module, "cgroup_memory_limit", lambda: 384 * MiB)
    from_cgroup = make_settings(tiny_model_dir)
    assert from_cgroup.memory_limit_bytes == 384 * MiB
    assert max_in_flight_for(from_cgroup) == max_in_flight_for(
        make_settings(tiny_model_dir, memory_limit_mib=384)
    )


def test_cgroup_memory_limit_reads_v2_and_v1(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("402653184\n")
    assert cgroup_memory_limit(tmp_path) == 384 * MiB
    (tmp_path / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("536870912\n")
    assert cgroup_memory_limit(v1) == 512 * MiB
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_memory_limit(v1) is None
    assert cgroup_memory_limit(tmp_path / "absent") is None


# ---------------------------------------------------------------------------------------------
# Shedding on event-loop lag (the gate and the lag watcher, on a real event loop)


def test_the_lag_watcher_sees_a_stalled_event_loop() -> None:
    async def scenario() -> tuple[float, float]:
        admission = Admission(limit=2, timeout_s=10, registry=CollectorRegistry(), max_lag_s=0.1)
        watcher = asyncio.create_task(admission.watch_lag())
        await asyncio.sleep(3 * LAG_SAMPLE_S)
        calm = admission.lag_s
        time.sleep(0.4)  # noqa: ASYNC251  (the point: the loop stalls, no timer can fire)
        await asyncio.sleep(0.01)  # the watcher's late wake-up runs, and measures the stall
        stalled = admission.lag_s
        watcher.cancel()
        return calm, stalled

    calm, stalled = asyncio.run(scenario())
    assert calm < 0.1
    assert stalled >= 0.3


def _gate_answer(gate: AdmissionGate, path: str = "/v1/predict") -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    asyncio.run(gate(scope, receive, send))
    return sent


def test_the_gate_refuses_while_the_loop_lags_and_admits_once_it_caught_up() -> None:
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(str(scope["path"]))

    metrics = Metrics()
    admission = Admission(limit=2, timeout_s=10, registry=metrics.registry, max_lag_s=0.25)
    gate = AdmissionGate(app, admission=admission, metrics=metrics)
    admission.lag_s = 0.3
    refused = _gate_answer(gate)
    assert refused[0]["status"] == 503
    headers = dict(refused[0]["headers"])
    assert headers[b"retry-after"] == b"1"
    body = json.loads(refused[1]["body"])
    assert body["code"] == "overloaded"
    assert "CLASSIFIER_MAX_LOOP_LAG_MS" in body["message"]
    assert body["request_id"] == headers[b"x-request-id"].decode()
    v2 = _gate_answer(gate, "/v2/models/m/infer")
    assert set(json.loads(v2[1]["body"])) == {"error"}
    assert reached == []
    assert admission.in_flight == 0
    # A stall in progress: the watcher's next sample is overdue by more than the limit.
    admission.lag_s = 0.0
    admission._next_sample = time.monotonic() - 0.3
    assert _gate_answer(gate)[0]["status"] == 503
    admission._next_sample = time.monotonic() + LAG_SAMPLE_S
    admission.lag_s = 0.01
    assert _gate_answer(gate) == []  # the app answered nothing; it was reached
    assert reached == ["/v1/predict"]
    assert admission.in_flight == 0  # the slot came back
    text = generate_latest(metrics.registry).decode()
    assert 'classifier_http_requests_total{method="POST",route="refused",status="503"} 3.0' in text
    assert 'classifier_errors_total{code="overloaded"} 3.0' in text
