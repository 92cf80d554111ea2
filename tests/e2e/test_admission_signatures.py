"""Signed images only, enforced by the API server (docs/environments.md, "Signed images only").

`make e2e` starts the sandbox with `up --admission`: Kyverno's admission controller runs against
the sandbox's API server, and the run has a cosign key pair. This module applies the sandbox
variant of cluster/image-policy.yaml (sandbox/image-policy/: the same rules, with that key as the
attestor instead of the keyless GitHub identity), pushes three images to the local registry,
signs one with the sandbox key and one with another key, and shows that the API server admits
into elpv-staging only the one signed with the sandbox key, refusing the others with the
policy's message, while a namespace outside the policy is not affected. The policy is removed
afterwards, so the other scenarios' Argo CD syncs (images nobody signed) go through.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .conftest import NAMESPACE, ROOT, STAGING, Sandbox, sh

pytestmark = pytest.mark.e2e

OUTSIDE = "elpv-admission-outside"  # a namespace the policy does not select
REPOSITORY = "elpv-sandbox/admission-check"
LABEL = "elpv-test=admission"
ENFORCED_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Images:
    signed: str  # signed with the sandbox's key
    unsigned: str
    other_key: str  # signed, with a key the policy does not name
    policy: dict[str, Any]


def sandbox_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "sandbox_for_admission", ROOT / "sandbox" / "sandbox.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def cosign(box: Sandbox, *args: str, tuf: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COSIGN_PASSWORD": "", "TUF_ROOT": str(tuf)}
    return sh([box.env["cosign"], *args], env=env)


def sign(box: Sandbox, image: str, key: Path, tuf: Path) -> None:
    """A key signature, not uploaded to Rekor (none is reachable), stored beside the image in the
    registry as cosign's `sha256-<digest>.sig` tag, which Kyverno reads."""
    cosign(
        box,
        "sign",
        "--yes",
        "--key",
        str(key),
        "--tlog-upload=false",
        "--use-signing-config=false",
        "--new-bundle-format=false",
        image,
        tuf=tuf,
    )


def pod(name: str, namespace: str, image: str) -> dict[str, Any]:
    """A pod the namespaces' `restricted` Pod Security level admits: only the image can fail."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"elpv-test": "admission"}},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "app",
                    "image": image,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def deployment(name: str, namespace: str, image: str) -> dict[str, Any]:
    template = pod(name, namespace, image)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"elpv-test": "admission"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"elpv-test-deployment": name}},
            "template": {
                "metadata": {"labels": {"elpv-test": "admission", "elpv-test-deployment": name}},
                "spec": template["spec"],
            },
        },
    }


def create(box: Sandbox, obj: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
    """`kubectl create`; the caller reads the return code and the API server's answer."""
    return subprocess.run(
        [box.env["kubectl"], "--kubeconfig", box.env["kubeconfig"], "create", *extra, "-f", "-"],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        check=False,
    )


def refusal(policy: dict[str, Any]) -> str:
    """The start of what Kyverno answers when the validation is false (not an error)."""
    name, message = policy["metadata"]["name"], policy["spec"]["validations"][0]["message"]
    return f"Policy {name} failed: {message}"


