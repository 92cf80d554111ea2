"""Fixtures for the end-to-end GitOps scenarios: they drive git and read the API server.

The sandbox (`make sandbox-up`, or `make e2e` which also tears it down) writes
.tools/sandbox/state/env.json; every fixture here reads that file. Nothing is mocked: commits go
to the local `origin` (git daemon), Argo CD renders them with kustomize and syncs them into a real
kube-apiserver whose nodes and pods are simulated by kwok.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = Path(os.environ.get("SANDBOX_STATE", ROOT / ".tools" / "sandbox" / "state")) / "env.json"
TIMINGS_FILE = ROOT / "build" / "sandbox-e2e.json"
SANDBOX_PY = [sys.executable, str(ROOT / "sandbox" / "sandbox.py")]
# The serving image `make e2e-live` pushed (the tiny test model), which `up --live` deploys.
IMAGE_JSON = Path(os.environ.get("ELPV_IMAGE_JSON", ROOT / "build" / "test-image.json"))

STAGING = "elpv-classifier-staging"
PROD = "elpv-classifier-prod"
ROOT_APP = "elpv-gitops-root"
NAMESPACE = {STAGING: "elpv-staging", PROD: "elpv-prod"}
DEPLOYMENT = "elpv-classifier"
# Budget for one wait in live mode (a rollout, a cold image pull, a scale-up).
LIVE_TIMEOUT_S = float(os.environ.get("E2E_LIVE_TIMEOUT", "300"))
# Budget for one change to go from `git push` to Synced + Healthy (the target is <= 30 s).
SYNC_TIMEOUT_S = float(os.environ.get("E2E_SYNC_TIMEOUT", "120"))

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "elpv e2e",
    "GIT_AUTHOR_EMAIL": "e2e@elpv-gitops.invalid",
    "GIT_COMMITTER_NAME": "elpv e2e",
    "GIT_COMMITTER_EMAIL": "e2e@elpv-gitops.invalid",
}


def sh(
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"`{' '.join(argv)}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@dataclass
class Sandbox:
    """The running sandbox, as env.json describes it, with the few verbs the scenarios need."""

    env: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    # --- API server ---------------------------------------------------------------------------
    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh([self.env["kubectl"], "--kubeconfig", self.env["kubeconfig"], *args], check=check)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        proc = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        obj: dict[str, Any] = json.loads(proc.stdout)
        return obj

    def deployment(self, app: str) -> dict[str, Any]:
        obj = self.get("deployment", DEPLOYMENT, NAMESPACE[app])
        assert obj is not None, f"no Deployment {DEPLOYMENT} in {NAMESPACE[app]}"
        return obj

    def live_image(self, app: str) -> str:
        image: str = self.deployment(app)["spec"]["template"]["spec"]["containers"][0]["image"]
        return image

    def deployment_available(self, app: str) -> bool:
        """The rollout finished: every replica updated, ready and available (kwok reports them)."""
        dep = self.deployment(app)
        want = dep["spec"].get("replicas", 1)
        status = dep.get("status", {})
        return bool(
            status.get("observedGeneration") == dep["metadata"]["generation"]
            and status.get("updatedReplicas", 0) == want
            and status.get("availableReplicas", 0) == want
            and status.get("replicas", 0) == want
        )

    # --- Argo CD ------------------------------------------------------------------------------
    def argocd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(
            [self.env["argocd"], *args, "--config", self.env["argocd_config"]],
            check=check,
            env={**os.environ, "KUBECONFIG": self.env["kubeconfig"]},
        )

    def app(self, name: str, refresh: bool = False) -> dict[str, Any]:
        args = ["app", "get", name, "-o", "json"]
        if refresh:
            args.append("--refresh")
        obj: dict[str, Any] = json.loads(self.argocd(*args).stdout)
        return obj

    def wait_deployed(
        self, name: str, revision: str, label: str, timeout: float = SYNC_TIMEOUT_S
    ) -> float:
        """Refresh `name` (as a push webhook would), then wait until it runs `revision`.

        Done = Argo CD reports the revision Synced and Healthy (`argocd app wait`) AND the API
        server's Deployment finished rolling out. Returns the seconds since the call, which the
        scenarios call right after `git push`, and records them under `label`.
        """
        start = time.monotonic()
        self.app(name, refresh=True)
        deadline = start + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.app(name).get("status", {})
            if status.get("sync", {}).get("revision") == revision:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(
                f"{name} did not pick up {revision[:12]} within {timeout:.0f} s: "
                f"{json.dumps(status.get('conditions') or status.get('sync'))}"
            )
        remaining = max(1, int(deadline - time.monotonic()))
        self.argocd(
            "app", "wait", name, "--sync", "--health", "--operation", "--timeout", str(remaining)
        )
        while not self.deployment_available(name):
            assert time.monotonic() < deadline, f"{name}: Deployment never became available"
            time.sleep(0.5)
        elapsed = time.monotonic() - start
        self.timings[label] = round(elapsed, 1)
        return elapsed


def wait_until(what: str, check: Any, timeout: float = LIVE_TIMEOUT_S, poll: float = 1.0) -> Any:
    """Call `check` every `poll` seconds until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(poll)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


@contextmanager
def live_sandbox() -> Iterator[Sandbox]:
    """`sandbox.py up --live` with the pushed test image; `down` afterwards, whatever happens.

    Each live test module starts and stops its own (the live tests run one module at a time)."""
    if ENV_FILE.exists():
        pytest.fail(f"a sandbox is already up ({ENV_FILE}): `make sandbox-down` first")
    proc = subprocess.run(
        [*SANDBOX_PY, "up", "--live", "--image-json", str(IMAGE_JSON)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"sandbox up --live failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    try:
        yield Sandbox(env=json.loads(ENV_FILE.read_text()))
    finally:
        subprocess.run([*SANDBOX_PY, "down"], check=False)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    if not ENV_FILE.exists():
        pytest.fail(
            f"the sandbox is not up ({ENV_FILE} missing): run `make e2e`, "
            "or `make sandbox-up` then `pytest -m e2e tests/e2e`"
        )
    box = Sandbox(env=json.loads(ENV_FILE.read_text()))
    yield box
    TIMINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS_FILE.write_text(
        json.dumps(
            {"sandbox_up_seconds": box.env.get("started_seconds"), "scenarios": box.timings},
            indent=2,
        )
    )


@dataclass
class Checkout:
    """A clone of `origin`: the scenarios commit here and push, like a developer or CI would."""

    path: Path
    origin: str

    def git(self, *args: str) -> str:
        return sh(["git", *args], cwd=self.path, env={**os.environ, **GIT_IDENTITY}).stdout.strip()

    def sync(self) -> None:
        self.git("fetch", "--quiet", "origin")
        self.git("checkout", "--quiet", "main")
        self.git("reset", "--quiet", "--hard", "origin/main")

    def commit_all(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "--quiet", "-m", message)
        return self.git("rev-parse", "HEAD")

    def push(self, ref: str = "main") -> str:
        self.git("push", "--quiet", "origin", f"HEAD:refs/heads/{ref}")
        return self.git("rev-parse", "HEAD")

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")


@pytest.fixture(scope="session")
def checkout(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Checkout:
    path = tmp_path_factory.mktemp("origin-clone") / "repo"
    sh(["git", "clone", "--quiet", sandbox.env["origin_url"], str(path)])
    return Checkout(path=path, origin=sandbox.env["origin_url"])


@pytest.fixture
def fresh_checkout(checkout: Checkout) -> Checkout:
    """The clone at origin/main: each scenario starts from what origin holds now."""
    checkout.sync()
    return checkout
