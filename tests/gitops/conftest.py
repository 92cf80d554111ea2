"""Fixtures for the gitops tests. `sandbox` is a throwaway deployment repository: a bare
`origin` in a temp folder and clones acting as CI and as a person, all driven with the real
git and the real kustomize.

The overlays here are a minimal stand-in of our own (a one-container Deployment), so these tests
do not depend on the project's real manifests.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from classifier.model_card import ModelCard, ModelInput

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = "127.0.0.1:5000/elpv-classifier"
DATA_HASH = "d" * 32 + ".dir"

BASE_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: elpv-classifier
spec:
  selector:
    matchLabels: {app: elpv-classifier}
  template:
    metadata:
      labels: {app: elpv-classifier}
    spec:
      containers:
        - name: server
          image: elpv-classifier
"""

OVERLAY = """\
# {env}: patches only; the image line is moved by `gitops bump` (kustomize edit set image).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: elpv-{env}
resources:
  - ../../k8s-base
images:
  - name: elpv-classifier
    newName: {image}
    newTag: bootstrap
"""


def find_kustomize() -> str | None:
    explicit = os.environ.get("KUSTOMIZE")
    for candidate in (explicit, shutil.which("kustomize"), REPO_ROOT / ".tools/bin/kustomize"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def digest_for(label: str) -> str:
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


def make_card(revision: str, accuracy: float, data_hash: str = DATA_HASH) -> ModelCard:
    return ModelCard(
        name="elpv-classifier",
        version=revision[:7],
        git_revision=revision,
        data_hash=data_hash,
        input=ModelInput(height=64, width=64),
        threshold=0.5,
        labels=("functional", "defective"),
        metrics={
            "accuracy": accuracy,
            "balanced_accuracy": accuracy - 0.02,
            "roc_auc": accuracy + 0.03,
            "f1": accuracy - 0.05,
        },
        params={"train": {"epochs": 1}},
        exported_at="2026-11-28T00:00:00+00:00",
        export_parity_max_abs_diff=1e-6,
    )


@dataclass
class Sandbox:
    root: Path
    env: dict[str, str]
    IMAGE = IMAGE

    @staticmethod
    def digest_for(label: str) -> str:
        return digest_for(label)

    @property
    def origin(self) -> Path:
        return self.root / "origin.git"

    def git(self, cwd: Path, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=self.env, capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout.strip()

    def gitops(self, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gitops", *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def gitops_popen(self, cwd: Path, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "gitops", *args],
            cwd=cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def clone(self, name: str) -> Path:
        path = self.root / name
        self.git(self.root, "clone", "--quiet", str(self.origin), str(path))
        return path

    def source_commit(self, clone: Path, message: str, branch: str = "main") -> str:
        """A person changes the model code and pushes: returns the new commit's SHA."""
        app = clone / "src" / "app.py"
        app.write_text(app.read_text() + f"# {message}\n")
        self.git(clone, "commit", "--quiet", "-am", message)
        self.git(clone, "push", "--quiet", "origin", f"HEAD:{branch}")
        return self.git(clone, "rev-parse", "HEAD")

    def write_card(
        self, revision: str, accuracy: float, data_hash: str = "d" * 32 + ".dir"
    ) -> Path:
        path = self.root / "cards" / f"{revision[:12]}-{accuracy}.json"
        make_card(revision, accuracy, data_hash).save(path)
        return path

    def bump_args(self, env: str, revision: str, accuracy: float = 0.9) -> list[str]:
        return [
            "bump",
            "--env", env,
            "--image", IMAGE,
            "--tag", revision,
            "--digest", digest_for(revision),
            "--model-card", str(self.write_card(revision, accuracy)),
        ]  # fmt: skip

    def state(self, clone: Path) -> tuple[str, str]:
        """HEAD and `git status --porcelain`: what an error must leave untouched."""
        return self.git(clone, "rev-parse", "HEAD"), self.git(clone, "status", "--porcelain")

    def origin_file(self, path: str, ref: str = "main") -> str:
        return self.git(self.origin, "show", f"{ref}:{path}")


def create_sandbox(root: Path, kustomize: str) -> Sandbox:
    env = {
        **os.environ,
        "KUSTOMIZE": kustomize,
        "GIT_AUTHOR_NAME": "Test Person",
        "GIT_AUTHOR_EMAIL": "person@example.test",
        "GIT_COMMITTER_NAME": "Test CI",
        "GIT_COMMITTER_EMAIL": "ci@example.test",
        # Keep the developer's own git configuration out of the tests.
        "GIT_CONFIG_GLOBAL": str(root / "gitconfig"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
    }
    (root / "gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
    sandbox = Sandbox(root, env)
    sandbox.git(root, "init", "--quiet", "--bare", str(sandbox.origin))
    seed = root / "seed"
    (seed / "k8s-base").mkdir(parents=True)
    (seed / "k8s-base" / "deployment.yaml").write_text(BASE_DEPLOYMENT)
    (seed / "k8s-base" / "kustomization.yaml").write_text("resources:\n  - deployment.yaml\n")
    for env_name in ("staging", "prod"):
        overlay = seed / "overlays" / env_name
        overlay.mkdir(parents=True)
        (overlay / "kustomization.yaml").write_text(OVERLAY.format(env=env_name, image=IMAGE))
    (seed / "src").mkdir()
    (seed / "src" / "app.py").write_text('"""The model code."""\n')
    sandbox.git(root, "init", "--quiet", str(seed))
    sandbox.git(seed, "add", ".")
    sandbox.git(seed, "commit", "--quiet", "-m", "initial layout")
    sandbox.git(seed, "remote", "add", "origin", str(sandbox.origin))
    sandbox.git(seed, "push", "--quiet", "origin", "main")
    return sandbox


@pytest.fixture(scope="session")
def kustomize() -> str:
    found = find_kustomize()
    if found is None:
        pytest.fail("kustomize not found: run `make tools` (or set KUSTOMIZE)")
    return found


@pytest.fixture
def sandbox(tmp_path: Path, kustomize: str) -> Sandbox:
    return create_sandbox(tmp_path, kustomize)
