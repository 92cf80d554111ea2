"""Fast checks of the sandbox's process supervision (default suite, no sandbox needed).

The e2e run depends on `down` leaving nothing behind; these pin the mechanism: every server is
started in its own process group with a pid file, and stopping it ends the whole group, even a
child that ignores SIGTERM.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
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
