"""argocd/addons/metrics-server: an opt-in component; its project admits exactly what the
vendored chart renders, by name where the objects are cluster-wide."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops.commands.validate import manifests

from .conftest import ROOT

CHART = ROOT / "charts" / "metrics-server"
COMPONENT = "addons/metrics-server"


def enabled(tools: manifests.Toolchain, tmp_path: Path) -> list[dict[str, Any]]:
    argocd = tmp_path / "argocd"
    shutil.copytree(ROOT / "argocd", argocd)
    subprocess.run(
        [str(tools.kustomize), "edit", "add", "component", COMPONENT], cwd=argocd, check=True
    )
    return manifests.parse(manifests.render(tools.kustomize, argocd))


def named(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def test_addon_is_opt_in(argocd_rendered: list[dict[str, Any]]) -> None:
    names = {r["metadata"]["name"] for r in argocd_rendered}
    assert "metrics-server" not in names
    assert "elpv-cluster-addons" not in names


def test_addon_application_renders_the_vendored_chart(
    tools: manifests.Toolchain, tmp_path: Path
) -> None:
    resources = enabled(tools, tmp_path)
    app = named(resources, "Application", "metrics-server")
    source = app["spec"]["source"]
    assert source["path"] == "charts/metrics-server"
    assert (ROOT / source["path"] / "Chart.yaml").is_file()
    assert "helm" in source
    # Same repository and revision as every other Application (the gitops-repo values).
    env_app = named(resources, "Application", "elpv-classifier-staging")
    assert source["repoURL"] == env_app["spec"]["source"]["repoURL"]
    assert source["targetRevision"] == env_app["spec"]["source"]["targetRevision"]
    assert app["spec"]["project"] == "elpv-cluster-addons"
    project = named(resources, "AppProject", "elpv-cluster-addons")["spec"]
    assert project["sourceRepos"] == [source["repoURL"]]
    assert [d["namespace"] for d in project["destinations"]] == ["kube-system"]
    assert app["spec"]["destination"]["namespace"] == "kube-system"


def test_vendored_chart_is_the_pinned_upstream_one() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["name"] == "metrics-server"
    versions = dict(
        line.split("=", 1)
        for line in (ROOT / "sandbox" / "tools" / "versions.sh").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    app = yaml.safe_load((ROOT / "argocd" / COMPONENT / "application.yaml").read_text())
    # The image the Application runs is the version the chart was vendored from.
    assert (
        app["spec"]["source"]["helm"]["valuesObject"]["image"]["tag"]
        == (versions["METRICS_SERVER_VERSION"])
    )


def _helm() -> str | None:
    bin_dir = Path(
        os.environ.get("SANDBOX_BIN", Path.home() / ".cache" / "elpv-gitops" / "sandbox" / "bin")
    )
    found = bin_dir / "helm"
    return str(found) if found.exists() else shutil.which("helm")


def _admits(entries: list[dict[str, Any]], obj: dict[str, Any]) -> bool:
    group = obj["apiVersion"].rpartition("/")[0]
    return any(
        e["group"] == group
        and e["kind"] == obj["kind"]
        and fnmatch.fnmatchcase(obj["metadata"]["name"], e.get("name", "*"))
        for e in entries
    )


def test_project_admits_exactly_what_the_chart_renders(
    tools: manifests.Toolchain, tmp_path: Path
) -> None:
    helm = _helm()
    if helm is None:
        pytest.skip("no helm binary (sandbox/tools/build.sh helm builds it)")
    resources = enabled(tools, tmp_path)
    app = named(resources, "Application", "metrics-server")
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(app["spec"]["source"]["helm"]["valuesObject"]))
    rendered = subprocess.run(
        [helm, "template", "metrics-server", str(CHART), "--namespace", "kube-system",
         "--values", str(values)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    objects = [o for o in yaml.safe_load_all(rendered) if o]
    project = named(resources, "AppProject", "elpv-cluster-addons")["spec"]
    cluster_kinds = {"ClusterRole", "ClusterRoleBinding", "APIService"}
    for obj in objects:
        entries = project[
            "clusterResourceWhitelist"
            if obj["kind"] in cluster_kinds
            else "namespaceResourceWhitelist"
        ]
        assert _admits(entries, obj), f"{obj['kind']}/{obj['metadata']['name']} not admitted"
    # ... and nothing more: every whitelist entry is used by some rendered object.
    for key in ("clusterResourceWhitelist", "namespaceResourceWhitelist"):
        for entry in project[key]:
            assert any(_admits([entry], o) for o in objects), f"unused entry {entry}"
