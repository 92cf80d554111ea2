"""cluster/: the admission policy that admits into the classifier namespaces only images signed
by this repository's train-deploy workflow on main (docs/environments.md, "Signed images only")."""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from gitops.commands.validate import manifests, schemas

from .conftest import ROOT

Rendered = dict[str, list[dict[str, Any]]]
ISSUER = "https://token.actions.githubusercontent.com"
WORKFLOW = ".github/workflows/train-deploy.yml"


def repository() -> str:
    """`owner/name` of this repository, from the one place that names it (argocd/apps)."""
    config = yaml.safe_load((ROOT / "argocd" / "apps" / "kustomization.yaml").read_text())
    generator = next(g for g in config["configMapGenerator"] if g["name"] == "gitops-repo")
    url = next(v for v in generator["literals"] if v.startswith("url="))[len("url=") :]
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?", url)
    assert match, f"the gitops-repo url {url} is not a GitHub repository"
    return match[1]


def expected_subject() -> str:
    return f"https://github.com/{repository()}/{WORKFLOW}@refs/heads/main"


@pytest.fixture(scope="module")
def policy(tools: manifests.Toolchain) -> dict[str, Any]:
    resources = manifests.parse(manifests.render(tools.kustomize, ROOT / "cluster"))
    policies = [r for r in resources if r["kind"] == "ImageValidatingPolicy"]
    assert len(policies) == 1, [manifests.ref(r) for r in resources]
    assert policies[0]["apiVersion"].startswith("policies.kyverno.io/")
    return policies[0]


def identity_problems(policy: dict[str, Any]) -> list[str]:
    """Why the policy's signers are not exactly train-deploy.yml on main (empty: they are)."""
    problems = []
    attestors = policy["spec"].get("attestors", [])
    if not attestors:
        problems.append("no attestors")
    for attestor in attestors:
        keyless = attestor.get("cosign", {}).get("keyless")
        if not keyless:
            problems.append(f"{attestor.get('name')}: not a keyless cosign attestor")
            continue
        for identity in keyless.get("identities", []) or [{}]:
            if set(identity) != {"issuer", "subject"}:
                problems.append(f"{attestor.get('name')}: identity fields {sorted(identity)}")
            if identity.get("issuer") != ISSUER:
                problems.append(f"issuer {identity.get('issuer')!r}")
            if identity.get("subject") != expected_subject():
                problems.append(f"subject {identity.get('subject')!r}")
    return problems


def test_only_train_deploy_on_main_of_this_repository_signs(policy: dict[str, Any]) -> None:
    assert identity_problems(policy) == []
    workflow = yaml.safe_load((ROOT / WORKFLOW).read_text())
    triggers = workflow.get("on", workflow.get(True))
    assert triggers["push"]["branches"] == ["main"]


def test_identity_checker_rejects_a_branch_wildcard(policy: dict[str, Any]) -> None:
    """The check above fails for the usual loosening (`@.*`), so it can be trusted."""
    loose = yaml.safe_load(yaml.safe_dump(policy))
    identity = loose["spec"]["attestors"][0]["cosign"]["keyless"]["identities"][0]
    identity.pop("subject")
    identity["subjectRegExp"] = f"https://github.com/{repository()}/{WORKFLOW}@.*"
    assert identity_problems(loose)
    other = yaml.safe_load(yaml.safe_dump(policy))
    other["spec"]["attestors"][0]["cosign"]["keyless"]["identities"][0]["subject"] = (
        expected_subject().replace("refs/heads/main", "refs/heads/feature")
    )
    assert identity_problems(other)


