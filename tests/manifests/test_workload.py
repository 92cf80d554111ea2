"""The rendered workload keeps the service and image contracts (docs/architecture.md) and the
hardening the issue asks for, in every environment."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops.commands.validate import manifests

from .conftest import ROOT, only

Rendered = dict[str, list[dict[str, Any]]]
ENVS = manifests.ENVIRONMENTS
# The service's settings (docs/architecture.md, "Service contract"), without the prefix.
CONTRACT_SETTINGS = {
    "MODEL_DIR", "PORT", "HOST", "LOG_LEVEL", "INFERENCE_THREADS",
    "MAX_BATCH_SIZE", "MAX_BATCH_WAIT_MS", "MAX_UPLOAD_BYTES", "MAX_IMAGES_PER_REQUEST",
    "API_TOKEN", "SHUTDOWN_TIMEOUT_S", "MAX_IMAGE_PIXELS", "API_TOKEN_SECONDARY",
    "ALLOW_UNAUTHENTICATED", "MAX_IN_FLIGHT", "MEMORY_LIMIT_MIB", "REQUEST_TIMEOUT_S",
    "OOD_ACTION", "OOD_MAX_ASPECT_RATIO", "OOD_MIN_PIXEL_STD",
}  # fmt: skip


def pod_spec(resources: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = only(resources, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(resources: list[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(resources)["containers"]
    assert [c["name"] for c in containers] == ["classifier"]
    return dict(containers[0])


@pytest.mark.parametrize("env", ENVS)
def test_container_runs_restricted_as_uid_10001(rendered: Rendered, env: str) -> None:
    ctx = container(rendered[env])["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert (ctx["runAsUser"], ctx["runAsGroup"]) == (10001, 10001)
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    pod = pod_spec(rendered[env])
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("env", ENVS)
def test_tmp_is_a_writable_emptydir(rendered: Rendered, env: str) -> None:
    mounts = {m["mountPath"]: m["name"] for m in container(rendered[env])["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(rendered[env])["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("env", ENVS)
def test_probes_are_distinct_and_use_the_contract_paths(rendered: Rendered, env: str) -> None:
    c = container(rendered[env])
    startup, ready, live = c["startupProbe"], c["readinessProbe"], c["livenessProbe"]
    assert live["httpGet"]["path"] == "/livez"
    assert ready["httpGet"]["path"] == "/readyz"
    assert startup["httpGet"]["path"] in {"/livez", "/readyz"}
    assert startup != ready
    assert startup != live
    assert ready != live
    # the startup probe must allow a slow model load before liveness may restart the pod
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30


@pytest.mark.parametrize("env", ENVS)
def test_grace_period_covers_the_prestop_delay_and_the_drain(rendered: Rendered, env: str) -> None:
    pre_stop = container(rendered[env])["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod_spec(rendered[env])["terminationGracePeriodSeconds"]
    drain = float(only(rendered[env], "ConfigMap")["data"]["CLASSIFIER_SHUTDOWN_TIMEOUT_S"])
    assert pre_stop >= 5, "endpoint removal needs a few seconds to reach every proxy"
    # The kubelet's SIGKILL must come after the preStop sleep *and* the service's own drain.
    assert grace > pre_stop + drain, "grace period cuts the service's graceful shutdown short"


@pytest.mark.parametrize("env", ENVS)
def test_requests_and_limits_are_set(rendered: Rendered, env: str) -> None:
    resources = container(rendered[env])["resources"]
    for key in ("cpu", "memory"):
        assert key in resources["requests"]
        assert key in resources["limits"]


@pytest.mark.parametrize("env", ENVS)
def test_port_and_metrics_annotations_match_the_service(rendered: Rendered, env: str) -> None:
    config = only(rendered[env], "ConfigMap")["data"]
    port = int(config["CLASSIFIER_PORT"])
    assert container(rendered[env])["ports"] == [
        {"name": "http", "containerPort": port, "protocol": "TCP"}
    ]
    annotations = only(rendered[env], "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("env", ENVS)
def test_settings_are_contract_settings(rendered: Rendered, env: str) -> None:
    config = only(rendered[env], "ConfigMap")["data"]
    env_vars = [e["name"] for e in container(rendered[env])["env"]]
    names = [*config, *env_vars]
    assert all(n.startswith("CLASSIFIER_") for n in names)
    assert {n.removeprefix("CLASSIFIER_") for n in names} <= CONTRACT_SETTINGS


@pytest.mark.parametrize("env", ENVS)
def test_api_token_comes_from_a_required_secret_not_from_git(rendered: Rendered, env: str) -> None:
    """Authentication by default: the pod needs the Secret; a second key allows rotation."""
    env_vars = {e["name"]: e for e in container(rendered[env])["env"]}
    primary = env_vars["CLASSIFIER_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    secondary = env_vars["CLASSIFIER_API_TOKEN_SECONDARY"]["valueFrom"]["secretKeyRef"]
    assert primary["name"] == secondary["name"] == "elpv-classifier-api-token"
    assert (primary["key"], secondary["key"]) == ("token", "token-secondary")
    assert primary.get("optional", False) is False, "without the token the pod must not start"
    assert secondary["optional"] is True, "the second token exists only during a rotation"
    config = only(rendered[env], "ConfigMap")["data"]
    assert "CLASSIFIER_ALLOW_UNAUTHENTICATED" not in config
    assert "CLASSIFIER_ALLOW_UNAUTHENTICATED" not in env_vars
    assert not [r for r in rendered[env] if r["kind"] == "Secret"], "no Secret objects in git"


@pytest.mark.parametrize("env", ENVS)
def test_the_in_flight_limit_follows_the_memory_limit(rendered: Rendered, env: str) -> None:
    env_vars = {e["name"]: e for e in container(rendered[env])["env"]}
    ref = env_vars["CLASSIFIER_MEMORY_LIMIT_MIB"]["valueFrom"]["resourceFieldRef"]
    assert (ref["resource"], ref["divisor"]) == ("limits.memory", "1Mi")
    assert "CLASSIFIER_MAX_IN_FLIGHT" not in only(rendered[env], "ConfigMap")["data"]


@pytest.mark.parametrize("env", ENVS)
def test_namespace_enforces_restricted_pod_security(rendered: Rendered, env: str) -> None:
    namespace = only(rendered[env], "Namespace")
    assert namespace["metadata"]["name"] == f"elpv-{env}"
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    namespaced = [r for r in rendered[env] if r["kind"] != "Namespace"]
    assert {r["metadata"]["namespace"] for r in namespaced} == {f"elpv-{env}"}


@pytest.mark.parametrize("env", ENVS)
def test_networkpolicy_allows_ingress_controller_scraper_and_dns_only(
    rendered: Rendered, env: str
) -> None:
    spec = only(rendered[env], "NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = spec["ingress"]
    (sources,) = ingress["from"][0]["namespaceSelector"]["matchExpressions"]
    assert sources["values"] == ["traefik", "monitoring"]
    (egress,) = spec["egress"]
    assert {p["port"] for p in egress["ports"]} == {53}


@pytest.mark.parametrize("env", ENVS)
def test_overlay_kustomization_only_patches(env: str) -> None:
    overlay = ROOT / "overlays" / env
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../../k8s-base", "namespace.yaml"]
    assert not {"bases", "commonLabels", "replicas"} & kustomization.keys()
    (image,) = kustomization["images"]
    assert image["name"] == "elpv-classifier"
    assert {"newName", "newTag", "digest"} <= image.keys()
    base_files = {p.name for p in (ROOT / "k8s-base").glob("*.yaml")} - {"kustomization.yaml"}
    patches = {p["path"] for p in kustomization["patches"]}
    assert not patches & base_files, "a patch named like a base manifest is probably a copy"


def test_kustomize_edit_set_image_keeps_the_overlay_valid(
    tools: manifests.Toolchain, tmp_path: Path
) -> None:
    """What `gitops bump` does: the result is still pinned by tag and digest, nothing else moves."""
    shutil.copytree(ROOT / "k8s-base", tmp_path / "k8s-base")
    shutil.copytree(ROOT / "overlays" / "staging", tmp_path / "overlays" / "staging")
    overlay = tmp_path / "overlays" / "staging"
    before = manifests.parse(manifests.render(tools.kustomize, overlay))
    digest = "sha256:" + "ab" * 32
    new = f"elpv-classifier=127.0.0.1:5000/elpv-classifier:{'c' * 40}@{digest}"
    subprocess.run([str(tools.kustomize), "edit", "set", "image", new], cwd=overlay, check=True)
    after = manifests.parse(manifests.render(tools.kustomize, overlay))
    assert container(after)["image"] == f"127.0.0.1:5000/elpv-classifier:{'c' * 40}@{digest}"
    assert manifests.check_images_pinned(after) == []
    findings = manifests.check_environment_diff(before, after, "before vs after")
    assert findings == []  # only the image changed (an allowed path)
    assert container(before)["image"] != container(after)["image"]
