"""The live sandbox's Ingress controller: Traefik as a host process (docs/sandbox.md, "Ingress").

`sandbox.py up --live` calls `start()` once the control plane and the node run. It reads the
Ingresses the overlays render (class, hosts, TLS secrets) from the seeded `origin` clone and:

- creates the IngressClass the overlays name, with Traefik's controller name
  (`traefik.io/ingress-controller`), as a controller's installation does on a real cluster;
- plays cert-manager: one self-signed certificate per TLS host, stored in the Secret the
  Ingress names (`kubernetes.io/tls`), the PEM also kept in STATE/ingress/certs/<host>.crt so
  clients can verify the server against it (`curl --cacert`, the e2e tests);
- starts Traefik (built from the Go module proxy, sandbox/tools/traefik/) with the sandbox
  kubeconfig, serving only that IngressClass, with two entry points on 127.0.0.1: `web` (plain
  HTTP, redirects to HTTPS) and `websecure` (TLS). Traefik routes straight to the pod IPs on the
  bridge (EndpointSlices), keeps terminating-but-serving pods as fallbacks, and publishes
  127.0.0.1 in each Ingress's status.loadBalancer, so Argo CD's own Ingress health check applies.

The process is supervised like the Argo CD ones (own process group, pid file, log); `down` stops
it with every other pid file in STATE/run.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROCESS = "traefik"
CONTROLLER = "traefik.io/ingress-controller"
ENVIRONMENTS = ("staging", "prod")
# The entry point names of Traefik's Helm chart, which the overlays' annotations name.
WEB, WEBSECURE = "web", "websecure"

StartProcess = Callable[[str, Sequence[str | Path], dict[str, str]], int]


class IngressError(RuntimeError):
    """The controller could not be set up: the message says what and where its log is."""


@dataclass(frozen=True)
class PublicIngress:
    """One Ingress of a rendered overlay: what the controller must serve."""

    namespace: str
    name: str
    ingress_class: str
    hosts: tuple[str, ...]
    tls: tuple[tuple[str, tuple[str, ...]], ...]  # (secretName, hosts)


def rendered_ingresses(kustomize: Path, seed: Path) -> list[PublicIngress]:
    """The Ingresses of both overlays as the seeded `origin` renders them."""
    found: list[PublicIngress] = []
    for env_name in ENVIRONMENTS:
        out = _run([kustomize, "build", seed / "overlays" / env_name]).stdout
        for doc in _yaml_documents(out):
            if doc.get("kind") != "Ingress":
                continue
            spec = doc["spec"]
            found.append(
                PublicIngress(
                    namespace=doc["metadata"]["namespace"],
                    name=doc["metadata"]["name"],
                    ingress_class=spec.get("ingressClassName", ""),
                    hosts=tuple(r["host"] for r in spec.get("rules", []) if r.get("host")),
                    tls=tuple(
                        (t["secretName"], tuple(t.get("hosts", [])))
                        for t in spec.get("tls", [])
                        if t.get("secretName")
                    ),
                )
            )
    if not found:
        raise IngressError(f"no Ingress in {seed}/overlays/*: nothing for the controller to serve")
    classes = {i.ingress_class for i in found}
    if len(classes) != 1 or "" in classes:
        raise IngressError(
            f"the overlays name ingress classes {sorted(classes)}: the sandbox runs one "
            "controller, so every overlay's Ingress must set the same spec.ingressClassName"
        )
    return found


def _yaml_documents(text: str) -> list[dict[str, Any]]:
    import yaml  # the project's own dependency (PyYAML), imported late: only live mode needs it

    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def _run(
    argv: Sequence[str | Path], input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv], input=input_text, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise IngressError(
            f"`{' '.join(str(a) for a in argv)}` failed ({proc.returncode}):\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc


def self_signed(host: str, out_dir: Path) -> tuple[Path, Path]:
    """A P-256 certificate for `host` (its own CA, valid 2 days): what cert-manager would issue."""
    out_dir.mkdir(parents=True, exist_ok=True)
    crt, key = out_dir / f"{host}.crt", out_dir / f"{host}.key"
    _run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={host}",
            "-addext",
            f"subjectAltName=DNS:{host}",
            "-keyout",
            key,
            "-out",
            crt,
        ]
    )
    key.chmod(0o600)
    return crt, key


def cluster_objects(ingresses: list[PublicIngress], certs: Path) -> list[dict[str, Any]]:
    """The IngressClass, and per TLS entry its namespace and certificate Secret."""
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": ingresses[0].ingress_class},
            "spec": {"controller": CONTROLLER},
        }
    ]
    for ing in ingresses:
        objects.append(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ing.namespace}}
        )
        for secret_name, hosts in ing.tls:
            if len(hosts) != 1:
                raise IngressError(
                    f"{ing.namespace}/{ing.name}: TLS secret {secret_name} lists hosts "
                    f"{list(hosts)}; the sandbox issues one certificate per host"
                )
            crt, key = self_signed(hosts[0], certs)
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "kubernetes.io/tls",
                    "metadata": {
                        "name": secret_name,
                        "namespace": ing.namespace,
                        "labels": {"app.kubernetes.io/managed-by": "elpv-sandbox"},
                    },
                    "data": {
                        "tls.crt": base64.b64encode(crt.read_bytes()).decode(),
                        "tls.key": base64.b64encode(key.read_bytes()).decode(),
                    },
                }
            )
    return objects


def traefik_args(ingress_class: str, web_port: int, websecure_port: int) -> list[str]:
    return [
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        "--log.level=INFO",
        f"--entryPoints.{WEB}.address=127.0.0.1:{web_port}",
        f"--entryPoints.{WEB}.http.redirections.entryPoint.to={WEBSECURE}",
        f"--entryPoints.{WEB}.http.redirections.entryPoint.scheme=https",
        f"--entryPoints.{WEBSECURE}.address=127.0.0.1:{websecure_port}",
        f"--entryPoints.{WEBSECURE}.http.tls=true",
        # Drain on SIGTERM: stop accepting, let open requests finish (bounded for `down`).
        f"--entryPoints.{WEBSECURE}.transport.lifeCycle.graceTimeOut=3s",
        f"--entryPoints.{WEB}.transport.lifeCycle.graceTimeOut=3s",
        "--providers.kubernetesingress=true",
        f"--providers.kubernetesingress.ingressClass={ingress_class}",
        # Published in each Ingress's status.loadBalancer (what a cloud load balancer's
        # address would be); Argo CD calls an Ingress Healthy once it is set.
        "--providers.kubernetesingress.ingressEndpoint.ip=127.0.0.1",
    ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start(
    *,
    kubeconfig: Path,
    seed: Path,
    state: Path,
    traefik: Path,
    kustomize: Path,
    kubectl: Path,
    start_process: StartProcess,
    timeout: float = 60,
) -> str:
    """IngressClass + certificates + Traefik; returns the HTTPS URL (https://127.0.0.1:<port>)."""
    ingresses = rendered_ingresses(kustomize, seed)
    certs = state / "ingress" / "certs"
    objects = cluster_objects(ingresses, certs)
    _run(
        [kubectl, "--kubeconfig", kubeconfig, "apply", "-f", "-"],
        input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )
    web_port, websecure_port = free_port(), free_port()
    env = dict(os.environ)
    env["KUBECONFIG"] = str(kubeconfig)  # Traefik's out-of-cluster client reads it
    start_process(
        PROCESS, [traefik, *traefik_args(ingresses[0].ingress_class, web_port, websecure_port)], env
    )
    deadline = time.monotonic() + timeout
    while not (port_open(web_port) and port_open(websecure_port)):
        if time.monotonic() > deadline:
            raise IngressError(
                f"traefik not listening after {timeout:.0f} s: see {state / 'logs' / PROCESS}.log"
            )
        time.sleep(0.3)
    return f"https://127.0.0.1:{websecure_port}"
