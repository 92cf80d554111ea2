"""The live node on its own: containerd + runc + the CNI bridge + a kubelet, no API server.

A static pod (the kubelet's own manifest directory) from the pause image, imported with `ctr`
(no registry), under the restricted profile's settings: it must run as UID 10001 with a
read-only root and the RuntimeDefault seccomp filter, get an address on the sandbox's bridge,
and the node's teardown must leave the host exactly as it was. Part of `make e2e-live`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.live


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("sandbox_node", ROOT / "sandbox" / "sandbox.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    state = tmp_path / "s"
    monkeypatch.setattr(module, "STATE", state)
    monkeypatch.setattr(module, "RUN", state / "run")
    monkeypatch.setattr(module, "LOGS", state / "logs")
    state.mkdir()
    return module


def task_status(module: ModuleType, pid: int, field: str) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line for line in status.splitlines() if line.startswith(f"{field}:")).split(":", 1)[
        1
    ]


def test_static_pod_runs_restricted_on_the_bridge_and_teardown_leaves_nothing(
    node: ModuleType,
) -> None:
    m = node
    before: dict[str, Any] = m.host_snapshot()
    ref = "127.0.0.1:5000/elpv-sandbox/pause:standalone"
    configs = m.write_node_configs(m.STATE / "kubeconfig", ref)
    # Standalone kubelet: no API server to ask, so no webhook; it serves only the bridge address.
    kubelet = json.loads(configs["kubelet"].read_text())
    kubelet["authentication"] = {"anonymous": {"enabled": True}, "webhook": {"enabled": False}}
    kubelet["authorization"] = {"mode": "AlwaysAllow"}
    kubelet["staticPodPath"] = str(m.node_dir("manifests"))
    configs["kubelet"].write_text(json.dumps(kubelet))
    m.node_dir("manifests").mkdir()
    restricted = {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "standalone", "namespace": "default"},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "c",
                    "image": ref,
                    "imagePullPolicy": "Never",
                    "securityContext": restricted,
                }
            ],
        },
    }
    m.node_dir("manifests", "pod.json").write_text(json.dumps(pod))
    try:
        m.run(["ip", "link", "add", m.BRIDGE, "type", "bridge"])
        m.run(["ip", "addr", "add", f"{m.NODE_IP}/24", "dev", m.BRIDGE])
        m.run(["ip", "link", "set", m.BRIDGE, "up"])
        env = m.node_env()
        m.start_process(
            "containerd", [m.binary("containerd"), "--config", configs["containerd"]], env
        )
        m.wait_for("containerd", m.containerd_socket().exists, 60, "containerd")
        archive = m.oci_archive(ref, m.binary("pause"), "/pause", m.STATE / "pause.tar")
        m.ctr("images", "import", str(archive))
        m.create_cgroup_root()
        m.start_process(
            "kubelet",
            [
                m.binary("kubelet"),
                "--config",
                configs["kubelet"],
                "--root-dir",
                m.node_dir("kubelet", "root"),
                "--cert-dir",
                m.node_dir("kubelet", "pki"),
                "--hostname-override",
                m.NODE_NAME,
                "--node-ip",
                m.NODE_IP,
            ],
            env,
        )
        tasks: list[tuple[str, int]] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            lines = m.ctr("tasks", "ls", check=False).stdout.splitlines()[1:]
            tasks = [(t, int(p)) for t, p, s in (line.split() for line in lines) if s == "RUNNING"]
            if len(tasks) == 2:  # the pod's sandbox (pause) and its container
                break
            time.sleep(2)
        log = (m.LOGS / "kubelet.log").read_text()
        assert len(tasks) == 2, [line for line in log.splitlines() if line.startswith("E")][-5:]
        for _task, pid in tasks:
            assert task_status(m, pid, "Uid").split() == ["10001"] * 4
            assert task_status(m, pid, "Seccomp").strip() == "2"  # filter mode
            assert int(task_status(m, pid, "CapEff"), 16) == 0
            root = next(
                line.split()
                for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                if line.split()[4] == "/"
            )
            assert "ro" in root[5].split(",")
        leases = sorted(p.name for p in m.node_dir("cni", "ipam", "elpv-sandbox").iterdir())
        assert any(name.startswith("10.244.0.") for name in leases), leases
    finally:
        m.stop_node()
        m.unmount_state()
        m.restore_host(before)
    assert m.host_leftovers(before, m.host_snapshot()) == []
