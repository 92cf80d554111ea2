"""The promotion PR's required check against the sandbox's real Argo CD: green for the digest
staging runs (Synced, Healthy, its live Deployment rolled out on that digest), red with the
reason for any other digest. Runs after test_gitops_flows.py (file order), whatever
staging runs by then."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .conftest import ROOT, STAGING, Checkout, Sandbox, sh

pytestmark = pytest.mark.e2e


def _session_token(sandbox: Sandbox) -> str:
    """A token for the admin account (Argo CD's /api/v1/session, as `argocd login` does)."""
    request = urllib.request.Request(
        f"http://{sandbox.env['argocd_server']}/api/v1/session",
        data=json.dumps(
            {"username": "admin", "password": sandbox.env["argocd_admin_password"]}
        ).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        token: str = json.loads(response.read())["token"]
    return token


def _check(sandbox: Sandbox, repo: Path, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitops", "--repo", str(repo), "promotion-check", "--env", "prod"],
        env={
            **os.environ,
            "ARGOCD_SERVER": f"http://{sandbox.env['argocd_server']}",
            "ARGOCD_AUTH_TOKEN": token,
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _pin_prod(checkout: Checkout, image: str) -> None:
    sh(
        [str(ROOT / ".tools" / "bin" / "kustomize"), "edit", "set", "image",
         f"elpv-classifier={image}"],
        cwd=checkout.path / "overlays" / "prod",
    )  # fmt: skip


def test_promotion_check_passes_only_for_the_digest_staging_runs(
    sandbox: Sandbox, fresh_checkout: Checkout
) -> None:
    sandbox.argocd("app", "wait", STAGING, "--sync", "--health", "--operation", "--timeout", "120")
    running = sandbox.live_image(STAGING)  # name:tag@sha256:... as Argo CD applied it
    token = _session_token(sandbox)

    _pin_prod(fresh_checkout, running)
    ready = _check(sandbox, fresh_checkout.path, token)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    digest = running.rsplit("@", 1)[1]
    assert f"runs {digest}, Synced and Healthy" in ready.stdout

    other = running.rsplit("@", 1)[0] + "@sha256:" + "0" * 64
    _pin_prod(fresh_checkout, other)
    refused = _check(sandbox, fresh_checkout.path, token)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    name = running.split("@", 1)[0].rsplit(":", 1)[0]
    assert f"does not run {name}@sha256:{'0' * 64}" in refused.stdout
    assert "NOT ready" in refused.stdout
    sh(["git", "checkout", "--", "."], cwd=fresh_checkout.path)
