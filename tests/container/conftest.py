"""Fixtures for the container tests: the image that `make test-container` pushed, pulled back
by digest, and locked-down containers started from it.

Run through `make test-container` (it starts dockerd and the registry, builds the tiny test
model, builds and pushes the image, then runs pytest with `-m container`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE_JSON = Path(os.environ.get("ELPV_IMAGE_JSON", ROOT / "build" / "test-image.json"))
TEST_MODEL_DIR = Path(os.environ.get("ELPV_TEST_MODEL_DIR", ROOT / "build" / "test-model"))
# The hardening every test container runs with, as in k8s-base's securityContext.
LOCKED_DOWN = (
    "--read-only",
    "--tmpfs",
    "/tmp:rw,noexec,nosuid,size=64m",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
)
READY_TIMEOUT_S = 30.0


def docker_binary() -> str:
    # Debian's client matches Debian's dockerd; any other client negotiates the API version.
    found = shutil.which("/usr/bin/docker") or shutil.which("docker")
    if found is None:
        pytest.fail("no docker client: run the container tests with `make test-container`")
    return found


def docker(
    *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [docker_binary(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


@dataclass(frozen=True)
class PushedImage:
    repository: str  # 127.0.0.1:5000/<name>
    tag: str
    digest: str  # sha256:...

    @property
    def by_digest(self) -> str:
        return f"{self.repository}@{self.digest}"


@pytest.fixture(scope="session")
def pushed_image() -> PushedImage:
    """The image `make push` recorded in IMAGE_JSON, removed locally and pulled back by digest,
    so every test runs what the registry serves, not what the build left behind."""
    if docker("version", check=False, timeout=30).returncode != 0:
        pytest.fail("no Docker Engine answers: run the container tests with `make test-container`")
    if not IMAGE_JSON.is_file():
        pytest.fail(f"{IMAGE_JSON} is missing: `make test-container` builds and pushes first")
    raw = json.loads(IMAGE_JSON.read_text(encoding="utf-8"))
    image = PushedImage(repository=raw["image"], tag=raw["tag"], digest=raw["digest"])
    docker("image", "rm", "--force", f"{image.repository}:{image.tag}", check=False)
    listed = docker("image", "ls", "--digests", "--format", "{{.Repository}}@{{.Digest}}")
    for ref in listed.stdout.split():
        if ref == image.by_digest:
            docker("image", "rm", "--force", ref, check=False)
    docker("pull", image.by_digest)
    return image


@pytest.fixture(scope="session")
def image_config(pushed_image: PushedImage) -> dict[str, object]:
    inspected = json.loads(docker("image", "inspect", pushed_image.by_digest).stdout)[0]
    config: dict[str, object] = inspected["Config"]
    return config


def run_in_image(
    image: PushedImage, *command: str, entrypoint: str = "/opt/venv/bin/python"
) -> str:
    """Run a one-off command in the image (locked down like the service); return stdout."""
    return docker(
        "run", "--rm", *LOCKED_DOWN, "--entrypoint", entrypoint, image.by_digest, *command
    ).stdout


@dataclass
class Container:
    id: str
    base_url: str
    started_at: float  # time.monotonic() just before `docker run`
    ready_after_s: float


def start_container(image: PushedImage, *env: str) -> Container:
    """`docker run` the service locked down, port 8080 published on a free loopback port,
    and wait for /readyz to say 200."""
    # The image refuses to start without a token unless an open service is asked for
    # (test_image_refuses_to_start_without_a_token); these tests exercise the open one.
    env = ("CLASSIFIER_ALLOW_UNAUTHENTICATED=true", *env)
    env_args = [arg for item in env for arg in ("--env", item)]
    started = time.monotonic()
    cid = docker(
        "run",
        "--detach",
        *LOCKED_DOWN,
        "--publish",
        "127.0.0.1::8080",
        *env_args,
        image.by_digest,
    ).stdout.strip()
    host_port = docker("port", cid, "8080/tcp").stdout.split()[0].rsplit(":", 1)[1]
    base_url = f"http://127.0.0.1:{host_port}"
    deadline = started + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return Container(cid, base_url, started, time.monotonic() - started)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        state = docker("inspect", "--format", "{{.State.Status}}", cid).stdout.strip()
        if state != "running":
            logs = docker("logs", cid, check=False).stderr
            docker("rm", "--force", cid, check=False)
            pytest.fail(f"container exited ({state}) before becoming ready:\n{logs}")
        time.sleep(0.05)
    logs = docker("logs", cid, check=False).stderr
    docker("rm", "--force", cid, check=False)
    pytest.fail(f"container not ready within {READY_TIMEOUT_S}s:\n{logs}")


@pytest.fixture
def container(pushed_image: PushedImage) -> Iterator[Container]:
    running = start_container(pushed_image)
    try:
        yield running
    finally:
        docker("rm", "--force", running.id, check=False)
