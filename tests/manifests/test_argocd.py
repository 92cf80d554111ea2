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


def test_root_application_renders_argocd_apps(argocd_rendered: list[dict[str, Any]]) -> None:
    root = by_name(argocd_rendered, "Application")["elpv-gitops-root"]
    assert root["spec"]["source"]["path"] == "argocd/apps"
    assert root["spec"]["project"] == "elpv-bootstrap"
    # deleting the bootstrap must not cascade into the environments
    assert "finalizers" not in root["metadata"]


def _permits(project: dict[str, Any], resource: dict[str, Any]) -> bool:
    """Whether an AppProject's whitelists admit `resource` (group and kind; `*` matches all)."""
    group = resource["apiVersion"].rpartition("/")[0]
    namespaced = resource["kind"] != "Namespace" and "namespace" in resource["metadata"]
    spec = project["spec"]
    entries = spec.get("namespaceResourceWhitelist" if namespaced else "clusterResourceWhitelist")
    return any(
        e["group"] in {group, "*"} and e["kind"] in {resource["kind"], "*"} for e in entries or []
    )


def test_root_application_cannot_change_any_project(
    tools: manifests.Toolchain, argocd_rendered: list[dict[str, Any]]
) -> None:
    """What the root app syncs from git holds only Applications, and its project forbids
    AppProjects: a commit to argocd/ cannot widen a project (or the root's own) by itself."""
    projects = by_name(argocd_rendered, "AppProject")
    root = by_name(argocd_rendered, "Application")["elpv-gitops-root"]
    bootstrap = projects[root["spec"]["project"]]
    project_kind = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
                    "metadata": {"name": "x", "namespace": "argocd"}}  # fmt: skip
    assert not _permits(bootstrap, project_kind), "the root's project may manage AppProjects"
    assert bootstrap["spec"]["clusterResourceWhitelist"] == []
    synced = manifests.parse(
        manifests.render(tools.kustomize, ROOT / root["spec"]["source"]["path"])
    )
    assert {r["kind"] for r in synced} == {"Application"}
    assert all(_permits(bootstrap, r) for r in synced)
    # ... and every project lives only in the administrator's bootstrap (argocd/ itself)
    assert not [r for r in synced if r["kind"] == "AppProject"]


def test_every_application_names_a_bounded_project(argocd_rendered: list[dict[str, Any]]) -> None:
    """An Application may name any project; `default` (which allows everything unless
    restricted) is disabled, so naming it cannot escape the projects' bounds."""
    projects = by_name(argocd_rendered, "AppProject")
    for name, app in by_name(argocd_rendered, "Application").items():
        assert app["spec"]["project"] in projects, f"{name}: project not defined in argocd/"
        assert app["spec"]["project"] != "default", f"{name} uses the default project"
    default = projects["default"]["spec"]
    assert default["sourceRepos"] == []
    assert default["destinations"] == []
    assert default["clusterResourceWhitelist"] == []
    assert default["namespaceResourceBlacklist"] == [{"group": "*", "kind": "*"}]
    for project in projects.values():
        assert "*" not in project["spec"]["sourceRepos"]
        assert all(d["namespace"] != "*" for d in project["spec"]["destinations"])


@pytest.mark.parametrize("env", manifests.ENVIRONMENTS)
def test_namespace_survives_pruning_and_application_deletion(rendered: Rendered, env: str) -> None:
    """Deleting an Application (resources finalizer) or dropping the Namespace from git never
    deletes the Namespace, and with it the Secrets no Application manages."""
    namespaces = [r for r in rendered[env] if r["kind"] == "Namespace"]
    assert namespaces, f"overlays/{env} renders no Namespace"
    for namespace in namespaces:
        options = (
            namespace["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-options", "")
        )
        assert {o.strip() for o in options.split(",")} >= {"Prune=false", "Delete=false"}


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
        cwd=argocd / "apps",
        check=True,
    )  # fmt: skip
    text = manifests.render(tools.kustomize, argocd)
    resources = manifests.parse(text)
    assert "github.com" not in text
    for name, project in by_name(resources, "AppProject").items():
        assert project["spec"]["sourceRepos"] == ([] if name == "default" else [LOCAL_REPO])
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
