"""The promotion PR's required check (gitops.promotion_check): green only when staging runs the
digest the PR would put in prod, Synced and Healthy. The Application objects below are what Argo
CD reports (`status.sync`, `status.health`, `status.summary.images`); a test validates them
against Argo CD's own CRD schema, so the fields the check reads are real ones."""

from __future__ import annotations

import copy
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops.cli import main
from gitops.commands.promotion_check import PromotionCheckRequest, problems, promotion_check
from gitops.commands.validate import manifests
from gitops.core.errors import UsageError

IMAGE = "ghcr.io/elpv-gitops/elpv-classifier"
DIGEST = "sha256:" + "1" * 64
OTHER = "sha256:" + "2" * 64

RUNNING: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Application",
    "metadata": {"name": "elpv-classifier-staging", "namespace": "argocd"},
    "spec": {
        "project": "elpv-classifier",
        "source": {"repoURL": "https://github.com/elpv-gitops/elpv-gitops.git",
                   "path": "overlays/staging", "targetRevision": "main"},
        "destination": {"server": "https://kubernetes.default.svc", "namespace": "elpv-staging"},
    },
    "status": {
        "sync": {"status": "Synced", "revision": "a" * 40},
        "health": {"status": "Healthy"},
        "summary": {"images": [f"{IMAGE}:{'a' * 40}@{DIGEST}"]},
        "operationState": {"phase": "Succeeded", "message": "successfully synced",
                           "startedAt": "2026-12-06T10:00:00Z",
                           "operation": {"sync": {"revision": "a" * 40}}},
    },
}  # fmt: skip


def test_the_application_objects_here_are_valid_argo_cd_applications(tmp_path: Path) -> None:
    tools = manifests.Toolchain.from_env()
    missing = [m for m in tools.missing() if "Argo CD" in m or "kubeconform" in m]
    assert not missing, f"{missing}: run `make manifest-tools`"
    path = tmp_path / "application.yaml"
    path.write_text(yaml.safe_dump(RUNNING))
    latest = manifests.SUPPORTED_KUBERNETES_VERSIONS[-1:]
    assert manifests.check_schemas(tools, {path: "test"}, latest) == []


def test_staging_running_the_digest_synced_and_healthy_passes() -> None:
    assert problems(RUNNING, IMAGE, DIGEST) == []


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("sync", "status"), "OutOfSync", "is OutOfSync, not Synced"),
        (("health", "status"), "Progressing", "is Progressing, not Healthy"),
        (("health", "status"), "Degraded", "is Degraded, not Healthy"),
        (("summary", "images"), [f"{IMAGE}:{'b' * 40}@{OTHER}"], f"does not run {IMAGE}@{DIGEST}"),
        (("summary", "images"), [], "(it runs nothing)"),
        (("operationState", "phase"), "Running", "is still syncing"),
    ],
)
def test_anything_else_is_not_ready(path: tuple[str, str], value: object, expected: str) -> None:
    app = copy.deepcopy(RUNNING)
    app["status"][path[0]][path[1]] = value
    found = problems(app, IMAGE, DIGEST)
    assert any(expected in problem for problem in found), found


def test_another_image_with_the_same_digest_is_not_enough() -> None:
    assert problems(RUNNING, "ghcr.io/elsewhere/elpv-classifier", DIGEST)


def _repo(tmp_path: Path, digests: list[str]) -> Path:
    """A repository whose overlays/prod pins each digest in turn, one commit each."""
    repo = tmp_path / "repo"
    (repo / "overlays" / "prod").mkdir(parents=True)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=env)
    for digest in digests:
        (repo / "overlays" / "prod" / "kustomization.yaml").write_text(
            "images:\n- name: elpv-classifier\n"
            f"  newName: {IMAGE}\n  newTag: {'a' * 40}\n  digest: {digest}\n"
        )
        subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
        subprocess.run(
            ["git", "-C", str(repo), "commit", "--allow-empty", "-qm", digest], check=True, env=env
        )
    return repo


def test_a_change_that_keeps_prods_digest_passes_without_asking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(tmp_path, [DIGEST, DIGEST])
    code = main(["--repo", str(repo), "promotion-check", "--base", "HEAD^1"])
    assert code == 0
    assert f"keeps {DIGEST}" in capsys.readouterr().out


def test_a_promotion_needs_argo_cd_to_answer(tmp_path: Path) -> None:
    """A changed digest is never passed unverified: without Argo CD credentials it is refused."""
    repo = _repo(tmp_path, [OTHER, DIGEST])
    request = PromotionCheckRequest("prod", "staging", None, "elpv-classifier", "HEAD^1")
    with pytest.raises(UsageError, match="ARGOCD_SERVER and ARGOCD_AUTH_TOKEN must be set"):
        promotion_check(request, repo, env={})
    with pytest.raises(UsageError, match="is not an http"):
        promotion_check(
            replace(request, base=None),
            repo,
            env={"ARGOCD_SERVER": "argocd", "ARGOCD_AUTH_TOKEN": "t"},
        )


def test_the_promotion_pr_body_names_the_digest_it_proposes(sandbox) -> None:  # type: ignore[no-untyped-def]
    ci = sandbox.clone("ci")
    revision = sandbox.source_commit(ci, "one")
    assert sandbox.gitops(ci, *sandbox.bump_args("staging", revision)).returncode == 0
    result = sandbox.gitops(ci, "promote", "--from", "staging", "--to", "prod")
    assert result.returncode == 0, result.stderr
    digest = sandbox.digest_for(revision)
    assert f"**Digest:** `{digest}`. Approving this PR approves this digest only" in result.stdout