@pytest.fixture(scope="module")
def images(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    if not sandbox.env.get("admission_policy"):
        pytest.fail("the sandbox runs without Kyverno: start it with `sandbox.py up --admission`")
    work = tmp_path_factory.mktemp("admission")
    tuf = work / "tuf"
    policy: dict[str, Any] = json.loads(Path(sandbox.env["admission_policy"]).read_text())
    # Argo CD's first sync of staging must not meet the policy (its image is nobody's).
    sandbox.argocd("app", "wait", STAGING, "--sync", "--health", "--timeout", "180")

    box = sandbox_module()
    run_id = secrets.token_hex(4)  # fresh digests: no signature from an earlier run applies
    refs = {}
    for name in ("signed", "unsigned", "other-key"):
        payload = work / name
        payload.write_text(f"#!/bin/sh\n# admission check {name} {run_id}\n")
        repository = f"{box.REGISTRY}/{REPOSITORY}"
        digest = box.push_single_binary_image(f"{repository}:{name}-{run_id}", payload, "/check")
        refs[name] = f"{repository}@{digest}"
    sign(sandbox, refs["signed"], Path(sandbox.env["signing_key"]), tuf)
    cosign(sandbox, "generate-key-pair", "--output-key-prefix", str(work / "other"), tuf=tuf)
    sign(sandbox, refs["other-key"], work / "other.key", tuf)

    sandbox.kubectl("create", "namespace", OUTSIDE)
    sandbox.kubectl("apply", "-f", sandbox.env["admission_policy"])
    try:
        yield Images(refs["signed"], refs["unsigned"], refs["other-key"], policy)
    finally:
        sandbox.kubectl("delete", "-f", sandbox.env["admission_policy"], "--wait", check=False)
        for namespace in (NAMESPACE[STAGING], OUTSIDE):
            sandbox.kubectl("delete", "deployment,pod", "-n", namespace, "-l", LABEL, check=False)
        sandbox.kubectl("delete", "namespace", OUTSIDE, "--wait=false", check=False)


def wait_enforced(box: Sandbox, images: Images) -> float:
    """Until the API server refuses the unsigned image (server-side dry run: the webhooks run,
    nothing is stored): Kyverno has compiled the policy and registered its rules."""
    start = time.monotonic()
    probe = pod("admission-probe", NAMESPACE[STAGING], images.unsigned)
    last = ""
    while time.monotonic() - start < ENFORCED_TIMEOUT_S:
        proc = create(box, probe, "--dry-run=server")
        last = proc.stderr or proc.stdout
        if proc.returncode != 0 and refusal(images.policy) in last:
            return time.monotonic() - start
        time.sleep(1)
    status = box.kubectl(
        "get", "imagevalidatingpolicy", images.policy["metadata"]["name"], "-o", "json", check=False
    ).stdout
    raise AssertionError(
        f"the unsigned image was not refused within {ENFORCED_TIMEOUT_S:.0f} s of applying the "
        f"policy; last answer: {last!r}\npolicy status: {status[-2000:]}"
    )


def test_only_images_signed_with_the_key_run_in_staging(sandbox: Sandbox, images: Images) -> None:
    sandbox.timings["admission_policy_enforced"] = round(wait_enforced(sandbox, images), 1)
    staging = NAMESPACE[STAGING]
    expected = refusal(images.policy)

    admitted = create(sandbox, pod("signed", staging, images.signed))
    assert admitted.returncode == 0, admitted.stderr

    for name, image in (("unsigned", images.unsigned), ("other-key", images.other_key)):
        refused = create(sandbox, pod(name, staging, image))
        assert refused.returncode != 0, f"the {name} image was admitted into {staging}"
        assert "denied the request" in refused.stderr, refused.stderr
        assert expected in refused.stderr, refused.stderr
        assert sandbox.get("pod", name, staging) is None

    # Workloads are checked too, and the pods their controllers create pass.
    refused = create(sandbox, deployment("unsigned-deploy", staging, images.unsigned))
    assert refused.returncode != 0, "an unsigned Deployment was admitted"
    assert expected in refused.stderr, refused.stderr
    admitted = create(sandbox, deployment("signed-deploy", staging, images.signed))
    assert admitted.returncode == 0, admitted.stderr

    def available() -> bool:
        dep = sandbox.get("deployment", "signed-deploy", staging)
        return bool(dep and dep.get("status", {}).get("availableReplicas") == 1)

    deadline = time.monotonic() + 60
    while not available():
        assert time.monotonic() < deadline, "the signed Deployment's pod was never admitted"
        time.sleep(1)


def test_a_namespace_outside_the_policy_is_not_affected(sandbox: Sandbox, images: Images) -> None:
    wait_enforced(sandbox, images)
    for name, image in (("unsigned", images.unsigned), ("other-key", images.other_key)):
        admitted = create(sandbox, pod(name, OUTSIDE, image))
        assert admitted.returncode == 0, admitted.stderr
