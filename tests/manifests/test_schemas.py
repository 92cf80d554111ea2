"""`gitops validate schemas`: the kubernetes-validate wheel's schemas rewritten into the layout
kubeconform reads, and a rebuild only when a pin changes (on small hand-made inputs)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from gitops.commands.validate import schemas
from gitops.core.errors import UsageError

ROOT_IN_WHEEL = "kubernetes_validate/kubernetes-json-schema"


def make_wheel(path: Path, version: str) -> Path:
    folder = f"{ROOT_IN_WHEEL}/v{version}-local-strict"
    definitions = {
        "$id": "https://kubernetes.io/api/_definitions.json",
        "$defs": {"spec": {"$ref": "/api/_definitions.json#/$defs/other"}, "other": {}},
    }
    deployment = {
        "$id": "https://kubernetes.io/api/deployment-apps-v1.json",
        "x-kubernetes-group-version-kind": [{"group": "apps", "kind": "Deployment"}],
        "properties": {"spec": {"$ref": "/api/_definitions.json#/$defs/spec"}},
    }
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{folder}/_definitions.json", json.dumps(definitions))
        wheel.writestr(f"{folder}/deployment-apps-v1.json", json.dumps(deployment))
        wheel.writestr(f"{folder}/affinity-v1.json", json.dumps({"type": "object"}))
    return path


def test_kubernetes_schemas_are_rewritten_for_kubeconform(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "k.whl", "1.36.0")
    written = schemas.kubernetes_schemas(wheel, tmp_path / "out", ["1.36.0"])

    folder = tmp_path / "out" / "v1.36.0-standalone-strict"
    assert written == 2  # sub-object files (affinity-v1.json) are left out
    assert sorted(p.name for p in folder.iterdir()) == [
        "_definitions.json",
        "deployment-apps-v1.json",
    ]
    deployment = json.loads((folder / "deployment-apps-v1.json").read_text())
    definitions = json.loads((folder / "_definitions.json").read_text())
    assert "$id" not in deployment
    assert "$id" not in definitions
    assert deployment["properties"]["spec"]["$ref"] == "_definitions.json#/$defs/spec"
    assert definitions["$defs"]["spec"]["$ref"] == "#/$defs/other"


def test_a_version_the_wheel_lacks_is_refused_with_what_it_has(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "k.whl", "1.36.0")
    with pytest.raises(UsageError, match=r"no schemas for Kubernetes 1\.20\.0; it has v1\.36\.0"):
        schemas.kubernetes_schemas(wheel, tmp_path / "out", ["1.20.0"])


def test_schemas_are_rebuilt_only_when_a_pin_changes(tmp_path: Path) -> None:
    # Fetching would fail: neither "python" nor "go" exists. Stamped folders need neither.
    sources = schemas.SchemaSources(
        python=str(tmp_path / "no-python"),
        go=str(tmp_path / "no-go"),
        argocd_version="v3.5.3",
        kubeconform_version="v0.7.0",
    )
    for stamp in schemas.stamps(tmp_path, sources):
        assert sources.argocd_version in stamp.name or "1.36.0" in stamp.name  # pins in names
        stamp.parent.mkdir()
        stamp.touch()
    schemas.build_schemas(tmp_path, sources)  # up to date: nothing fetched

    moved = replace(sources, argocd_version="v3.5.4")
    with pytest.raises(UsageError, match="no-go not found"):
        schemas.build_schemas(tmp_path, moved)  # a new Argo CD pin: fetched again
