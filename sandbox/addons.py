"""Live-mode add-ons of the sandbox: pods reach the API server, metrics-server runs via Argo CD.

sandbox.py calls these hooks, in live mode only:

- `open_apiserver_port(run_dir)` first: a port for the API server and iptables rules that let
  in only loopback and the pods' bridge (`elpv-br0`) on it, before anything listens there.
- `control_plane(options, config, pki, run_dir)` while it writes the kwokctl configuration:
  the API server listens on that port on every address and advertises the bridge address
  10.244.0.1, so the `kubernetes` Service (10.0.0.1:443) leads pods to it; its serving
  certificate also names those two addresses. It gets the aggregation layer's request-header
  flags (so metrics-server learns who is asking), and the controller-manager syncs HPAs every
  few seconds.
- `seed(clone, kustomize, push, bin_dir)` while `up` writes the seed commit of `origin`:
  metrics-server's image (built by `sandbox/tools/build.sh metrics-server`) is pushed to the
  local registry, and argocd/ gets the metrics-server component (an Application rendering the
  vendored chart charts/metrics-server/) plus a sandbox patch pointing its image at that digest.
- `remove_firewall(run_dir)` in `down`, after the control plane has stopped.

Everything else about the add-on (the chart, its values, its AppProject) is in the repository,
where a real cluster gets it from: argocd/addons/metrics-server/.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

BRIDGE = "elpv-br0"
NODE_IP = "10.244.0.1"
# The default service range of kube-apiserver, set explicitly so the certificate below matches.
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
HPA_SYNC_PERIOD = "5s"  # the controller-manager's default is 15s
METRICS_SERVER_IMAGE = "elpv-sandbox/metrics-server"
ADDON_COMPONENT = "addons/metrics-server"
SANDBOX_PATCH = "sandbox-metrics-server.yaml"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _versions(root: Path) -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in (root / "sandbox" / "tools" / "versions.sh").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip()
    return versions


# --- the API server, reachable from the pods' bridge -----------------------------------------


def firewall_rules(port: int) -> list[list[str]]:
    """iptables rules (tool + `-I` arguments, in insertion order) for the API server's port.

    The API server binds every address (it has one --bind-address, and the host's clients use
    127.0.0.1); these let in loopback and the bridge and drop the rest. Inserted at the top of
    INPUT: the DROP first, then the bridge's ACCEPT above it.
    """
    drop = ["INPUT", "!", "-i", "lo", "-p", "tcp", "--dport", str(port), "-j", "DROP"]
    accept = ["INPUT", "-i", BRIDGE, "-p", "tcp", "--dport", str(port), "-j", "ACCEPT"]
    return [["iptables", *drop], ["iptables", *accept], ["ip6tables", *drop]]


def open_apiserver_port(run_dir: Path) -> int:
    """Choose the API server's port and install firewall_rules(port) before it starts.

    `up` calls this first; `control_plane` reads the port back (run_dir/apiserver-port), and
    `remove_firewall` (in `down`) deletes exactly the rules recorded here.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    record = run_dir / "apiserver-firewall-rules"
    for tool, *rule in firewall_rules(port):
        if shutil.which(tool) is None:
            if tool == "iptables":
                raise RuntimeError(
                    "live mode needs iptables: the API server listens beyond 127.0.0.1 for the "
                    "pods, and only iptables keeps other hosts out"
                )
            continue
        subprocess.run([tool, "-I", *rule], check=True, capture_output=True, text=True)
        with record.open("a") as out:
            out.write(json.dumps([tool, *rule]) + "\n")
    (run_dir / "apiserver-port").write_text(str(port))
    return port


def remove_firewall(run_dir: Path) -> None:
    record = run_dir / "apiserver-firewall-rules"
    if not record.exists():
        return
    for line in reversed(record.read_text().splitlines()):
        tool, *rule = json.loads(line)
        subprocess.run([tool, "-D", *rule], check=False, capture_output=True)
    record.unlink()


