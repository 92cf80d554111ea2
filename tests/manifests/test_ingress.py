"""The public Ingress of each rendered overlay: HTTPS with a cert-manager certificate per
environment, and only the API routed (no /metrics, /docs, /openapi.json, probes)."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest

from gitops.commands.validate import manifests

Rendered = dict[str, list[dict[str, Any]]]

# The API a client of the service calls; everything else the service answers is for the cluster
# (probes, scraping) or for people reading the schema locally.
PUBLIC = ("/v1/predict", "/v1/model")
PRIVATE = (
    "/metrics",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
    "/livez",
    "/readyz",
    "/",
    "/v10/predict",
)


def routes(ingress: dict[str, Any], path: str) -> bool:
    """Whether the Ingress sends `path` to a backend (Kubernetes' Prefix and Exact semantics:
    Prefix matches whole `/`-separated elements; ImplementationSpecific is refused)."""
    for rule in ingress["spec"].get("rules", []):
        for entry in rule.get("http", {}).get("paths", []):
            kind, prefix = entry["pathType"], entry["path"]
            if kind == "Exact" and path == prefix:
                return True
            if kind == "Prefix":
                want = [p for p in prefix.split("/") if p]
                if [p for p in path.split("/") if p][: len(want)] == want:
                    return True
            if kind == "ImplementationSpecific":
                raise AssertionError(f"{prefix}: ImplementationSpecific paths cannot be checked")
    return bool(ingress["spec"].get("defaultBackend"))


def service_paths() -> set[str]:
    """Every path the service's routers declare (classifier.serving.routes.*)."""
    package = importlib.import_module("classifier.serving.routes")
    found: set[str] = set()
    for module in pkgutil.iter_modules(package.__path__):
        router = getattr(
            importlib.import_module(f"{package.__name__}.{module.name}"), "router", None
        )
        found |= {route.path for route in getattr(router, "routes", [])}
    assert found, "no routes found in classifier.serving.routes"
    return found


def ingress(rendered: Rendered, env: str) -> dict[str, Any]:
    found = [r for r in rendered[env] if r["kind"] == "Ingress"]
    assert len(found) == 1, f"overlays/{env}: expected one Ingress"
    return found[0]


@pytest.mark.parametrize("env", manifests.ENVIRONMENTS)
def test_only_the_api_is_public(rendered: Rendered, env: str) -> None:
    public = ingress(rendered, env)
    for path in PUBLIC:
        assert routes(public, path), f"overlays/{env}: the API path {path} is not routed"
    for path in PRIVATE:
        assert not routes(public, path), f"overlays/{env}: {path} is reachable from outside"
    for path in service_paths():
        assert routes(public, path) == path.startswith("/v1/"), (
            f"overlays/{env}: the service's {path} is routed={routes(public, path)}; only /v1/ "
            "paths may be public"
        )


@pytest.mark.parametrize("env", manifests.ENVIRONMENTS)
def test_every_host_is_served_over_tls_by_cert_manager(rendered: Rendered, env: str) -> None:
    public = ingress(rendered, env)
    hosts = {rule["host"] for rule in public["spec"]["rules"]}
    tls = public["spec"].get("tls", [])
    assert tls, f"overlays/{env}: the Ingress has no tls block"
    covered = {host for entry in tls for host in entry["hosts"]}
    assert hosts <= covered, f"overlays/{env}: {sorted(hosts - covered)} without TLS"
    assert all(entry.get("secretName") == f"elpv-classifier-{env}-tls" for entry in tls)
    annotations = public["metadata"]["annotations"]
    assert annotations.get("cert-manager.io/cluster-issuer"), "no cert-manager issuer"
    # HTTPS only: the routes live on Traefik's TLS entry point, never on plain HTTP.
    assert annotations.get("traefik.ingress.kubernetes.io/router.entrypoints") == "websecure"
    assert annotations.get("traefik.ingress.kubernetes.io/router.tls") == "true"


def test_tls_secrets_differ_per_environment(rendered: Rendered) -> None:
    secrets = {
        env: [t["secretName"] for t in ingress(rendered, env)["spec"]["tls"]]
        for env in manifests.ENVIRONMENTS
    }
    assert len({tuple(v) for v in secrets.values()}) == len(manifests.ENVIRONMENTS), secrets


def test_route_checker_follows_prefix_semantics() -> None:
    def with_path(path: str, kind: str = "Prefix") -> dict[str, Any]:
        entry = {"path": path, "pathType": kind}
        return {"spec": {"rules": [{"host": "h", "http": {"paths": [entry]}}]}}

    assert routes(with_path("/"), "/metrics")
    assert routes(with_path("/v1"), "/v1/predict")
    assert not routes(with_path("/v1"), "/v10/predict")
    assert not routes(with_path("/v1/model", "Exact"), "/v1/predict")
    with pytest.raises(AssertionError):
        routes(with_path("/v1", "ImplementationSpecific"), "/v1")


@pytest.mark.parametrize("env", manifests.ENVIRONMENTS)
def test_network_policy_admits_the_controller_and_the_scraper_only(
    rendered: Rendered, env: str
) -> None:
    """The pods take traffic from the ingress controller (for /v1) and Prometheus (for
    /metrics, scraped in-cluster on the port the pod annotations name), nobody else."""
    policy = next(r for r in rendered[env] if r["kind"] == "NetworkPolicy")
    sources = set()
    ports = set()
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector"}, f"unexpected peer {peer}"
            for expression in peer["namespaceSelector"].get("matchExpressions", []):
                sources |= set(expression["values"])
        ports |= {p["port"] for p in rule["ports"]}
    assert sources == {"traefik", "monitoring"}
    deployment = next(r for r in rendered[env] if r["kind"] == "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {named.get(p, p) for p in ports} == {int(annotations["prometheus.io/port"])}
