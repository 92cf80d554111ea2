"""The HPA scales staging on real CPU, read through metrics-server, installed by Argo CD.

Live mode only (`make e2e-live`): metrics-server runs from the vendored upstream chart
(charts/metrics-server/, rendered by Argo CD's Helm support, image built here), the API server
aggregates its metrics.k8s.io API, and the controller-manager's HPA reads pod CPU from it. A
bounded load (POST /v1/predict through the Ingress) drives the staging Deployment from
minReplicas to 3 ready replicas; after the load stops it goes back to minReplicas (staging's
`behavior` patch shortens the scale-down window to 60 s).

The rate that takes a pod past the CPU target depends on the host's CPU (a request costs less on
an AVX-512 host than on an AVX2 one), so no fixed rate passes everywhere: the load starts at
E2E_HPA_RPS and is raised by RAMP_FACTOR each RAMP_EVERY_S for as long as the HPA wants fewer than
3 replicas, up to E2E_HPA_MAX_RPS. The test asks for the behaviour, not for a host speed.

The timeline (replicas, CPU, req/s every few seconds) goes to build/hpa-live.json;
`python -m bench.hpa` turns it into docs/benchmarks.md's `hpa-live` section and a plot.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from PIL import Image

from .conftest import DEPLOYMENT, NAMESPACE, ROOT, STAGING, Sandbox, live_sandbox, sh, wait_until
from .test_live_node import ready_pods
from .test_live_traffic import Target, target_of

pytestmark = pytest.mark.live

NS = NAMESPACE[STAGING]
RESULT_FILE = ROOT / "build" / "hpa-live.json"
# Bounded load: a rate from a few threads, raised while the HPA wants fewer replicas, for at most
# LOAD_MAX_S.
LOAD_RPS = float(os.environ.get("E2E_HPA_RPS", "60"))
LOAD_MAX_RPS = float(os.environ.get("E2E_HPA_MAX_RPS", "300"))
RAMP_FACTOR = 1.5
# Longer than metrics-server's 15 s resolution plus the sandbox's 5 s HPA sync, so the HPA has read
# the current rate's CPU before the test decides it is not enough.
RAMP_EVERY_S = 30.0
LOAD_THREADS = int(os.environ.get("E2E_HPA_THREADS", "12"))
LOAD_MAX_S = float(os.environ.get("E2E_HPA_LOAD_MAX_S", "300"))
SCALE_DOWN_TIMEOUT_S = float(os.environ.get("E2E_HPA_DOWN_TIMEOUT_S", "300"))
WANT_REPLICAS = 3
SAMPLE_EVERY_S = 3.0


@pytest.fixture(scope="module")
def live() -> Iterator[Sandbox]:
    with live_sandbox() as box:
        yield box


def diagnostics(live: Sandbox) -> str:
    """What to read when metrics or scaling fail: the add-on's state from every side."""
    parts = []
    for args in (
        ("get", "application", "metrics-server", "-n", "argocd", "-o", "jsonpath={.status}"),
        ("get", "apiservice", "v1beta1.metrics.k8s.io", "-o", "jsonpath={.status}"),
        ("get", "pods", "-A", "-o", "wide"),
        ("logs", "-n", "kube-system", "deploy/metrics-server", "--tail=40"),
        ("get", "hpa", DEPLOYMENT, "-n", NS, "-o", "jsonpath={.status}"),
        ("get", "endpointslices", "-n", "default", "-o", "wide"),
    ):
        proc = live.kubectl(*args, check=False)
        parts.append(f"$ kubectl {' '.join(args)}\n{proc.stdout[-3000:]}{proc.stderr[-1000:]}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def target(live: Sandbox) -> Target:
    """Where the load goes: staging's Ingress, through Traefik on 127.0.0.1 (TLS, its host)."""
    return target_of(live, STAGING)


@pytest.fixture(scope="module")
def api_token(live: Sandbox) -> str:
    secret = json.loads(
        live.kubectl("get", "secret", "elpv-classifier-api-token", "-n", NS, "-o", "json").stdout
    )
    return base64.b64decode(secret["data"]["token"]).decode()


def predict_body() -> bytes:
    """One 300x300 grayscale PNG (the size of an ELPV cell image) as the JSON predict body."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 300), dtype=np.uint8), mode="L")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return json.dumps({"images": [{"name": "load", "data": data}]}).encode()


@dataclass
class Load:
    """POST /v1/predict at a total rate (`rps`, raised by `ramp`) from a few threads, counting
    answers per second."""

    target: Target
    token: str
    rps: float
    threads: int
    started: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)
    answers: dict[int, dict[str, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        body = predict_body()
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index, body), daemon=True)
            worker.start()
            self.workers.append(worker)

    def ramp(self, desired: int | None) -> bool:
        """Raise the rate when the HPA, having read this rate's CPU, still wants too few pods."""
        if (desired or 0) >= WANT_REPLICAS or self.rps >= LOAD_MAX_RPS:
            return False
        self.rps = min(LOAD_MAX_RPS, self.rps * RAMP_FACTOR)
        return True

    def _run(self, index: int, body: bytes) -> None:
        next_at = self.started + index / self.rps
        deadline = self.started + LOAD_MAX_S
        headers = {
            "Host": self.target.host,
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.token}",
        }
        conn: http.client.HTTPSConnection | None = None
        while not self.stop.is_set() and time.monotonic() < deadline:
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            next_at += self.threads / self.rps  # read each time: `ramp` changes it
            try:
                if conn is None:  # one keep-alive connection per thread, reopened after an error
                    conn = self.target.connect(timeout=10)
                conn.request("POST", "/v1/predict", body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                outcome = "ok" if resp.status == 200 else f"http_{resp.status}"
            except (OSError, http.client.HTTPException):
                outcome = "no_answer"
                if conn is not None:
                    conn.close()
                conn = None
            second = int(time.monotonic() - self.started)
            with self.lock:
                bucket = self.answers.setdefault(second, {})
                bucket[outcome] = bucket.get(outcome, 0) + 1
        if conn is not None:
            conn.close()

    def finish(self) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join(timeout=15)


def serving(live: Sandbox) -> int:
    """Ready pods that are not being deleted (a terminating pod can still report Ready)."""
    return sum(1 for p in ready_pods(live, NS) if "deletionTimestamp" not in p["metadata"])


def hpa_state(live: Sandbox) -> dict[str, Any]:
    hpa = live.get("hpa", DEPLOYMENT, NS)
    assert hpa is not None
    return hpa


def cpu_utilization(hpa: dict[str, Any]) -> int | None:
    for metric in hpa.get("status", {}).get("currentMetrics") or []:
        current = metric.get("resource", {}).get("current", {})
        if metric.get("resource", {}).get("name") == "cpu" and "averageUtilization" in current:
            return int(current["averageUtilization"])
    return None


@dataclass
class Timeline:
    """Samples of (seconds since the load started, ready pods, HPA desired, CPU %, asked req/s)."""

    origin: float
    samples: list[dict[str, Any]] = field(default_factory=list)

    def sample(self, live: Sandbox, asked_rps: float) -> dict[str, Any]:
        hpa = hpa_state(live)
        row = {
            "t": round(time.monotonic() - self.origin, 1),
            "ready": serving(live),
            "desired": hpa.get("status", {}).get("desiredReplicas"),
            "cpu_percent": cpu_utilization(hpa),
            "asked_rps": round(asked_rps, 1),
        }
        self.samples.append(row)
        return row


def test_metrics_server_runs_from_the_chart_through_argo_cd(live: Sandbox) -> None:
    """Argo CD rendered the vendored chart (Helm) and the API server serves metrics.k8s.io."""
    try:
        check_metrics_server(live)
    except AssertionError as err:
        raise AssertionError(f"{err}\n\n{diagnostics(live)}") from err


def check_metrics_server(live: Sandbox) -> None:

    def healthy() -> dict[str, Any] | None:
        obj = live.get("application", "metrics-server", "argocd") or {}
        status = obj.get("status", {})
        done = (
            status.get("sync", {}).get("status") == "Synced"
            and status.get("health", {}).get("status") == "Healthy"
        )
        return obj if done else None

    app = wait_until("metrics-server Application Synced + Healthy", healthy)
    assert app["spec"]["source"]["path"] == "charts/metrics-server"
    assert app["status"]["sourceType"] == "Helm"
    deployment = live.get("deployment", "metrics-server", "kube-system")
    assert deployment is not None
    # The image the sandbox built and pushed, by digest, as the seed commit's values name it.
    patch = sh(
        ["git", "--git-dir", live.env["origin_path"], "show",
         "main:argocd/sandbox-metrics-server.yaml"]
    ).stdout  # fmt: skip
    values = json.loads(patch)["spec"]["source"]["helm"]["valuesObject"]["image"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{values['repository']}:{values['tag']}", image
    assert "@sha256:" in image
    pod = json.loads(
        live.kubectl(
            "get", "pods", "-n", "kube-system", "-l", "app.kubernetes.io/name=metrics-server",
            "-o", "json",
        ).stdout
    )["items"][0]  # fmt: skip
    assert pod["status"]["containerStatuses"][0]["imageID"].endswith(image.rsplit("@", 1)[1])
    # The Helm release labels show who rendered it: the chart, not a hand-written manifest.
    assert deployment["metadata"]["labels"]["helm.sh/chart"].startswith("metrics-server-3.")

    def pod_metrics() -> list[str] | None:
        """The names of staging's pods the metrics API reports, once it reports every ready one."""
        proc = live.kubectl(
            "get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{NS}/pods", check=False
        )
        if proc.returncode != 0:
            return None
        reported = {i["metadata"]["name"] for i in json.loads(proc.stdout)["items"]}
        ready = {p["metadata"]["name"] for p in ready_pods(live, NS)}
        return sorted(reported) if ready and ready <= reported else None

    wait_until("CPU of every ready staging pod through the aggregated API", pod_metrics)


def test_hpa_scales_staging_up_under_load_and_back_down(
    live: Sandbox, target: Target, api_token: str
) -> None:
    try:
        check_scaling(live, target, api_token)
    except AssertionError as err:
        raise AssertionError(f"{err}\n\n{diagnostics(live)}") from err


def check_scaling(live: Sandbox, target: Target, api_token: str) -> None:
    hpa = hpa_state(live)
    low = hpa["spec"]["minReplicas"]
    assert hpa["spec"]["maxReplicas"] >= WANT_REPLICAS
    target_cpu = hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
    # At rest: minReplicas ready and the HPA reading CPU (metrics-server works).
    wait_until(f"{low} ready staging pods", lambda: serving(live) == low)
    wait_until("the HPA reads CPU", lambda: cpu_utilization(hpa_state(live)) is not None)

    load = Load(target, api_token, LOAD_RPS, LOAD_THREADS)
    timeline = Timeline(origin=load.started)
    load.start()
    up_seconds = down_seconds = None
    try:
        deadline = load.started + LOAD_MAX_S
        next_ramp = load.started + RAMP_EVERY_S
        while time.monotonic() < deadline:
            row = timeline.sample(live, load.rps)
            if row["ready"] >= WANT_REPLICAS:
                up_seconds = row["t"]
                break
            if time.monotonic() >= next_ramp and load.ramp(row["desired"]):
                next_ramp = time.monotonic() + RAMP_EVERY_S
                row["asked_rps"] = round(load.rps, 1)  # the new rate holds from this sample on
            time.sleep(SAMPLE_EVERY_S)
    finally:
        load.finish()
    stopped = round(time.monotonic() - load.started, 1)
    try:
        if up_seconds is not None:
            deadline = time.monotonic() + SCALE_DOWN_TIMEOUT_S
            while time.monotonic() < deadline:
                row = timeline.sample(live, 0.0)
                if row["ready"] == low and (row["desired"] or 0) == low:
                    down_seconds = round(row["t"] - stopped, 1)
                    break
                time.sleep(SAMPLE_EVERY_S)
    finally:
        answers = {str(k): v for k, v in sorted(load.answers.items())}
        totals: dict[str, int] = {}
        for bucket in load.answers.values():
            for outcome, count in bucket.items():
                totals[outcome] = totals.get(outcome, 0) + count
        RESULT_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULT_FILE.write_text(
            json.dumps(
                {
                    "min_replicas": low,
                    "want_replicas": WANT_REPLICAS,
                    "target_cpu_percent": target_cpu,
                    "load": {
                        "start_rps": LOAD_RPS,
                        "max_rps": LOAD_MAX_RPS,
                        "ramp_factor": RAMP_FACTOR,
                        "ramp_every_s": RAMP_EVERY_S,
                        "threads": LOAD_THREADS,
                        "url": f"https://{target.host} (Ingress, 127.0.0.1:{target.port})",
                    },
                    "load_stopped_at": stopped,
                    "up_seconds": up_seconds,
                    "down_seconds_after_load": down_seconds,
                    "answers_total": totals,
                    "answers_per_second": answers,
                    "samples": timeline.samples,
                },
                indent=1,
            )
        )
    peak = max((s["cpu_percent"] or 0) for s in timeline.samples)
    answered = sum(totals.values()) / max(1.0, stopped)
    assert up_seconds is not None, (
        f"staging never had {WANT_REPLICAS} ready pods within {LOAD_MAX_S:.0f} s of load "
        f"(peak CPU {peak} % of the request, target {target_cpu} %; asked up to {load.rps:.0f} "
        f"req/s, {answered:.1f} answered per second on average; raise E2E_HPA_MAX_RPS if the "
        f"asked rate hit it): {timeline.samples[-5:]}"
    )
    # The scale-up came from CPU: it passed the target while the load ran.
    assert peak > target_cpu, timeline.samples
    assert totals.get("ok", 0) > 0, totals
    assert down_seconds is not None, (
        f"staging not back to {low} replicas within {SCALE_DOWN_TIMEOUT_S:.0f} s after the load "
        f"stopped: {timeline.samples[-5:]}"
    )
