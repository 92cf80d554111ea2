"""The project policies of `gitops validate`, on the real overlays and on small hand-made inputs."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest

from gitops.commands.validate import manifests

from .conftest import only

Rendered = dict[str, list[dict[str, Any]]]


@pytest.mark.parametrize("env", manifests.ENVIRONMENTS)
@pytest.mark.parametrize("policy", sorted(manifests.POLICIES))
def test_policy_passes_for_overlay(rendered: Rendered, env: str, policy: str) -> None:
    assert manifests.POLICIES[policy](rendered[env]) == []


def test_environment_diff_passes_for_staging_and_prod(rendered: Rendered) -> None:
    assert manifests.check_environment_diff(rendered["staging"], rendered["prod"]) == []


def test_environment_diff_covers_every_intended_difference(rendered: Rendered) -> None:
    """Each allowed path really differs today (a stale allow-list entry hides nothing)."""
    a = manifests._normalise(rendered["staging"])
    b = manifests._normalise(rendered["prod"])
    differing = {
        f"{key}:{path}"
        for key in a.keys() & b.keys()
        for path in a[key].keys() | b[key].keys()
        if a[key].get(path) != b[key].get(path)
    }
    # Allowed but equal today: no TLS yet, both overlays start from the same bootstrap image,
    # and both use the "traefik" class (a cluster with a separate internal class patches it).
    equal_today = ("spec.tls.*", ".image", "spec.ingressClassName")
    for allowed in manifests.ENVIRONMENT_DIFF_ALLOWED:
        if allowed.endswith(equal_today):
            continue
        assert any(fnmatch.fnmatchcase(d, allowed) for d in differing), (
            f"{allowed} is allowed to differ but does not: remove it from the allow-list"
        )


def test_environment_diff_reports_an_object_only_in_one_environment(rendered: Rendered) -> None:
    extra = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "debug"}}
    findings = manifests.check_environment_diff(rendered["staging"], [*rendered["prod"], extra])
    assert [f.resource for f in findings] == ["ServiceAccount/debug"]
    assert "only in prod" in findings[0].message


def test_hpa_policy_fails_when_no_hpa_targets_the_deployment(rendered: Rendered) -> None:
    without_hpa = [r for r in rendered["prod"] if r["kind"] != "HorizontalPodAutoscaler"]
    problems = manifests.check_hpa_owns_replicas(without_hpa)
    assert problems == [
        "Deployment/elpv-classifier: no HorizontalPodAutoscaler targets it; add one "
        "(k8s-base/hpa.yaml) so the replica count is owned by the HPA"
    ]


def test_selector_policy_fails_when_service_selects_nothing(rendered: Rendered) -> None:
    resources = [dict(r) for r in rendered["prod"]]
    service = only(resources, "Service")
    service["spec"] = {**service["spec"], "selector": {"app.kubernetes.io/name": "other"}}
    problems = manifests.check_selectors_match_pods(resources)
    assert len(problems) == 1
    assert problems[0].startswith("Service/elpv-classifier: selector")


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {"a": "1"}, True),
        (
            {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
            {"a": "1"},
            False,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"b": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"b": "1"}, True),
        ({}, {"a": "1"}, False),  # an empty selector protects nothing in particular
    ],
)
def test_selects_matches_label_selector_semantics(
    selector: dict[str, Any], labels: dict[str, str], expected: bool
) -> None:
    assert manifests._selects(selector, labels) is expected


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/o/elpv-classifier",
        "ghcr.io/o/elpv-classifier:latest",
        "127.0.0.1:5000/elpv-classifier:abc",  # a registry port is not a tag
        "ghcr.io/o/elpv-classifier@sha256:" + "0" * 63,
    ],
)
def test_images_policy_rejects_unpinned(image: str) -> None:
    pod = {
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": image}]},
    }
    assert manifests.check_images_pinned([pod])


def test_images_policy_accepts_tag_and_digest() -> None:
    image = "127.0.0.1:5000/elpv-classifier:abc@sha256:" + "0" * 64
    pod = {
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": image}]},
    }
    assert manifests.check_images_pinned([pod]) == []


def test_every_scanner_skip_has_a_reason() -> None:
    for check, reason in {**manifests.CHECKOV_SKIPS, **manifests.KUBE_SCORE_SKIPS}.items():
        assert len(reason) > 40, f"{check}: say why it is skipped"
