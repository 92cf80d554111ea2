"""The serving image as pushed to the local registry: contents, identity, behaviour.

Marker `container`: run by `make test-container` (part of `make test`), which builds and pushes
the image with the tiny test model first.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from classifier.imaging import preprocess
from classifier.model_card import HEADLINE_METRICS, ModelCard

from .conftest import (
    LOCKED_DOWN,
    ROOT,
    TEST_MODEL_DIR,
    Container,
    PushedImage,
    docker,
    run_in_image,
    start_container,
)

pytestmark = pytest.mark.container

SHA_TAG = re.compile(r"^[0-9a-f]{40}(-dirty)?$")


def elpv_images(count: int) -> list[Path]:
    """Real ELPV cells from the installed elpv-dataset wheel, mono and poly."""
    import elpv_dataset

    images = sorted((Path(elpv_dataset.__file__).parent / "data" / "images").glob("*.png"))
    assert len(images) > 2000, "elpv-dataset is installed without its images"
    # Spread over the dataset: the first cells are all mono, the last all poly.
    return [images[i * len(images) // count] for i in range(count)]


def host_probabilities(paths: list[Path]) -> list[float]:
    """The in-process answer: same .tflite, same preprocessing, LiteRT on the host."""
    from ai_edge_litert.interpreter import Interpreter

    card = ModelCard.load(TEST_MODEL_DIR / "model_card.json")
    size = (card.input.height, card.input.width)
    batch = np.stack([preprocess(Image.open(p), size) for p in paths]).astype(np.float32)
    interpreter = Interpreter(model_path=str(TEST_MODEL_DIR / "model.tflite"), num_threads=1)
    input_index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(input_index, list(batch.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_index, batch)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return [float(v) for v in np.asarray(out).reshape(-1)]


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: image/png\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post_predict(base_url: str, files: list[tuple[str, bytes]]) -> dict[str, Any]:
    body, content_type = multipart(files)
    request = urllib.request.Request(
        f"{base_url}/v1/predict", data=body, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        result: dict[str, Any] = json.loads(response.read())
        return result


# ---------------------------------------------------------------------------------------------
# Identity: what `make push` recorded and what the image says about itself


def test_push_records_sha_tag_and_registry_digest(pushed_image: PushedImage) -> None:
    assert pushed_image.repository.startswith("127.0.0.1:5000/")
    assert SHA_TAG.match(pushed_image.tag), pushed_image.tag
    # The tag names a commit of this repository (HEAD when built; others may have landed since).
    commit = pushed_image.tag.removesuffix("-dirty")
    kind = subprocess.run(
        ["git", "cat-file", "-t", commit], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    assert kind == "commit", f"tag {pushed_image.tag} is not a commit of this repository"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", pushed_image.digest)
    # The registry serves the same manifest under the tag as under the digest.
    docker("pull", f"{pushed_image.repository}:{pushed_image.tag}")
    repo_digests = docker(
        "image", "inspect", "--format", "{{json .RepoDigests}}", pushed_image.by_digest
    ).stdout
    assert pushed_image.by_digest in json.loads(repo_digests)


def test_labels_carry_revision_and_model_card(
    image_config: dict[str, Any], pushed_image: PushedImage
) -> None:
    labels: dict[str, str] = image_config["Labels"]
    card = ModelCard.load(TEST_MODEL_DIR / "model_card.json")
    for key in ("source", "revision", "created", "version", "title", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}", "unknown") != "unknown", key
    assert labels["org.opencontainers.image.revision"] == pushed_image.tag.removesuffix("-dirty")
    assert labels["io.elpv.model.data-hash"] == card.data_hash
    assert labels["io.elpv.model.version"] == card.version
    for metric in HEADLINE_METRICS:
        label = labels[f"io.elpv.model.{metric.replace('_', '-')}"]
        assert float(label) == pytest.approx(card.metrics[metric], abs=5e-5)


def test_image_runs_as_fixed_non_root_user_with_exec_entrypoint(
    image_config: dict[str, Any], pushed_image: PushedImage
) -> None:
    assert image_config["User"] == "10001:10001"
    assert image_config["Entrypoint"] == ["/opt/venv/bin/python", "-m", "classifier.serving"]
    ids = run_in_image(pushed_image, "-c", "import os; print(os.getuid(), os.getgid())")
    assert ids.split() == ["10001", "10001"]


def test_image_names_its_model_folder_once(
    image_config: dict[str, Any], pushed_image: PushedImage
) -> None:
    env = dict(item.split("=", 1) for item in image_config["Env"])
    assert env["CLASSIFIER_MODEL_DIR"] == "/opt/model"
    assert "CLASSIFIER_MODEL_PATH" not in env
    assert "CLASSIFIER_MODEL_CARD_PATH" not in env
    # A wrong folder stops the start at once with the reason, not as a pod that never gets ready.
    wrong = docker(
        "run", "--rm", *LOCKED_DOWN, "--env", "CLASSIFIER_MODEL_DIR=/opt/nowhere",
        "--env", "CLASSIFIER_ALLOW_UNAUTHENTICATED=true", pushed_image.by_digest,
        check=False, timeout=120,
    )  # fmt: skip
    assert wrong.returncode == 1
    assert "model folder /opt/nowhere does not exist: set CLASSIFIER_MODEL_DIR" in wrong.stderr


# ---------------------------------------------------------------------------------------------
# Contents: only the service, its dependencies and the model


def test_image_has_no_tensorflow_pipeline_delivery_code_or_installer(
    pushed_image: PushedImage,
) -> None:
    script = (
        "import importlib.util, json\n"
        "names = ['tensorflow', 'keras', 'tf_keras', 'dvc', 'gitops', 'classifier.pipeline',"
        " 'pip', 'setuptools']\n"
        "print(json.dumps({n: importlib.util.find_spec(n.split('.')[0]) is not None"
        " and (importlib.util.find_spec(n) is not None) for n in names}))"
    )
    found = json.loads(run_in_image(pushed_image, "-c", script))
    # python:3.11-slim ships pip/setuptools in /usr/local outside the venv; the venv has none.
    venv_only = {k: v for k, v in found.items() if k not in {"pip", "setuptools"}}
    assert not any(venv_only.values()), found
    listing = run_in_image(
        pushed_image,
        "-c",
        "import os\n"
        "for d, subdirs, files in os.walk('/'):\n"
        "    if d.startswith(('/proc', '/sys', '/dev')):\n"
        "        subdirs[:] = []; continue\n"
        "    for f in files + subdirs: print(os.path.join(d, f))",
    ).splitlines()
    # LiteRT's own files mention tensorflow_lite; TensorFlow itself is a package or a library.
    assert not [
        p
        for p in listing
        if re.match(r"(tensorflow|tf_keras|keras)([-_][\w.]*\.dist-info)?$", Path(p).name)
        or Path(p).name.startswith("libtensorflow")
    ]
    site_packages = "/opt/venv/lib/python3.11/site-packages/"
    assert not [p for p in listing if p.startswith(site_packages + "pip")]
    compilers = {"gcc", "cc", "g++", "c++", "clang", "make"}
    assert not [p for p in listing if Path(p).name in compilers and "/bin/" in p]
    assert not [p for p in listing if "/.cache/pip" in p or p.endswith(".whl")]
    assert "/opt/model/model.tflite" in listing
    assert "/opt/model/model_card.json" in listing


def test_baked_model_is_the_test_model(pushed_image: PushedImage) -> None:
    in_image = run_in_image(
        pushed_image,
        "-c",
        "import hashlib, pathlib; "
        "print(hashlib.sha256(pathlib.Path('/opt/model/model.tflite').read_bytes()).hexdigest())",
    ).strip()
    assert in_image == hashlib.sha256((TEST_MODEL_DIR / "model.tflite").read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Behaviour: locked down (read-only root, tmpfs /tmp, no capabilities), as Kubernetes runs it


def test_container_becomes_ready_and_serves_its_card(container: Container) -> None:
    assert container.ready_after_s < 15, f"ready after {container.ready_after_s:.1f}s"
    with urllib.request.urlopen(f"{container.base_url}/v1/model", timeout=5) as response:
        served = json.loads(response.read())
    baked = json.loads((TEST_MODEL_DIR / "model_card.json").read_text(encoding="utf-8"))
    assert served["version"] == baked["version"]
    assert served["data_hash"] == baked["data_hash"]


def test_image_refuses_to_start_without_a_token(pushed_image: PushedImage) -> None:
    """No CLASSIFIER_API_TOKEN and no CLASSIFIER_ALLOW_UNAUTHENTICATED: exit 1, one clear line."""
    result = docker("run", "--rm", *LOCKED_DOWN, pushed_image.by_digest, check=False, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "invalid settings: no CLASSIFIER_API_TOKEN" in result.stderr


def test_root_filesystem_is_read_only_and_tmp_writable(container: Container) -> None:
    probe = (
        "import os, tempfile\n"
        "try:\n"
        "    open('/opt/app/probe', 'w')\n"
        "    print('root-writable')\n"
        "except OSError as e:\n"
        "    print('root-readonly', e.errno)\n"
        "with tempfile.NamedTemporaryFile() as f: print('tmp-ok', f.name)"
    )
    out = docker("exec", container.id, "/opt/venv/bin/python", "-c", probe).stdout
    assert "root-readonly" in out
    assert "tmp-ok /tmp/" in out


def test_predict_real_elpv_images_matches_in_process_model(container: Container) -> None:
    paths = elpv_images(6)
    expected = host_probabilities(paths)
    card = ModelCard.load(TEST_MODEL_DIR / "model_card.json")
    result = post_predict(container.base_url, [(p.name, p.read_bytes()) for p in paths])
    got = {p["image"]: p for p in result["predictions"]}
    assert list(got) == [p.name for p in paths]
    for path, probability in zip(paths, expected, strict=True):
        prediction = got[path.name]
        assert prediction["probability"] == pytest.approx(probability, abs=1e-5), path.name
        expected_label = card.labels[1] if probability > card.threshold else card.labels[0]
        assert prediction["label"] == expected_label, path.name
    # The comparison only means something if the model's answers differ between images.
    assert max(expected) - min(expected) > 1e-3, expected


# ---------------------------------------------------------------------------------------------
# SIGTERM under load: every in-flight request answered, exit code 0


def _open_half_sent_request(port: int, body: bytes, content_type: str) -> socket.socket:
    """Send the headers and half the body: the server has the request in flight (uvicorn
    created its request cycle) but cannot answer until the rest arrives."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def _finish_and_read(sock: socket.socket, body: bytes) -> int:
    sock.sendall(body[len(body) // 2 :])
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    status_line = b"".join(chunks).split(b"\r\n", 1)[0].decode()
    return int(status_line.split()[1])


def test_sigterm_under_load_answers_in_flight_requests_and_exits_zero(
    pushed_image: PushedImage,
) -> None:
    running = start_container(pushed_image)
    try:
        port = int(running.base_url.rsplit(":", 1)[1])
        image = elpv_images(1)[0]
        body, content_type = multipart([(image.name, image.read_bytes())])

        stop = threading.Event()
        outcomes: list[tuple[str, float]] = []  # ("200" | "http-<code>" | "refused:<exc>", t)

        def load_worker() -> None:
            # Bounded: at most 400 requests per worker, and the test stops it within seconds.
            for _ in range(400):
                if stop.is_set():
                    return
                connection = HTTPConnection("127.0.0.1", port, timeout=30)
                try:
                    connection.request(
                        "POST",
                        "/v1/predict",
                        body=body,
                        headers={"Content-Type": content_type, "Connection": "close"},
                    )
                    response = connection.getresponse()
                    response.read()
                    outcome = "200" if response.status == 200 else f"http-{response.status}"
                except (ConnectionError, HTTPException, OSError) as exc:
                    # After SIGTERM the server stops accepting: a refused or closed connection
                    # never reached the app. Recorded, not an in-flight loss.
                    outcome = f"refused:{type(exc).__name__}"
                finally:
                    connection.close()
                outcomes.append((outcome, time.monotonic()))

        with ThreadPoolExecutor(max_workers=6) as pool:
            workers = [pool.submit(load_worker) for _ in range(6)]
            time.sleep(1.0)  # load is flowing
            in_flight = [_open_half_sent_request(port, body, content_type) for _ in range(4)]
            time.sleep(0.3)  # the server has read their headers
            sigterm_at = time.monotonic()
            docker("kill", "--signal", "SIGTERM", running.id)
            time.sleep(0.5)  # shutdown has begun while those requests wait for their bodies
            statuses = [_finish_and_read(sock, body) for sock in in_flight]
            time.sleep(0.5)
            stop.set()
            for worker in workers:
                worker.result(timeout=60)

        exit_code = docker("wait", running.id, timeout=60).stdout.strip()
        logs = docker("logs", running.id, check=False).stderr
        assert statuses == [200, 200, 200, 200], logs
        assert exit_code == "0", logs
        http_errors = [o for o, _ in outcomes if o.startswith("http-")]
        assert not http_errors, http_errors
        answered_before = sum(1 for o, t in outcomes if o == "200" and t < sigterm_at)
        assert answered_before > 10, "the load never got going"
    finally:
        docker("rm", "--force", running.id, check=False)


# ---------------------------------------------------------------------------------------------
# The Dockerfile policy gate really gates


def test_checkov_fails_a_dockerfile_that_runs_as_root(tmp_path: Path) -> None:
    checkov = ROOT / ".tools" / "checkov-3.3.30" / "bin" / "checkov"
    if not checkov.exists():
        pytest.fail(f"{checkov} missing: `make tools` installs it")
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        'FROM python:3.11-slim\nCOPY . /app\nENTRYPOINT ["python", "-m", "app"]\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [
            str(checkov),
            "--framework",
            "dockerfile",
            "--file",
            str(bad),
            "--quiet",
            "--compact",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode != 0
    assert "CKV_DOCKER_3" in result.stdout  # no USER: the container would run as root


def test_dockerfile_skips_each_carry_a_reason() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    skips = re.findall(r"checkov:skip=(CKV\w+):?(.*)", text)
    for check_id, reason in skips:
        assert len(reason.strip()) > 20, f"{check_id} is skipped without a written reason"
