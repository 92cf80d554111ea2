"""The sandbox's live mode: one real node, so the serving container really runs.

`make e2e-live` pushes the serving image (the tiny test model) to the local registry, then this
module starts the sandbox with `--live` (containerd + runc + a CNI bridge + kubelet + kube-proxy
beside the control plane and Argo CD), checks what only a real node can show, and stops it. The
last test stops the sandbox itself and checks that the host is left exactly as it was.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .conftest import DEPLOYMENT, ENV_FILE, NAMESPACE, PROD, ROOT, STAGING, Sandbox, sh

pytestmark = pytest.mark.live

SANDBOX_PY = [sys.executable, str(ROOT / "sandbox" / "sandbox.py")]
IMAGE_JSON = Path(os.environ.get("ELPV_IMAGE_JSON", ROOT / "build" / "test-image.json"))
# A cold pull of the serving image plus the model load, on 2 shared cores.
ROLLOUT_TIMEOUT_S = float(os.environ.get("E2E_LIVE_TIMEOUT", "300"))


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
    proc = subprocess.run(
        [*SANDBOX_PY, "up", "--live", "--image-json", str(IMAGE_JSON)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"sandbox up --live failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    box = Sandbox(env=json.loads(ENV_FILE.read_text()))
    try:
        yield box
    finally:
        subprocess.run([*SANDBOX_PY, "down"], check=False)


def wait_until(what: str, check: Any, timeout: float = ROLLOUT_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


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


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


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
        running = ready_pods(live, NAMESPACE[app])
        want = live.deployment(app)["spec"]["replicas"]
        assert len(running) == want
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
    status, body = wait_until(
        "readyz through the Service",
        lambda: (r := http_get(f"http://{ip}:{port}/readyz"))[0] == 200 and r,
    )
    assert status == 200
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
