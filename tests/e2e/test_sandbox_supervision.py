"""Fast checks of the sandbox's process supervision (default suite, no sandbox needed).

The e2e run depends on `down` leaving nothing behind; these pin the mechanism: every server is
started in its own process group with a pid file, and stopping it ends the whole group, even a
child that ignores SIGTERM.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "sandbox_under_test", ROOT / "sandbox" / "sandbox.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is being defined.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "STATE", tmp_path)
    monkeypatch.setattr(module, "RUN", tmp_path / "run")
    monkeypatch.setattr(module, "LOGS", tmp_path / "logs")
    return module


def test_stop_process_ends_group_when_child_ignores_sigterm(sandbox_module: ModuleType) -> None:
    # A parent that starts a SIGTERM-ignoring grandchild, like a server forking a helper.
    script = "trap '' TERM; sleep 300 & wait"
    pid = sandbox_module.start_process(
        "stubborn", ["bash", "-c", script], {"PATH": "/usr/bin:/bin"}
    )
    time.sleep(0.3)
    assert sandbox_module.pid_alive(pid)
    sandbox_module.stop_process("stubborn", grace_seconds=1.0)
    deadline = time.monotonic() + 5
    while sandbox_module.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not sandbox_module.pid_alive(pid)
    # Nothing of the group is left, the grandchild included (once init has reaped it).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not (sandbox_module.RUN / "stubborn.pid").exists()


def test_stop_process_is_a_no_op_without_pid_file(sandbox_module: ModuleType) -> None:
    sandbox_module.stop_process("never-started")
    assert not (sandbox_module.RUN / "never-started.pid").exists()


def test_argocd_scratch_files_stay_in_the_state_that_down_removes(
    sandbox_module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # repo-server checks every rendered revision out under $TMPDIR/_argocd-repo; in the host's
    # /tmp those checkouts outlived `down`.
    monkeypatch.setattr(sandbox_module, "argocd_helpers", lambda: tmp_path / "helpers")
    env = sandbox_module.argocd_env(tmp_path / "kubeconfig", "argocd-repo-server")
    scratch = Path(env["TMPDIR"])
    assert scratch.is_dir()
    assert scratch.is_relative_to(sandbox_module.STATE)
    # and its git credential socket, which Argo CD otherwise leaves in the host's /tmp
    assert Path(env["ARGOCD_ASK_PASS_SOCK"]).parent == scratch


def test_binary_missing_says_how_to_build(
    sandbox_module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_module, "SANDBOX_BIN", tmp_path / "empty-bin")
    with pytest.raises(sandbox_module.SandboxError, match="make sandbox-tools"):
        sandbox_module.binary("kube-apiserver")


def test_main_status_reports_down_without_env_file(
    sandbox_module: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sandbox_module, "ENV_FILE", sandbox_module.STATE / "env.json")
    assert sandbox_module.main(["status"]) == 1
    assert "down" in capsys.readouterr().out


def test_main_rejects_unknown_command(sandbox_module: ModuleType) -> None:
    with pytest.raises(SystemExit) as exc:
        sandbox_module.main(["sideways"])
    assert exc.value.code == 2


# --- live mode (one real node): the pieces that need no root and no node --------------------


def test_host_leftovers_names_everything_a_node_can_leave(sandbox_module: ModuleType) -> None:
    before = {
        "paths": {"/run/containerd": None, "/var/lib/cni": ["networks"]},
        "links": ["eth0", "lo"],
        "iptables": {"iptables/nat": ["-P OUTPUT ACCEPT"]},
        "sysctls": {"net/ipv4/ip_forward": "0"},
        "cgroups": [],
        "mounts": ["/"],
    }
    assert sandbox_module.host_leftovers(before, before) == []
    after = {
        "paths": {"/run/containerd": ["s"], "/var/lib/cni": ["networks", "results"]},
        "links": ["elpv-br0", "eth0", "lo"],
        "iptables": {"iptables/nat": ["-N KUBE-SERVICES", "-P OUTPUT ACCEPT"]},
        "sysctls": {"net/ipv4/ip_forward": "1"},
        "cgroups": ["memory/elpv-sandbox"],
        "mounts": ["/", "/run/netns/cni-1"],
    }
    found = "\n".join(sandbox_module.host_leftovers(before, after))
    for leftover in (
        "elpv-br0",
        "memory/elpv-sandbox",
        "/run/netns/cni-1",
        "/run/containerd",
        "results",
        "KUBE-SERVICES",
        "ip_forward",
    ):
        assert leftover in found, f"{leftover} not reported in:\n{found}"


def test_live_mode_without_a_pushed_image_says_how_to_get_one(
    sandbox_module: ModuleType, tmp_path: Path
) -> None:
    with pytest.raises(sandbox_module.SandboxError, match="make e2e-live"):
        sandbox_module.image_from_json(tmp_path / "missing.json")
    pushed = tmp_path / "image.json"
    pushed.write_text('{"image": "127.0.0.1:5000/x", "tag": "t", "digest": "sha256:ab"}')
    assert sandbox_module.image_from_json(pushed) == "127.0.0.1:5000/x:t@sha256:ab"


def test_kwokctl_config_live_mode_leaves_the_node_to_the_kubelet(
    sandbox_module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "etcd"):
        (bin_dir / name).touch()
    (bin_dir / "kubectl").touch()
    monkeypatch.setattr(sandbox_module, "SANDBOX_BIN", bin_dir)
    kwok = json.loads(sandbox_module.kwokctl_config(live=False).read_text())
    assert "disable" not in kwok["options"]
    # `up` has chosen (and firewalled) the API server's port first (sandbox/addons.py).
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "apiserver-port").write_text("40123")
    live = json.loads(sandbox_module.kwokctl_config(live=True).read_text())
    assert live["options"]["disable"] == ["kwok-controller"]
    args = {a["key"] for a in live["componentsPatches"][0]["extraArgs"]}
    assert args >= {
        "kubelet-client-certificate",
        "kubelet-client-key",
        "kubelet-preferred-address-types",
    }


def test_node_configs_keep_every_path_in_the_state_dir(
    sandbox_module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "runc").touch()
    monkeypatch.setattr(sandbox_module, "SANDBOX_BIN", bin_dir)
    configs = sandbox_module.write_node_configs(tmp_path / "kubeconfig", "reg/pause:1")
    containerd = tomllib.loads(configs["containerd"].read_text())
    assert containerd["version"] == 4
    assert containerd["imports"] == []
    plugins = containerd["plugins"]
    paths = [
        containerd["root"],
        containerd["state"],
        plugins["io.containerd.server.v1.grpc"]["address"],
        plugins["io.containerd.server.v1.ttrpc"]["address"],
        plugins["io.containerd.internal.v1.opt"]["path"],
        plugins["io.containerd.cri.v1.runtime"]["cni"]["conf_dir"],
        plugins["io.containerd.cri.v1.images"]["registry"]["config_path"],
    ]
    for path in paths:
        assert Path(path).is_relative_to(sandbox_module.STATE), path
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert runtime["netns_mounts_under_state_dir"] is True
    assert runtime["restrict_oom_score_adj"] is True
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == "reg/pause:1"
    kubelet = json.loads(configs["kubelet"].read_text())
    assert kubelet["failCgroupV1"] is False
    assert kubelet["cgroupRoot"] == f"/{sandbox_module.CGROUP_PARENT}"
    assert kubelet["address"] == sandbox_module.NODE_IP
    assert Path(kubelet["podLogsDir"]).is_relative_to(sandbox_module.STATE)
    proxy = json.loads(configs["kube-proxy"].read_text())
    assert proxy["nodePortAddresses"] == [f"{sandbox_module.NODE_IP}/32"]
    cni = json.loads(next(sandbox_module.node_dir("cni", "net.d").glob("*.conflist")).read_text())
    assert cni["plugins"][0]["bridge"] == sandbox_module.BRIDGE
    assert cni["plugins"][0]["ipMasq"] is False
