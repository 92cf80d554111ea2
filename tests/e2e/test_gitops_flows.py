"""The three git flows (and Argo CD's guarantees around them) against the real sandbox.

Every scenario changes git (or the live cluster), then checks what the API server holds. They
run in this order and each leaves origin/main in a state the next one can start from:
bootstrap, self-heal, prune, push-to-deploy, promotion, rollback, broken manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from .conftest import (
    DEPLOYMENT,
    NAMESPACE,
    PROD,
    ROOT,
    ROOT_APP,
    STAGING,
    SYNC_TIMEOUT_S,
    Checkout,
    Sandbox,
    sh,
)

pytestmark = pytest.mark.e2e

GITOPS = [str(ROOT / ".venv" / "bin" / "gitops")]
KUSTOMIZE = str(ROOT / ".tools" / "bin" / "kustomize")


def digest_of(image: str) -> str:
    assert "@sha256:" in image, f"image {image} is not pinned by digest"
    return image.rsplit("@", 1)[1]


def rendered_image(checkout: Checkout, env: str) -> str:
    """The image `kustomize build overlays/<env>` gives at the checkout's HEAD."""
    out = sh([KUSTOMIZE, "build", str(checkout.path / "overlays" / env)]).stdout
    for doc in yaml.safe_load_all(out):
        if doc and doc.get("kind") == "Deployment":
            return str(doc["spec"]["template"]["spec"]["containers"][0]["image"])
    raise AssertionError(f"overlays/{env} renders no Deployment image")


def test_bootstrap_applications_synced_healthy_and_deployments_available(
    sandbox: Sandbox, fresh_checkout: Checkout
) -> None:
    head = fresh_checkout.head()
    for app in (STAGING, PROD):
        sandbox.wait_deployed(app, head, f"bootstrap {app.rsplit('-', 1)[1]}")
        status = sandbox.app(app)["status"]
        assert status["sync"]["status"] == "Synced"
        assert status["health"]["status"] == "Healthy"
        assert sandbox.deployment_available(app)
        env = app.rsplit("-", 1)[1]
        assert sandbox.live_image(app) == rendered_image(fresh_checkout, env)
    sandbox.argocd("app", "wait", ROOT_APP, "--sync", "--health", "--timeout", "60")


def test_self_heal_reverts_manual_image_change(sandbox: Sandbox) -> None:
    wanted = sandbox.live_image(STAGING)
    sandbox.kubectl(
        "set",
        "image",
        f"deployment/{DEPLOYMENT}",
        "classifier=tampered:by-hand",
        "-n",
        NAMESPACE[STAGING],
    )
    start = time.monotonic()
    assert sandbox.live_image(STAGING) == "tampered:by-hand"
    while sandbox.live_image(STAGING) != wanted:
        assert time.monotonic() - start < SYNC_TIMEOUT_S, "Argo CD did not undo the manual edit"
        time.sleep(0.5)
    sandbox.argocd("app", "wait", STAGING, "--sync", "--health", "--timeout", "60")
    sandbox.timings["self-heal (manual edit undone)"] = round(time.monotonic() - start, 1)


PDB_DELETE_PATCH = """\
$patch: delete
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: elpv-classifier
"""


def test_prune_removes_resource_dropped_from_overlay(
    sandbox: Sandbox, fresh_checkout: Checkout
) -> None:
    ns = NAMESPACE[STAGING]
    assert sandbox.get("pdb", DEPLOYMENT, ns) is not None, "precondition: staging has a PDB"
    sh(
        [KUSTOMIZE, "edit", "add", "patch", "--patch", PDB_DELETE_PATCH],
        cwd=fresh_checkout.path / "overlays" / "staging",
    )
    fresh_checkout.commit_all("e2e: drop staging's PodDisruptionBudget")
    removed = fresh_checkout.push()
    sandbox.wait_deployed(STAGING, removed, "prune (resource removed)")
    assert sandbox.get("pdb", DEPLOYMENT, ns) is None, "the PDB is still in the cluster"
    assert sandbox.get("pdb", DEPLOYMENT, NAMESPACE[PROD]) is not None, "prod lost its PDB"

    fresh_checkout.git("revert", "--no-edit", removed)
    restored = fresh_checkout.push()
    sandbox.wait_deployed(STAGING, restored, "prune revert (resource back)")
    assert sandbox.get("pdb", DEPLOYMENT, ns) is not None