def test_every_image_in_the_environments_must_be_verified(
    policy: dict[str, Any], rendered: Rendered
) -> None:
    spec = policy["spec"]
    assert spec["validationActions"] == ["Deny"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["validationConfigurations"]["required"] is True
    # which namespaces: by the name label the API server sets, never a label git can drop
    selector = spec["matchConstraints"]["namespaceSelector"]
    assert "matchLabels" not in selector
    (expression,) = selector["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name"
    assert expression["operator"] == "In"
    namespaces = {
        r["metadata"]["name"] for env in rendered for r in rendered[env] if r["kind"] == "Namespace"
    }
    assert set(expression["values"]) == namespaces
    # which objects: pods at least (every workload ends as pods), on create and update
    rules = spec["matchConstraints"]["resourceRules"]
    pods = [r for r in rules if r["apiGroups"] == [""] and "pods" in r["resources"]]
    assert pods, "pods are not checked"
    assert {"CREATE", "UPDATE"} <= set(pods[0]["operations"])
    # which images: every image the overlays run matches, whatever its registry
    globs = [m["glob"] for m in spec["matchImageReferences"]]
    for image in ("ghcr.io/elsewhere/other:1", "docker.io/library/busybox:1"):
        assert any(fnmatch.fnmatchcase(image, g) for g in globs), f"{image} is not verified"
    for env in rendered:
        for _, template in manifests._pod_templates(rendered[env]):
            for container in manifests._containers(template):
                assert any(fnmatch.fnmatchcase(container["image"], g) for g in globs)
    # and the validation applies the attestor to every kind of container
    (validation,) = spec["validations"]
    for kind in ("containers", "initContainers", "ephemeralContainers"):
        assert (
            f"images.{kind}.map(image, verifyImageSignatures(image, [attestors."
            in (validation["expression"])
        ), kind


def test_no_application_can_change_the_policy(argocd_rendered: list[dict[str, Any]]) -> None:
    """The policy is applied by an administrator: no AppProject admits its kind (nor `*`)."""
    for project in (r for r in argocd_rendered if r["kind"] == "AppProject"):
        spec = project["spec"]
        for entry in [
            *(spec.get("clusterResourceWhitelist") or []),
            *(spec.get("namespaceResourceWhitelist") or []),
        ]:
            assert entry["group"] not in {"policies.kyverno.io", "kyverno.io", "*"}, (
                f"AppProject/{project['metadata']['name']} admits {entry}"
            )


# --- the sandbox's variant (sandbox/image-policy/, docs/sandbox.md "Admission") ---------------


def admission_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "admission_under_test", ROOT / "sandbox" / "admission.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_sandbox_variant_changes_only_the_attestor(
    policy: dict[str, Any], tools: manifests.Toolchain
) -> None:
    """Every matching rule, the validation and its message are the real policy's: the sandbox
    demonstration proves what the real policy does, except who must have signed."""
    admission = admission_module()
    key = "-----BEGIN PUBLIC KEY-----\nsandbox\n-----END PUBLIC KEY-----\n"
    variant = admission.render_policy(Path(tools.kustomize), ROOT, key)
    assert variant["spec"]["attestors"][0]["cosign"] == {
        "key": {"data": key},
        "ctlog": {"insecureIgnoreTlog": True},
    }
    real, sandbox = copy.deepcopy(policy), copy.deepcopy(variant)
    for p in (real, sandbox):
        del p["spec"]["attestors"][0]["cosign"]
    assert sandbox == real


def test_sandbox_kyverno_listens_on_loopback_only() -> None:
    admission = admission_module()
    args = admission.kyverno_args(Path("/k"), 40123, 40124)
    flags = dict(a.removeprefix("--").split("=", 1) for a in args if "=" in a)
    # The webhook URLs the API server calls are the address Kyverno serves on.
    assert flags["serverIP"] == "127.0.0.1:40123"
    assert (flags["webhookServerHost"], flags["webhookServerPort"]) == ("127.0.0.1", "40123")
    assert flags["metricsHost"] == "127.0.0.1"
    assert flags["controllerRuntimeMetricsAddress"] == "0"  # off
    assert "profile" not in flags  # the profiling server stays off (its default)


def test_one_kyverno_version_everywhere() -> None:
    """The admission controller the sandbox builds, its CRDs and the schema `make validate` uses
    are one Kyverno release; cosign is the version that release requires."""
    versions = dict(
        line.split("=", 1)
        for line in (ROOT / "sandbox" / "tools" / "versions.sh").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert versions["KYVERNO_VERSION"] == schemas.KYVERNO_VERSION
    go_mod = (ROOT / "sandbox" / "tools" / "kyverno" / "go.mod").read_text()
    assert f"\t{schemas.KYVERNO_MODULE} {versions['KYVERNO_VERSION']}\n" in go_mod
    assert f"\tgithub.com/sigstore/cosign/v3 {versions['COSIGN_VERSION']}\n" in go_mod
