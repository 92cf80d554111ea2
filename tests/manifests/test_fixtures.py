"""Every check fails on a manifest broken on purpose (tests/manifests/fixtures/*), through the
same entry point as `make validate`, with a message that says what is wrong."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from gitops.commands.validate import manifests

from .conftest import FIXTURES, ROOT

# fixture -> (the check that must fail, a phrase its message must contain)
EXPECTED = {
    "replicas-under-hpa": ("[policy:hpa-owns-replicas]", "sets spec.replicas=3 although an HPA"),
    "privileged-container": ("[checkov:CKV_K8S_16]", "should not be privileged"),
    "missing-digest": ("[policy:images-pinned]", "is not pinned by digest"),
    "latest-tag": ("[policy:images-pinned]", "has tag 'latest'"),
    "schema-error": (
        "[schemas[1.33.0]]",
        "readinessProbe': additional properties 'initialDelay' not allowed",
    ),
    "removed-api-version": ("[schemas[1.36.0]]", "no autoscaling/v2beta2 HorizontalPodAutoscaler"),
    "hostpath-volume": ("[policy:volume-types]", "volume 'host-models' is of type hostPath"),
    "pdb-selects-nothing": ("[policy:selectors-match-pods]", "matches no pod template"),
    "no-topology-spread": ("[policy:topology-spread]", "no topologySpreadConstraints"),
    "identical-probes": ("[kube-score:critical]", "same readiness and liveness probe"),
    "argocd-typo": ("[schemas[1.36.0]]", "additional properties 'selfheal' not allowed"),
    "cluster-policy-typo": (
        "[schemas[1.36.0]]",
        "additional properties 'subjectRegex' not allowed",
    ),
    "prod-drift": ("[environment-diff]", "spec.strategy.rollingUpdate.maxSurge differs (1 vs 3)"),
}
OVERLAY_FIXTURES = [
    name for name in EXPECTED if name not in {"argocd-typo", "cluster-policy-typo", "prod-drift"}
]


@dataclass(frozen=True)
class Run:
    returncode: int
    lines: list[str]


@pytest.fixture(scope="module")
def run(tools: manifests.Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One `gitops validate` over every fixture (plus the real staging overlay as the
    control), so checkov starts once for all of them."""
    args = [sys.executable, "-m", "gitops", "validate"]
    args += ["--out", str(tmp_path_factory.mktemp("rendered"))]
    for name in OVERLAY_FIXTURES:
        args += ["--overlay", str((FIXTURES / name).relative_to(ROOT))]
    args += ["--overlay", "overlays/staging", "--argocd", "tests/manifests/fixtures/argocd-typo"]
    args += ["--cluster", "tests/manifests/fixtures/cluster-policy-typo"]
    args += ["--compare", "overlays/staging", "tests/manifests/fixtures/prod-drift"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)
    return Run(proc.returncode, (proc.stdout + proc.stderr).splitlines())


def test_fixture_set_matches_the_folder() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def test_validate_exits_nonzero_on_broken_manifests(run: Run) -> None:
    assert run.returncode == 1, "\n".join(run.lines)
    assert any(line.startswith("manifests INVALID") for line in run.lines)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_validate_fails_with_message_for_broken(run: Run, name: str) -> None:
    check, phrase = EXPECTED[name]
    source = f"tests/manifests/fixtures/{name}"
    failures = [line for line in run.lines if line.startswith("FAIL") and source in line]
    assert any(check in line and phrase in line for line in failures), (
        f"expected {check} ... {phrase!r} for {source}; its failures were:\n" + "\n".join(failures)
    )


def test_validate_passes_the_real_overlay_in_the_same_run(run: Run) -> None:
    """The control: the checks that fire on the fixtures are quiet on overlays/staging."""
    assert not [line for line in run.lines if line.startswith("FAIL overlays/staging:")]
    assert any(line.startswith("ok   overlays/staging:") for line in run.lines)


def test_schema_error_is_reported_for_every_supported_version(run: Run) -> None:
    for version in manifests.SUPPORTED_KUBERNETES_VERSIONS:
        assert any(f"schema-error: [schemas[{version}]]" in line for line in run.lines), (
            f"no schema failure for Kubernetes {version}"
        )


def test_validate_rejects_a_folder_without_kustomization(tmp_path: object) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gitops", "validate", "--overlay", "docs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "docs has no kustomization.yaml" in proc.stderr


def test_validate_rejects_an_unsupported_kubernetes_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gitops", "validate", "--kubernetes-version", "1.20.0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "1.20.0 is not supported" in proc.stderr