@pytest.fixture(scope="module")
def pushed_build(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The train-deploy workflow's image step: build and push to the local registry.

    Like CI, it builds from a clean checkout of a commit (here the working copy's HEAD), so the
    tag is that commit's SHA even when the working copy has uncommitted changes. The model is
    the tiny test model (a real exported .tflite, `make test-model`) instead of a full training
    run; everything else is the workflow's own `make push`.
    """
    work = tmp_path_factory.mktemp("build")
    source = work / "source"
    image_json = work / "image.json"
    sh(["make", "-C", str(ROOT), "test-model"])
    sh(["git", "clone", "--quiet", str(ROOT), str(source)])
    shutil.copytree(ROOT / "build" / "test-model", source / "build" / "test-model")
    tools = ROOT / ".tools"
    sh(
        [
            str(ROOT / "docker" / "services.sh"),
            "run",
            "--",
            "make",
            "-C",
            str(source),
            "push",
            f"TOOLS={tools}",
            f"VENV={ROOT / '.venv'}",
            "MODEL_DIR=build/test-model",
            f"IMAGE_JSON={image_json}",
        ]
    )
    build: dict[str, str] = json.loads(image_json.read_text())
    assert build["tag"] == sh(["git", "rev-parse", "HEAD"], cwd=source).stdout.strip()
    build["source"] = str(source)
    return build


def test_push_to_deploy_moves_staging_to_new_digest_only(
    sandbox: Sandbox, fresh_checkout: Checkout, pushed_build: dict[str, str]
) -> None:
    prod_before = sandbox.live_image(PROD)
    # The push that starts the flow: the source commit the image was built from lands on
    # origin/main (in CI it is already there, in a working copy it may be newer than the seed).
    fresh_checkout.git("fetch", "--quiet", pushed_build["source"], "HEAD")
    fresh_checkout.git("merge", "--quiet", "--no-edit", pushed_build["tag"])
    fresh_checkout.push()
    sh(
        [
            *GITOPS,
            "--repo",
            str(fresh_checkout.path),
            "bump",
            "--env",
            "staging",
            # The workflow's own step: gitops bump --env staging --image "$IMAGE"
            # --tag "$TAG" --digest "$DIGEST" --model-card models/model_card.json
            "--image",
            pushed_build["image"],
            "--tag",
            pushed_build["tag"],
            "--digest",
            pushed_build["digest"],
            "--model-card",
            str(ROOT / "build" / "test-model" / "model_card.json"),
        ],
        env={**os.environ, "PATH": f"{ROOT / '.tools' / 'bin'}:{os.environ['PATH']}"},
    )
    fresh_checkout.sync()
    deployed = fresh_checkout.head()
    sandbox.wait_deployed(STAGING, deployed, "push-to-deploy (staging)")
    assert digest_of(sandbox.live_image(STAGING)) == pushed_build["digest"]
    assert sandbox.live_image(PROD) == prod_before, "prod moved on a staging deploy"


def test_promotion_merge_runs_staging_digest_in_prod(
    sandbox: Sandbox, fresh_checkout: Checkout
) -> None:
    staging_digest = digest_of(sandbox.live_image(STAGING))
    assert digest_of(sandbox.live_image(PROD)) != staging_digest, "precondition: envs differ"
    body = fresh_checkout.path.parent / "promotion-body.md"
    sh(
        [
            *GITOPS,
            "--repo",
            str(fresh_checkout.path),
            "promote",
            "--from",
            "staging",
            "--to",
            "prod",
            "--push",
            "--body-file",
            str(body),
        ],
        env={**os.environ, "PATH": f"{ROOT / '.tools' / 'bin'}:{os.environ['PATH']}"},
    )
    fresh_checkout.sync()
    # Merging the PR = a merge commit of the promotion branch on main, pushed.
    fresh_checkout.git("merge", "--no-ff", "--no-edit", "origin/promote/staging-to-prod")
    merged = fresh_checkout.push()
    sandbox.wait_deployed(PROD, merged, "promotion merge (prod)")
    assert digest_of(sandbox.live_image(PROD)) == staging_digest


def test_git_revert_of_prod_deploy_restores_previous_digest(
    sandbox: Sandbox, fresh_checkout: Checkout
) -> None:
    current = digest_of(sandbox.live_image(PROD))
    deploy_commit = fresh_checkout.git(
        "log", "-1", "--no-merges", "--format=%H", "--", "overlays/prod"
    )
    previous = digest_of(rendered_image_at(fresh_checkout, f"{deploy_commit}^", "prod"))
    assert previous != current
    fresh_checkout.git("revert", "--no-edit", deploy_commit)
    reverted = fresh_checkout.push()
    sandbox.wait_deployed(PROD, reverted, "rollback revert (prod)")
    assert digest_of(sandbox.live_image(PROD)) == previous


def rendered_image_at(checkout: Checkout, revision: str, env: str) -> str:
    worktree = checkout.path.parent / f"at-{revision.replace('^', '-parent')[:20]}"
    checkout.git("worktree", "add", "--detach", "--force", str(worktree), revision)
    try:
        return rendered_image(Checkout(path=worktree, origin=checkout.origin), env)
    finally:
        checkout.git("worktree", "remove", "--force", str(worktree))


BROKEN_RESOURCES_PATCH = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: elpv-classifier
spec:
  template:
    spec:
      containers:
      - name: classifier
        resources:
          requests:
            cpu: a-lot
"""


def test_broken_manifest_keeps_running_version_and_reports_error(
    sandbox: Sandbox, fresh_checkout: Checkout
) -> None:
    before = sandbox.deployment(STAGING)
    sh(
        [KUSTOMIZE, "edit", "add", "patch", "--patch", BROKEN_RESOURCES_PATCH],
        cwd=fresh_checkout.path / "overlays" / "staging",
    )
    fresh_checkout.commit_all("e2e: a resources patch the API server must reject")
    broken = fresh_checkout.push()
    start = time.monotonic()
    sandbox.app(STAGING, refresh=True)

    error = wait_for_reported_error(sandbox, STAGING, broken)
    sandbox.timings["broken manifest: error reported (staging)"] = round(
        time.monotonic() - start, 1
    )
    assert "invalid" in error.lower(), f"unexpected error: {error}"
    assert sandbox.app(STAGING)["status"]["sync"]["status"] != "Synced"
    after = sandbox.deployment(STAGING)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert (
        sandbox.live_image(STAGING) == before["spec"]["template"]["spec"]["containers"][0]["image"]
    )
    assert sandbox.deployment_available(STAGING), "the running version went down"

    # Recover the way a person would: revert the bad commit.
    fresh_checkout.git("revert", "--no-edit", broken)
    fixed = fresh_checkout.push()
    sandbox.argocd("app", "terminate-op", STAGING, check=False)
    sandbox.wait_deployed(STAGING, fixed, "broken manifest reverted (staging)")


def wait_for_reported_error(sandbox: Sandbox, app: str, revision: str) -> str:
    """The error Argo CD shows for `revision`: a failed sync (after retries) or a condition."""
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    while time.monotonic() < deadline:
        status = sandbox.app(app).get("status", {})
        for condition in status.get("conditions") or []:
            if condition.get("type", "").endswith("Error"):
                return str(condition.get("message"))
        op = status.get("operationState") or {}
        if op.get("operation", {}).get("sync", {}).get("revision") == revision:
            # While Argo CD retries, the phase stays Running; the failed resources say why.
            failures = [
                f"{r.get('kind')}/{r.get('name')}: {r.get('message')}"
                for r in op.get("syncResult", {}).get("resources", [])
                if r.get("status") == "SyncFailed"
            ]
            if failures or op.get("phase") in ("Failed", "Error"):
                return "; ".join(failures) or str(op.get("message"))
        time.sleep(1)
    raise AssertionError(f"{app}: no error reported for {revision[:12]} in {SYNC_TIMEOUT_S} s")


def test_timings_recorded(sandbox: Sandbox) -> None:
    """Every scenario above recorded its push -> Synced + Healthy time (bench/sandbox.py)."""
    assert sandbox.timings, "no scenario recorded a timing"
    path = Path(os.environ.get("E2E_TIMINGS", ""))
    if path.name:
        path.write_text(json.dumps(sandbox.timings))
