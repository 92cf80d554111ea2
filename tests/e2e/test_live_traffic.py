"""Traffic through the live sandbox's Ingress controller (Traefik): push, rollout, rollback.

`make e2e-live` pushes two images of the tiny test model that differ only in the model card's
version (A: build/test-image.json, B: build/test-image-b.json). This module starts the sandbox
with `--live` (overlays seeded with A), then, with every request sent to the Ingress's HTTPS entry
point on 127.0.0.1 with the Ingress's host name (SNI and Host header) and verified against the
certificate the sandbox issued for that host:

1. the Ingress serves /v1 only: /metrics, /docs, the probes and a `..` escape answer 404;
2. push to deploy: `gitops bump` of staging to B (commit + push to origin), under a constant
   load, until B's version answers and no pod of A is left: 0 failed requests, the answers per
   version, and the time from the push to B's first answer (cold pull of B included);
3. rollback: `git revert` of that deploy commit, pushed, same load and measures, until A answers
   again and no pod of B is left.

The figures go to build/sandbox-traffic.json; `python -m bench.live_traffic` puts them in
docs/benchmarks.md.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    DEPLOYMENT,
    GIT_IDENTITY,
    IMAGE_JSON,
    LIVE_TIMEOUT_S,
    NAMESPACE,
    ROOT,
    STAGING,
    Checkout,
    Sandbox,
    live_sandbox,
    sh,
    wait_until,
)

pytestmark = pytest.mark.live

IMAGE_B_JSON = Path(os.environ.get("ELPV_IMAGE_B_JSON", ROOT / "build" / "test-image-b.json"))
MODEL_B_CARD = Path(
    os.environ.get("ELPV_MODEL_B_CARD", ROOT / "build" / "test-model-b" / "model_card.json")
)
TIMEOUT_S = LIVE_TIMEOUT_S
RATE = float(os.environ.get("E2E_LOAD_RATE", "50"))  # requests per second, through the Ingress
RESULTS_FILE = ROOT / "build" / "sandbox-traffic.json"
GITOPS = [str(ROOT / ".venv" / "bin" / "gitops")]


@dataclass
class Target:
    """The Ingress of one environment: where to connect and as whom."""

    port: int
    host: str
    cafile: Path | None  # None: no certificate check (for a host the sandbox issued none for)

    def connect(self, timeout: float = 5) -> http.client.HTTPSConnection:
        if self.cafile is None:
            context = ssl._create_unverified_context()  # noqa: S323 (a host without a certificate)
        else:
            context = ssl.create_default_context(cafile=str(self.cafile))
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=context)
        # TCP to the controller on 127.0.0.1, TLS (SNI, certificate check) for the host name.
        port = self.port

        def to_loopback(
            _address: tuple[str, int], timeout: float | None = None, source: Any = None
        ) -> socket.socket:
            return socket.create_connection(("127.0.0.1", port), timeout, source)

        conn._create_connection = to_loopback  # type: ignore[attr-defined]
        return conn

    def get(self, path: str) -> tuple[int, bytes]:
        conn = self.connect()
        try:
            conn.request("GET", path, headers={"Host": self.host})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


def model_version(body: bytes) -> str:
    version: str = json.loads(body)["version"]
    return version


@dataclass
class Load:
    """A constant, bounded request rate to GET /v1/model: counts answers per version, failures.

    Open loop: request i is due at start + i / rate whatever the earlier ones took (a slow
    answer does not lower the offered load), spread over a few keep-alive connections.
    """

    target: Target
    rate: float = RATE
    max_seconds: float = TIMEOUT_S + 120
    workers: int = 8
    versions: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    first_seen: dict[str, float] = field(default_factory=dict)  # version -> monotonic time
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _start: float = 0.0

    def __enter__(self) -> Load:
        self._start = time.monotonic()
        for _ in range(self.workers):
            thread = threading.Thread(target=self._worker, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _next_slot(self) -> float | None:
        with self._lock:
            due = self._start + self.sent / self.rate
            if self._stop.is_set() or due - self._start > self.max_seconds:
                return None
            self.sent += 1
            return due

    def _worker(self) -> None:
        conn: http.client.HTTPSConnection | None = None
        while (due := self._next_slot()) is not None:
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if conn is None:
                    conn = self.target.connect()
                conn.request("GET", "/v1/model", headers={"Host": self.target.host})
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {body[:200]!r}")
                version = model_version(body)
                with self._lock:
                    self.versions[version] += 1
                    self.first_seen.setdefault(version, time.monotonic())
            except (OSError, RuntimeError, http.client.HTTPException, ValueError) as err:
                with self._lock:
                    self.failures.append(f"{time.monotonic() - self._start:.1f}s: {err!r}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    @property
    def answered(self) -> int:
        return sum(self.versions.values())


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, Any]]:
    data: dict[str, Any] = {"rate_per_second": RATE}
    yield data
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(data, indent=2))


@pytest.fixture(scope="module")
def live(results: dict[str, Any]) -> Iterator[Sandbox]:
    for path in (IMAGE_JSON, IMAGE_B_JSON, MODEL_B_CARD):
        if not path.exists():
            pytest.fail(f"{path} is missing: run `make e2e-live`, which pushes both test images")
    with live_sandbox() as box:
        results["sandbox_up_seconds"] = box.env.get("started_seconds")
        yield box


def target_of(box: Sandbox, app: str) -> Target:
    """The Ingress as the cluster holds it: its host, and the certificate issued for it."""
    ingress = box.get("ingress", DEPLOYMENT, NAMESPACE[app])
    assert ingress is not None, f"no Ingress in {NAMESPACE[app]}"
    host = ingress["spec"]["rules"][0]["host"]
    port = int(box.env["ingress_url"].rsplit(":", 1)[1])
    cafile = Path(box.env["state_dir"]) / "ingress" / "certs" / f"{host}.crt"
    return Target(port=port, host=host, cafile=cafile)


def staging_pod_images(box: Sandbox) -> list[str]:
    """The image of every staging pod that exists (terminating ones included)."""
    out = box.kubectl(
        "get", "pods", "-n", NAMESPACE[STAGING], "-l", f"app.kubernetes.io/name={DEPLOYMENT}",
        "-o", "json",
    ).stdout  # fmt: skip
    return [p["spec"]["containers"][0]["image"] for p in json.loads(out)["items"]]


def only_image_left(box: Sandbox, image: str) -> bool:
    images = staging_pod_images(box)
    return bool(images) and all(i == image for i in images)


def image_ref(path: Path) -> str:
    data = json.loads(path.read_text())
    return f"{data['image']}:{data['tag']}@{data['digest']}"


@pytest.fixture(scope="module")
def staging(live: Sandbox) -> Target:
    """Staging deployed from the seed (image A) and answering through the Ingress."""
    head = sh(["git", "--git-dir", live.env["origin_path"], "rev-parse", "main"]).stdout.strip()
    live.wait_deployed(STAGING, head, "live staging (seed)", timeout=TIMEOUT_S)
    target = target_of(live, STAGING)
    wait_until(
        "GET /v1/model through the Ingress", lambda: target.get("/v1/model")[0] == 200, poll=0.5
    )
    return target


@pytest.fixture(scope="module")
def checkout(live: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Checkout:
    path = tmp_path_factory.mktemp("traffic") / "repo"
    sh(["git", "clone", "--quiet", live.env["origin_url"], str(path)])
    return Checkout(path=path, origin=live.env["origin_url"])


def test_ingress_has_an_address_and_serves_v1_only_over_tls(live: Sandbox, staging: Target) -> None:
    ingress = live.get("ingress", DEPLOYMENT, NAMESPACE[STAGING])
    assert ingress is not None
    # Filled by the controller (what lets Argo CD's own Ingress health check pass).
    assert ingress["status"]["loadBalancer"]["ingress"] == [{"ip": "127.0.0.1"}]
    # Traefik listens on loopback only (both entry points, nothing else).
    listeners = [
        line.split()[3] for line in sh(["ss", "-ltnpH"]).stdout.splitlines() if '"traefik"' in line
    ]
    assert len(listeners) == 2, listeners
    assert all(address.startswith("127.0.0.1:") for address in listeners), listeners
    status, body = staging.get("/v1/model")
    assert status == 200, body
    card_a = json.loads((ROOT / "build" / "test-model" / "model_card.json").read_text())
    assert model_version(body) == card_a["version"]
    not_public = (
        "/metrics",
        "/docs",
        "/openapi.json",
        "/readyz",
        "/livez",
        "/v1/../metrics",
        "/v10",
    )
    for path in not_public:
        assert staging.get(path)[0] == 404, f"{path} is public through the Ingress"
    # Another host name is not routed (the rule names the environment's host only); it gets
    # the controller's default certificate, not the host's.
    other = Target(port=staging.port, host="not-the-host.example.com", cafile=staging.cafile)
    with pytest.raises(ssl.SSLCertVerificationError):
        other.get("/v1/model")
    assert Target(staging.port, other.host, cafile=None).get("/v1/model")[0] == 404


def rollout_under_load(
    live: Sandbox, staging: Target, push: Any, new_image: str, label: str
) -> dict[str, Any]:
    """Run `push` (returns the pushed commit) under load; measure until only `new_image` runs."""
    with Load(staging) as load:
        time.sleep(3)  # a few seconds of the steady state before the change
        pushed_at = time.monotonic()
        commit = push()
        live.wait_deployed(STAGING, commit, label, timeout=TIMEOUT_S)
        wait_until(
            f"{label}: only {new_image} pods left",
            lambda: only_image_left(live, new_image),
            poll=0.5,
        )
        only_new_at = time.monotonic()
        time.sleep(3)  # and a few after the last old pod is gone
    new_version = max(load.first_seen, key=lambda v: load.first_seen[v])
    return {
        "commit": commit,
        "requests": load.sent,
        "answers_per_version": dict(load.versions),
        "failed": len(load.failures),
        "failures_sample": load.failures[:10],
        "push_to_first_new_answer_s": round(load.first_seen[new_version] - pushed_at, 1),
        "new_version": new_version,
        "push_to_only_new_pods_s": round(only_new_at - pushed_at, 1),
    }


def test_push_to_deploy_under_load_drops_nothing(
    live: Sandbox, staging: Target, checkout: Checkout, results: dict[str, Any]
) -> None:
    image_a, image_b = image_ref(IMAGE_JSON), image_ref(IMAGE_B_JSON)
    build_b = json.loads(IMAGE_B_JSON.read_text())
    version_b = json.loads(MODEL_B_CARD.read_text())["version"]
    version_a = model_version(staging.get("/v1/model")[1])
    assert version_a != version_b
    assert live.live_image(STAGING) == image_a

    def push() -> str:
        # The train-deploy workflow's own step (commit with trailers + push to origin).
        source = build_b["tag"].removesuffix("-b").removesuffix("-dirty")
        sh(
            [
                *GITOPS, "--repo", str(checkout.path), "bump", "--env", "staging",
                "--image", build_b["image"], "--tag", build_b["tag"],
                "--digest", build_b["digest"], "--source-revision", source,
                "--model-card", str(MODEL_B_CARD),
            ],
            env={
                **os.environ,
                **GIT_IDENTITY,
                "PATH": f"{ROOT / '.tools' / 'bin'}:{os.environ['PATH']}",
            },
        )  # fmt: skip
        checkout.sync()
        return checkout.head()

    run = rollout_under_load(live, staging, push, image_b, "push-to-deploy under load")
    results["push_to_deploy"] = run
    assert run["failed"] == 0, run["failures_sample"]
    assert run["new_version"] == version_b
    assert set(run["answers_per_version"]) == {version_a, version_b}, run
    assert live.live_image(STAGING) == image_b


def test_rollback_by_git_revert_under_load_drops_nothing(
    live: Sandbox, staging: Target, checkout: Checkout, results: dict[str, Any]
) -> None:
    deploy = results.get("push_to_deploy")
    if deploy is None:
        pytest.fail("needs test_push_to_deploy_under_load_drops_nothing to have deployed B")
    image_a = image_ref(IMAGE_JSON)
    version_b = deploy["new_version"]
    version_a = next(v for v in deploy["answers_per_version"] if v != version_b)

    def push() -> str:
        checkout.git("revert", "--no-edit", deploy["commit"])
        return checkout.push()

    run = rollout_under_load(live, staging, push, image_a, "rollback (git revert) under load")
    results["rollback"] = run
    assert run["failed"] == 0, run["failures_sample"]
    assert run["new_version"] == version_a
    assert live.live_image(STAGING) == image_a
