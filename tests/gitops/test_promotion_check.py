"""The promotion PR's required check (gitops.promotion_check): green only when staging runs the
digest the PR would put in prod, Synced, Healthy and rolled out. The objects below are what Argo
CD answers: the Application (`status.sync`, `status.health`, `status.operationState`,
`status.resources`) and the live Deployment its resource route returns, validated against Argo
CD's CRD schema and Kubernetes' own schema; the route and the shape of its answer are checked
against Argo CD's API definitions (swagger.json). So the fields the check reads are real ones."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops.cli import main
from gitops.commands.promotion_check import (
    PromotionCheckRequest,
    deployments,
    problems,
    promotion_check,
)
from gitops.commands.validate import manifests, schemas
from gitops.core.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/elpv-gitops/elpv-classifier"
DIGEST = "sha256:" + "1" * 64
OTHER = "sha256:" + "2" * 64
STAGING_NS = "elpv-staging"

RUNNING: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Application",
    "metadata": {"name": "elpv-classifier-staging", "namespace": "argocd"},
    "spec": {
        "project": "elpv-classifier",
        "source": {"repoURL": "https://github.com/elpv-gitops/elpv-gitops.git",
                   "path": "overlays/staging", "targetRevision": "main"},
        "destination": {"server": "https://kubernetes.default.svc", "namespace": STAGING_NS},
    },
    "status": {
        "sync": {"status": "Synced", "revision": "a" * 40},
        "health": {"status": "Healthy"},
        "resources": [
            {"version": "v1", "kind": "Service", "namespace": STAGING_NS,
             "name": "elpv-classifier", "status": "Synced", "health": {"status": "Healthy"}},
            {"group": "apps", "version": "v1", "kind": "Deployment", "namespace": STAGING_NS,
             "name": "elpv-classifier", "status": "Synced", "health": {"status": "Healthy"}},
        ],
        "operationState": {"phase": "Succeeded", "message": "successfully synced",
                           "startedAt": "2026-12-06T10:00:00Z",
                           "operation": {"sync": {"revision": "a" * 40}}},
    },
}  # fmt: skip

# GET /api/v1/applications/elpv-classifier-staging/resource?kind=Deployment&...: the manifest
# of the live Deployment, two replicas rolled out on the digest.
DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "elpv-classifier", "namespace": STAGING_NS, "generation": 3},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "elpv-classifier"}},
        "template": {
            "metadata": {"labels": {"app": "elpv-classifier"}},
            "spec": {"containers": [{"name": "classifier",
                                     "image": f"{IMAGE}:{'a' * 40}@{DIGEST}"}]},
        },
    },
    "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2,
               "readyReplicas": 2, "availableReplicas": 2},
}  # fmt: skip
KEY = (STAGING_NS, "elpv-classifier")
LIVE = {KEY: DEPLOYMENT}


def test_the_objects_here_are_valid_applications_and_deployments(tmp_path: Path) -> None:
    tools = manifests.Toolchain.from_env()
    missing = [m for m in tools.missing() if "Argo CD" in m or "kubeconform" in m]
    assert not missing, f"{missing}: run `make manifest-tools`"
    files = {}
    for name, obj in (("application.yaml", RUNNING), ("deployment.yaml", DEPLOYMENT)):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(obj))
        files[path] = "test"
    latest = manifests.SUPPORTED_KUBERNETES_VERSIONS[-1:]
    assert manifests.check_schemas(tools, files, latest) == []


def _unknown_fields(
    value: Any, schema: dict[str, Any], definitions: dict[str, Any], at: str
) -> list[str]:
    """Keys of `value` that the swagger `schema` does not define (swagger allows extra keys, so
    a misspelt field would otherwise pass)."""
    while "$ref" in schema:
        schema = definitions[schema["$ref"].rsplit("/", 1)[1]]
    if isinstance(value, dict):
        properties = dict(schema.get("properties", {}))
        for part in schema.get("allOf", []):  # ResourceNode is allOf ResourceRef + its own
            while "$ref" in part:
                part = definitions[part["$ref"].rsplit("/", 1)[1]]
            properties.update(part.get("properties", {}))
        found = [f"{at}.{key}" for key in value if key not in properties]
        for key, item in value.items():
            if key in properties:
                found += _unknown_fields(item, properties[key], definitions, f"{at}.{key}")
        return found
    if isinstance(value, list):
        return [
            problem
            for index, item in enumerate(value)
            for problem in _unknown_fields(
                item, schema.get("items", {}), definitions, f"{at}[{index}]"
            )
        ]
    return []


def test_the_route_and_its_answer_are_argo_cds_api() -> None:
    """The resource route the check calls exists with the query it sends and answers
    `{"manifest": "<json>"}`; the managed-resource entries it reads are the Application
    status's (Argo CD's swagger.json, from the module the sandbox runs)."""
    version = next(
        line.split("=", 1)[1].strip()
        for line in (ROOT / "sandbox" / "tools" / "versions.sh").read_text().splitlines()
        if line.startswith("ARGOCD_VERSION=")
    )
    with tempfile.TemporaryDirectory() as scratch:
        module = schemas.go_module_dir(
            os.environ.get("GO", "go"), schemas.ARGOCD_MODULE, version, Path(scratch)
        )
    swagger = json.loads((module / "assets" / "swagger.json").read_text())
    definitions = swagger["definitions"]
    route = swagger["paths"]["/api/v1/applications/{name}/resource"]["get"]
    assert {"namespace", "resourceName", "group", "version", "kind"} <= {
        p["name"] for p in route["parameters"]
    }
    answer = route["responses"]["200"]["schema"]
    assert _unknown_fields({"manifest": "{}"}, answer, definitions, "a") == []
    assert _unknown_fields({"manifests": "{}"}, answer, definitions, "a") == ["a.manifests"]
    status = {"$ref": "#/definitions/v1alpha1ApplicationStatus"}
    assert _unknown_fields(RUNNING["status"], status, definitions, "status") == []


def test_staging_running_the_digest_synced_and_healthy_passes() -> None:
    assert deployments(RUNNING) == [KEY]
    assert problems(RUNNING, LIVE, IMAGE, DIGEST) == []


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("sync", "status"), "OutOfSync", "is OutOfSync, not Synced"),
        (("health", "status"), "Progressing", "is Progressing, not Healthy"),
        (("health", "status"), "Degraded", "is Degraded, not Healthy"),
        (("operationState", "phase"), "Running", "is still syncing"),
    ],
)
def test_anything_else_is_not_ready(path: tuple[str, str], value: object, expected: str) -> None:
    app = copy.deepcopy(RUNNING)
    app["status"][path[0]][path[1]] = value
    found = problems(app, LIVE, IMAGE, DIGEST)
    assert any(expected in problem for problem in found), found


def _live(image: str | None = None, **status: int) -> dict[tuple[str, str], Any]:
    deployment = copy.deepcopy(DEPLOYMENT)
    if image is not None:
        deployment["spec"]["template"]["spec"]["containers"][0]["image"] = image
    deployment["status"].update(status)
    return {KEY: deployment}


@pytest.mark.parametrize(
    ("live", "expected"),
    [
        (
            _live(f"{IMAGE}:{'b' * 40}@{OTHER}"),
            f"does not run {IMAGE}@{DIGEST} (it runs {IMAGE}:{'b' * 40}@{OTHER})",
        ),
        # A tag alone names no digest: not proof of what runs.
        (_live(f"{IMAGE}:{'a' * 40}"), f"does not run {IMAGE}@{DIGEST}"),
        ({}, "(it manages no Deployment)"),
        # Mid-rollout: the template is on the digest, the replicas are not all there yet.
        (_live(updatedReplicas=1), "1 updatedReplicas of 2: the rollout is not done"),
        (_live(availableReplicas=1), "1 availableReplicas of 2: the rollout is not done"),
        (_live(replicas=3), "3 replicas of 2: the rollout is not done"),  # old pods left
        (_live(observedGeneration=2), "has not seen its latest change yet"),
    ],
)
def test_a_deployment_not_rolled_out_on_the_digest_is_not_ready(
    live: dict[tuple[str, str], Any], expected: str
) -> None:
    found = problems(RUNNING, live, IMAGE, DIGEST)
    assert any(expected in problem for problem in found), found


def test_the_applications_summary_is_not_what_counts() -> None:
    """`status.summary.images` (the controller's cache) is neither needed nor enough."""
    app = copy.deepcopy(RUNNING)
    app["status"]["summary"] = {"images": [f"{IMAGE}:{'a' * 40}@{DIGEST}"]}
    assert problems(app, _live(f"{IMAGE}@{OTHER}"), IMAGE, DIGEST) != []
    app["status"]["summary"] = {}
    assert problems(app, LIVE, IMAGE, DIGEST) == []


def test_another_image_with_the_same_digest_is_not_enough() -> None:
    assert problems(RUNNING, LIVE, "ghcr.io/elsewhere/elpv-classifier", DIGEST)
    assert problems(RUNNING, LIVE, IMAGE + "-other", DIGEST)


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
