"""The sandbox's live mode: one real node, so the serving container really runs.

`make e2e-live` pushes the serving image (the tiny test model) to the local registry, then this
module starts the sandbox with `--live` (containerd + runc + a CNI bridge + kubelet + kube-proxy
beside the control plane and Argo CD), checks what only a real node can show, and stops it. The
last test stops the sandbox itself and checks that the host is left exactly as it was.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .conftest import (
    DEPLOYMENT,
    ENV_FILE,
    LIVE_TIMEOUT_S,
    NAMESPACE,
    PROD,
    ROOT,
    SANDBOX_PY,
    STAGING,
    Sandbox,
    live_sandbox,
    sh,
    wait_until,
)

pytestmark = pytest.mark.live

# A cold pull of the serving image plus the model load, on 2 shared cores.
ROLLOUT_TIMEOUT_S = LIVE_TIMEOUT_S
TIMINGS_FILE = ROOT / "build" / "sandbox-live.json"


def load_sandbox_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sandbox_live", ROOT / "sandbox" / "sandbox.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sandbox_live"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def module() -> ModuleType:
    return load_sandbox_module()


@pytest.fixture(scope="module")
def host_before(module: ModuleType) -> dict[str, Any]:
    """The host as it was before `up` (taken by the test, not by the code under test)."""
    if ENV_FILE.exists():
        pytest.fail(f"a sandbox is already up ({ENV_FILE}): `make sandbox-down` first")
    snapshot: dict[str, Any] = module.host_snapshot()
    return snapshot


@pytest.fixture(scope="module")
def live(host_before: dict[str, Any]) -> Iterator[Sandbox]:
    with live_sandbox() as box:
        try:
            yield box
        finally:
            TIMINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
            up_s = box.env.get("started_seconds")
            timings = {"sandbox_up_seconds": up_s, "scenarios": box.timings}
            TIMINGS_FILE.write_text(json.dumps(timings, indent=2))


def pods(box: Sandbox, namespace: str) -> list[dict[str, Any]]:
    out = box.kubectl(
        "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/name={DEPLOYMENT}", "-o", "json"
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def ready_pods(box: Sandbox, namespace: str) -> list[dict[str, Any]]:
    return [
        p
        for p in pods(box, namespace)
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", [])
        )
    ]


def ready_count(
    box: Sandbox, namespace: str, want: int
) -> Callable[[], list[dict[str, Any]] | None]:
    """A check for wait_until: the ready pods once there are exactly `want` of them."""

    def check() -> list[dict[str, Any]] | None:
        ready = ready_pods(box, namespace)
        return ready if len(ready) == want else None

    return check


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError):
        return 0, b""  # refused, reset or timed out: no HTTP answer at all


def test_real_node_is_ready(live: Sandbox) -> None:
    node = json.loads(live.kubectl("get", "node", "elpv-node", "-o", "json").stdout)
    info = node["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://2.3")
    assert info["kubeletVersion"] == "v1.36.3"
    # Only the real node: kwok's controller is off in live mode.
    names = live.kubectl("get", "nodes", "-o", "name").stdout.split()
    assert names == ["node/elpv-node"]


def test_overlays_run_the_pushed_image_by_digest(live: Sandbox) -> None:
    image = live.env["image"]
    digest = image.rsplit("@", 1)[1]
    head = sh(["git", "--git-dir", live.env["origin_path"], "rev-parse", "main"]).stdout.strip()
    for app in (STAGING, PROD):
        live.wait_deployed(app, head, f"live {app}", timeout=ROLLOUT_TIMEOUT_S)
        assert live.live_image(app) == image
        # The HPA raises the Deployment to its minReplicas after the first rollout.
        hpa = live.get("hpa", DEPLOYMENT, NAMESPACE[app])
        assert hpa is not None
        want = hpa["spec"]["minReplicas"]
        running = wait_until(f"{app}: {want} ready pods", ready_count(live, NAMESPACE[app], want))
        for pod in running:
            status = pod["status"]["containerStatuses"][0]
            # What containerd pulled and started, not what the spec asked for.
            assert status["imageID"].endswith(digest), status["imageID"]
            assert status["started"] is True
            assert pod["spec"]["nodeName"] == "elpv-node"


def test_service_answers_readyz_from_the_host(live: Sandbox) -> None:
    svc = json.loads(
        live.kubectl("get", "service", DEPLOYMENT, "-n", NAMESPACE[STAGING], "-o", "json").stdout
    )
    ip, port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"]
    wait_until(
        "readyz through the Service", lambda: http_get(f"http://{ip}:{port}/readyz")[0] == 200
    )
    status, body = http_get(f"http://{ip}:{port}/v1/model")
    assert status == 200
    assert json.loads(body)


def container_pid(live: Sandbox, pod: dict[str, Any]) -> int:
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    out = sh(
        [
            str(Path(live.env["bin_dir"]) / "ctr"),
            "--address",
            str(Path(live.env["state_dir"]) / "node" / "containerd" / "containerd.sock"),
            "--namespace",
            "k8s.io",
            "tasks",
            "ls",
        ]
    ).stdout
    for line in out.splitlines()[1:]:
        task, pid, _status = line.split()
        if task == container_id:
            return int(pid)
    raise AssertionError(f"no containerd task {container_id}:\n{out}")


def test_container_runs_as_10001_with_read_only_root(live: Sandbox) -> None:
    pod = ready_pods(live, NAMESPACE[STAGING])[0]
    pid = container_pid(live, pod)
    status = Path(f"/proc/{pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["10001"] * 4, uid_line
    cap_eff = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    assert int(cap_eff.split()[1], 16) == 0, cap_eff
    root = next(
        line.split()
        for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        if line.split()[4] == "/"
    )
    assert "ro" in root[5].split(","), root
    tmp = next(
        line.split()
        for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        if line.split()[4] == "/tmp"
    )
    assert "rw" in tmp[5].split(","), tmp


def test_restricted_pod_security_refuses_a_privileged_pod(live: Sandbox) -> None:
    image = live.env["image"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged-probe", "namespace": NAMESPACE[STAGING]},
        "spec": {
            "containers": [{"name": "c", "image": image, "securityContext": {"privileged": True}}]
        },
    }
    proc = subprocess.run(
        [live.env["kubectl"], "--kubeconfig", live.env["kubeconfig"], "apply", "-f", "-"],
        input=json.dumps(pod),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr, proc.stderr
    assert "privileged" in proc.stderr


def test_a_pod_failing_readiness_gets_no_traffic(live: Sandbox) -> None:
    """A pod the Service selects but whose readiness probe fails: it could answer, gets nothing.

    The pod is the Deployment's own pod template (same image, labels the Service selects,
    restricted security context) with the readiness probe pointed at a path that answers 404.
    """
    ns = NAMESPACE[STAGING]
    template = live.deployment(STAGING)["spec"]["template"]
    container = template["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["path"] = "/v1/no-such-path"
    labels = {
        key: template["metadata"]["labels"][key]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/component")
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "elpv-classifier-unready", "namespace": ns, "labels": labels},
        "spec": template["spec"],
    }
    kubectl = [live.env["kubectl"], "--kubeconfig", live.env["kubeconfig"]]
    subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(pod), text=True, check=True)
    try:

        def started_not_ready() -> dict[str, Any] | None:
            obj = live.get("pod", "elpv-classifier-unready", ns)
            statuses = (obj or {}).get("status", {}).get("containerStatuses", [])
            if statuses and statuses[0].get("started") and not statuses[0].get("ready"):
                return obj
            return None

        obj = wait_until("the unready pod started", started_not_ready)
        pod_ip = obj["status"]["podIP"]
        # The endpoint is published, marked not ready (so the Service skips it).
        slices = json.loads(
            live.kubectl(
                "get",
                "endpointslices",
                "-n",
                ns,
                "-l",
                f"kubernetes.io/service-name={DEPLOYMENT}",
                "-o",
                "json",
            ).stdout
        )
        conditions = {
            address: ep["conditions"]["ready"]
            for s in slices["items"]
            for ep in s.get("endpoints", [])
            for address in ep["addresses"]
        }
        assert conditions.get(pod_ip) is False, conditions
        svc = json.loads(live.kubectl("get", "service", DEPLOYMENT, "-n", ns, "-o", "json").stdout)
        url = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}/v1/model"
        answers = [http_get(url)[0] for _ in range(40)]
        assert answers == [200] * 40
        # It could have answered: one request straight to the pod does get a 200.
        assert http_get(f"http://{pod_ip}:8080/v1/model")[0] == 200
        logs = live.kubectl("logs", "elpv-classifier-unready", "-n", ns).stdout
        served = [line for line in logs.splitlines() if "/v1/model" in line]
        assert len(served) == 1, served
    finally:
        live.kubectl("delete", "pod", "elpv-classifier-unready", "-n", ns, "--wait=false")


def test_down_leaves_nothing_on_the_host(
    live: Sandbox, module: ModuleType, host_before: dict[str, Any]
) -> None:
    state = Path(live.env["state_dir"])
    subprocess.run([*SANDBOX_PY, "down"], check=True)
    after = module.host_snapshot()
    assert module.host_leftovers(host_before, after) == []
    assert not state.exists(), f"{state} left after down"
    leftover = [pid for pid, cmdline in processes() if str(state) in cmdline]
    assert leftover == [], f"processes still referring to {state}: {leftover}"


def processes() -> Iterator[tuple[int, str]]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            yield int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace")
