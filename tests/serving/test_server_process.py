"""The real thing: `python -m classifier.serving` under uvicorn, as the container runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .conftest import png_bytes

READY_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    port: int


def start_server(model_dir: Path, log_path: Path, **env: str) -> Server:
    port = _free_port()
    environ = {
        **os.environ,
        "CLASSIFIER_MODEL_DIR": str(model_dir),
        "CLASSIFIER_HOST": "127.0.0.1",
        "CLASSIFIER_PORT": str(port),
        "CLASSIFIER_ALLOW_UNAUTHENTICATED": "true",
        **env,
    }
    # stdout is the JSON log; stderr gets only what native code (LiteRT) prints itself.
    with log_path.open("w") as log, log_path.with_suffix(".err").open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "classifier.serving"],
            env=environ,
            stdout=log,
            stderr=err,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    # Generous: on a machine crowded by other jobs, importing the service alone can take 30 s.
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"server exited {process.returncode}: {log_path.read_text()}"
                f"{log_path.with_suffix('.err').read_text()}"
            )
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return Server(process, url, port)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"server not ready in {READY_TIMEOUT_S} s: {log_path.read_text()}")


def stop(server: Server) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    s = start_server(tiny_model_dir, log_path, CLASSIFIER_MAX_UPLOAD_BYTES="65536")
    s.log_path = log_path  # type: ignore[attr-defined]
    yield s
    stop(s)


def test_server_process_never_loads_tensorflow(server: Server) -> None:
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "litert" in maps.lower()  # the check can see shared libraries at all
    assert "tensorflow" not in maps.lower()


def test_server_refuses_oversized_content_length_without_reading_the_body(
    server: Server,
) -> None:
    """Declare 1 GB, send 10 bytes: the 413 must come back at once, not after a 1 GB read."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 1000000000\r\n\r\n0123456789"
        )
        started = time.monotonic()
        reply = b""
        while b'"}' not in reply:  # headers and the JSON body may arrive in separate segments
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert time.monotonic() - started < 2
    reply_text = reply.decode("latin-1")
    assert reply_text.startswith("HTTP/1.1 413"), reply_text
    assert '"code":"payload_too_large"' in reply_text


def test_server_caps_chunked_bodies(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        # A well-formed part that only grows: the cap, not a parse error, must end it.
        yield (
            b"--b\r\n"
            b'Content-Disposition: form-data; name="files"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n"
        )
        for _ in range(100):
            yield b"\0" * 4096

    response = httpx.post(
        f"{server.url}/v1/predict",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
        timeout=10,
    )
    assert response.status_code == 413
    assert httpx.get(f"{server.url}/livez").status_code == 200


def test_server_writes_json_logs_with_request_ids(server: Server) -> None:
    response = httpx.post(
        f"{server.url}/v1/predict",
        files={"files": ("a.png", png_bytes(), "image/png")},
        headers={"X-Request-ID": "proc-test-1"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "proc-test-1"
    time.sleep(0.2)
    log_path: Path = server.log_path  # type: ignore[attr-defined]
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]  # all JSON
    access = [entry for entry in lines if entry.get("request_id") == "proc-test-1"]
    assert access
    assert access[-1]["route"] == "/v1/predict"
    assert access[-1]["status"] == 200
    assert any(entry.get("msg") == "model loaded" for entry in lines)


def test_sigterm_finishes_in_flight_requests_then_exits_zero(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # A 1 s batch wait keeps a lone request in flight long enough to SIGTERM mid-request.
    server = start_server(
        tiny_model_dir,
        tmp_path / "server.log",
        CLASSIFIER_MAX_BATCH_SIZE="16",
        CLASSIFIER_MAX_BATCH_WAIT_MS="1000",
    )
    result: dict[str, httpx.Response] = {}

    def send() -> None:
        result["response"] = httpx.post(
            f"{server.url}/v1/predict",
            files={"files": ("a.png", png_bytes(), "image/png")},
            timeout=30,
        )

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.4)  # the request is now waiting in the micro-batcher
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # New connections are refused while the in-flight request finishes.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/livez", timeout=1)
    sender.join(timeout=30)
    assert result["response"].status_code == 200
    assert len(result["response"].json()["predictions"]) == 1
    assert server.process.wait(timeout=30) == 0
    log = (tmp_path / "server.log").read_text()
    assert "service stopped" in log


def _start_and_fail(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "classifier.serving"],
        env={
            **os.environ,
            "CLASSIFIER_HOST": "127.0.0.1",
            "CLASSIFIER_PORT": "1",
            "CLASSIFIER_ALLOW_UNAUTHENTICATED": "true",
            **environ,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("present", "says"),
    [
        ((), "does not exist"),
        (("model_card.json",), "has no model.tflite: set CLASSIFIER_MODEL_DIR"),
        (("model.tflite",), "has no model_card.json: set CLASSIFIER_MODEL_DIR"),
    ],
)
def test_start_refuses_a_model_folder_without_both_files(
    tiny_model_dir: Path, tmp_path: Path, present: tuple[str, ...], says: str
) -> None:
    """Exit 1 at once with one line saying what is missing and which variable to fix, before
    listening (port 1 would need root: a server that got as far as binding would say so)."""
    model_dir = tmp_path / "model"
    if present:
        model_dir.mkdir()
    for name in present:
        (model_dir / name).write_bytes((tiny_model_dir / name).read_bytes())
    result = _start_and_fail({"CLASSIFIER_MODEL_DIR": str(model_dir)})
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1].startswith(f"cannot start: model folder {model_dir}")
    )
    assert says in result.stderr


def test_start_refuses_the_replaced_path_settings(tiny_model_dir: Path) -> None:
    result = _start_and_fail(
        {
            "CLASSIFIER_MODEL_DIR": str(tiny_model_dir),
            "CLASSIFIER_MODEL_PATH": str(tiny_model_dir / "model.tflite"),
        }
    )
    assert result.returncode == 1
    assert "no longer read: CLASSIFIER_MODEL_PATH (use CLASSIFIER_MODEL_DIR)" in result.stderr


def test_importing_the_entry_point_imports_no_web_stack() -> None:
    """No work at import time: the web stack is imported inside `main()`, with the garbage
    collector paused (start-up time, docs/serving.md "Start-up")."""
    code = (
        "import sys, classifier.serving.__main__\n"
        "heavy = [m for m in ('fastapi', 'uvicorn', 'numpy', 'PIL') if m in sys.modules]\n"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_main_turns_the_garbage_collector_back_on_when_start_up_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc

    from classifier.serving.__main__ import main

    monkeypatch.setenv("CLASSIFIER_MODEL_DIR", "/nonexistent/model-folder")
    monkeypatch.setenv("CLASSIFIER_ALLOW_UNAUTHENTICATED", "true")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # main() sets it; restored after the test
    with pytest.raises(SystemExit, match="cannot start: model folder /nonexistent"):
        main()
    assert gc.isenabled()


def test_ready_within_a_generous_bound_of_cpu_time(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A safety bound, not the figure (docs/benchmarks.md has that): the CPU the process used
    from spawn to its first 200 on /readyz. CPU time, unlike wall time, hardly grows when
    other jobs crowd the machine. About 1 s with bytecode and 3 to 4 s without (every module
    compiled at each start) on the 2-core development machine; importing TensorFlow alone
    would cost more than the bound."""
    server = start_server(tiny_model_dir, tmp_path / "server.log")
    try:
        fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    finally:
        assert stop(server) == 0
    assert cpu_s < 8.0