def control_plane(
    options: dict[str, object], config: dict[str, Any], pki: Path, run_dir: Path
) -> int:
    """Add the live mode's API server and controller-manager settings; returns the port.

    The port is the one open_apiserver_port() chose and firewalled: without it the API server
    would listen on every interface unguarded, so a missing port file is an error.
    """
    port_file = run_dir / "apiserver-port"
    if not port_file.exists():
        raise RuntimeError(
            f"{port_file} is missing: `up` opens (and firewalls) the API server's port before "
            "it writes the kwokctl configuration (addons.open_apiserver_port)"
        )
    port = int(port_file.read_text())
    options["kubeApiserverPort"] = port
    options["kubeApiserverCertSANs"] = [NODE_IP, KUBERNETES_SERVICE_IP]
    apiserver_args = [
        ("advertise-address", NODE_IP),
        ("service-cluster-ip-range", SERVICE_CIDR),
        # The aggregation layer: kwokctl sets the proxy client certificate (its admin pair) but
        # no request-header CA, so an aggregated API server could not tell who is asking.
        ("requestheader-client-ca-file", str(pki / "ca.crt")),
        ("requestheader-allowed-names", "kwok-admin"),
        ("requestheader-username-headers", "X-Remote-User"),
        ("requestheader-group-headers", "X-Remote-Group"),
        ("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
        # Proxy to the metrics-server pod's address, not through its Service's ClusterIP.
        ("enable-aggregator-routing", "true"),
    ]
    patches: list[dict[str, Any]] = config.setdefault("componentsPatches", [])
    by_name = {p["name"]: p for p in patches}
    apiserver = by_name.get("kube-apiserver")
    if apiserver is None:
        apiserver = {"name": "kube-apiserver", "extraArgs": []}
        patches.append(apiserver)
    apiserver["extraArgs"] += [
        # Replaces kwokctl's --bind-address=127.0.0.1 (the firewall above keeps every interface
        # but loopback and the bridge out).
        {"key": "bind-address", "value": "0.0.0.0", "override": True},  # noqa: S104
        *({"key": k, "value": v} for k, v in apiserver_args),
    ]
    patches.append(
        {
            "name": "kube-controller-manager",
            "extraArgs": [
                {"key": "horizontal-pod-autoscaler-sync-period", "value": HPA_SYNC_PERIOD}
            ],
        }
    )
    return port


# --- metrics-server: image pushed, Application enabled in the seed commit --------------------


def metrics_server_image(
    push: Callable[[str, Path, str], str], bin_dir: Path, registry: str, root: Path
) -> tuple[str, str]:
    """Push the one-binary metrics-server image; returns (repository, tag@digest)."""
    version = _versions(root)["METRICS_SERVER_VERSION"]
    binary = bin_dir / f"metrics-server-{version}"
    if not binary.exists():
        raise RuntimeError(
            f"{binary} is missing: build it with `sandbox/tools/build.sh metrics-server` "
            "(`make sandbox-live-tools` does)"
        )
    repository = f"{registry}/{METRICS_SERVER_IMAGE}"
    digest = push(f"{repository}:{version}", binary, "/metrics-server")
    return repository, f"{version}@{digest}"


def sandbox_patch(repository: str, tag: str) -> dict[str, Any]:
    """The sandbox's values on top of application.yaml's: the local image, by digest, and the
    kubelet's self-signed serving certificate accepted (the sandbox has no kubelet CA)."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "metrics-server"},
        "spec": {
            "source": {
                "helm": {
                    "valuesObject": {
                        "image": {"repository": repository, "tag": tag},
                        "args": ["--kubelet-insecure-tls"],
                    }
                }
            }
        },
    }


def seed(
    clone: Path,
    kustomize: Path,
    push: Callable[[str, Path, str], str],
    bin_dir: Path,
    registry: str,
) -> str:
    """Enable the metrics-server component in the seed clone's argocd/; returns the image."""
    root = Path(__file__).resolve().parent.parent
    repository, tag = metrics_server_image(push, bin_dir, registry, root)
    argocd = clone / "argocd"
    (argocd / SANDBOX_PATCH).write_text(json.dumps(sandbox_patch(repository, tag), indent=2) + "\n")
    for args in (["add", "component", ADDON_COMPONENT], ["add", "patch", "--path", SANDBOX_PATCH]):
        subprocess.run([str(kustomize), "edit", *args], cwd=argocd, check=True)
    subprocess.run(["git", "add", "argocd"], cwd=clone, check=True)
    return f"{repository}:{tag}"
