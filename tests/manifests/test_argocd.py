"""argocd/: restricted to this repository, these namespaces and the kinds the overlays render;
the repository URL is overridable in one way."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gitops.commands.validate import manifests

from .conftest import ROOT

Rendered = dict[str, list[dict[str, Any]]]
LOCAL_REPO = "git://127.0.0.1:9418/elpv-gitops.git"


def by_name(resources: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def test_project_allows_exactly_the_rendered_kinds_and_namespaces(
    rendered: Rendered, argocd_rendered: list[dict[str, Any]]
) -> None:
    project = by_name(argocd_rendered, "AppProject")["elpv-classifier"]["spec"]
    allowed = {(k["group"], k["kind"]) for k in project["namespaceResourceWhitelist"]}
    used = {
        (r["apiVersion"].rpartition("/")[0], r["kind"])
        for env in manifests.ENVIRONMENTS
        for r in rendered[env]
        if r["kind"] != "Namespace"
    }
    assert allowed == used
    assert [(k["group"], k["kind"]) for k in project["clusterResourceWhitelist"]] == [
        ("", "Namespace")
    ]
    assert {d["namespace"] for d in project["destinations"]} == {
        f"elpv-{env}" for env in manifests.ENVIRONMENTS
    }
    assert len(project["sourceRepos"]) == 1
    assert "*" not in project["sourceRepos"][0]


@pytest.mark.parametrize("env", manifests.ENVIRONMENTS)
def test_application_syncs_its_overlay_automatically(
    argocd_rendered: list[dict[str, Any]], env: str
) -> None:
    app = by_name(argocd_rendered, "Application")[f"elpv-classifier-{env}"]
    assert (ROOT / app["spec"]["source"]["path"] / "kustomization.yaml").is_file()
    assert app["spec"]["source"]["path"] == f"overlays/{env}"
    assert app["spec"]["destination"]["namespace"] == f"elpv-{env}"
    policy = app["spec"]["syncPolicy"]
    assert policy["automated"] == {"prune": True, "selfHeal": True}
    assert policy["retry"]["limit"] > 0
    assert policy["retry"]["backoff"]["factor"] >= 2
    assert "resources-finalizer.argocd.argoproj.io" in app["metadata"]["finalizers"]


def test_root_application_renders_argocd_itself(argocd_rendered: list[dict[str, Any]]) -> None:
    root = by_name(argocd_rendered, "Application")["elpv-gitops-root"]
    assert root["spec"]["source"]["path"] == "argocd"
    assert root["spec"]["project"] == "elpv-bootstrap"
    # deleting the bootstrap must not cascade into the environments
    assert "finalizers" not in root["metadata"]


def test_prod_has_a_sync_window_and_staging_none(argocd_rendered: list[dict[str, Any]]) -> None:
    windows = by_name(argocd_rendered, "AppProject")["elpv-classifier"]["spec"]["syncWindows"]
    assert [w["applications"] for w in windows] == [["elpv-classifier-prod"]]
    assert all(w["manualSync"] for w in windows)


def test_no_local_config_reaches_the_cluster(argocd_rendered: list[dict[str, Any]]) -> None:
    assert {r["kind"] for r in argocd_rendered} == {"AppProject", "Application"}


def test_repo_url_is_overridden_in_one_place(tools: manifests.Toolchain, tmp_path: Path) -> None:
    """The documented override (docs/environments.md) reaches every project and application."""
    argocd = tmp_path / "argocd"
    shutil.copytree(ROOT / "argocd", argocd)
    subprocess.run(
        [str(tools.kustomize), "edit", "set", "configmap", "gitops-repo",
         f"--from-literal=url={LOCAL_REPO}"],
        cwd=argocd,
        check=True,
    )  # fmt: skip
    text = manifests.render(tools.kustomize, argocd)
    resources = manifests.parse(text)
    assert "github.com" not in text
    for project in by_name(resources, "AppProject").values():
        assert project["spec"]["sourceRepos"] == [LOCAL_REPO]
    for app in by_name(resources, "Application").values():
        assert app["spec"]["source"]["repoURL"] == LOCAL_REPO
        assert app["spec"]["source"]["targetRevision"] == "main"


def test_sync_window_is_removable_for_a_sandbox(tools: manifests.Toolchain, tmp_path: Path) -> None:
    argocd = tmp_path / "argocd"
    shutil.copytree(ROOT / "argocd", argocd)
    subprocess.run(
        [str(tools.kustomize), "edit", "remove", "patch", "--path", "prod-sync-window.yaml"],
        cwd=argocd,
        check=True,
    )
    resources = manifests.parse(manifests.render(tools.kustomize, argocd))
    assert "syncWindows" not in by_name(resources, "AppProject")["elpv-classifier"]["spec"]
