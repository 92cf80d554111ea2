"""Admission in the sandbox: Kyverno's admission controller as a host process (docs/sandbox.md,
"Admission"; docs/environments.md, "Signed images only").

`sandbox.py up --admission` calls `start()` right after the control plane is up, and `wait_ready()`
before it reports the sandbox up (Kyverno starts while Argo CD does). `start()`:

- installs Kyverno's CRDs (`kyverno.io` and `policies.kyverno.io`) from the
  `github.com/kyverno/kyverno` module, fetched the way `make validate` fetches them for the schemas
  (gitops.commands.validate.schemas.go_module_dir, same module and version), and the `kyverno`
  namespace, where Kyverno keeps its leader lease, its health lease and its TLS Secrets;
- generates a cosign key pair for this run (STATE/admission/cosign.key, .pub; empty password)
  with the pinned cosign, and renders sandbox/image-policy/ (cluster/image-policy.yaml with the
  keyless attestor swapped for that public key) into STATE/admission/image-policy.json. It is
  not applied: with it in place, Argo CD's syncs of images nobody signed would be refused. The
  e2e test applies it, and removes it when done;
- starts Kyverno with the sandbox kubeconfig (kyverno_args() says why each flag is set). Kyverno
  registers its webhooks with a URL on 127.0.0.1 (`--serverIP`) and issues their certificate
  itself; the API server calls it there, in kwok and live mode alike.

The process is supervised like the Argo CD ones (own process group, pid file, log in
STATE/logs/kyverno.log); `down` stops it before the control plane, and the cluster objects go
with the cluster.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROCESS = "kyverno"
NAMESPACE = "kyverno"
# Kyverno refuses to start without these names; the Helm chart's defaults.
CA_SECRET = "kyverno-svc.kyverno.svc.kyverno-tls-ca"  # noqa: S105 (a name, no secret)
TLS_SECRET = "kyverno-svc.kyverno.svc.kyverno-tls-pair"  # noqa: S105
# The CRD folders of the module the admission controller needs: it lists and watches ClusterPolicy,
# Policy, UpdateRequest, GlobalContextEntry, PolicyException (kyverno.io) and every
# policies.kyverno.io kind, and waits for those caches before serving. Reports (reports.kyverno.io,
# wgpolicyk8s.io) are off (--admissionReports=false): no reports controller runs to read them.
CRD_FOLDERS = ("config/crds/kyverno", "config/crds/policies.kyverno.io")
# Kyverno exits at start unless these are set (cmd/internal/check.go); in a cluster the Helm
# chart sets them from the pod. Values: the chart's names, and a fixed pod name (it leads alone).
KYVERNO_ENV = {
    "KYVERNO_NAMESPACE": NAMESPACE,
    "KYVERNO_SERVICEACCOUNT_NAME": "kyverno-admission-controller",
    "KYVERNO_ROLE_NAME": "kyverno:admission-controller",
    "KYVERNO_DEPLOYMENT": "kyverno-admission-controller",
    "KYVERNO_SVC": "kyverno-svc",
    "KYVERNO_POD_NAME": "kyverno-sandbox",
    "INIT_CONFIG": "kyverno",
    "METRICS_CONFIG": "kyverno-metrics",
}
POLICY_OVERLAY = Path("sandbox") / "image-policy"
KEY_PLACEHOLDER = "SANDBOX_PUBLIC_KEY"
POLICY_NAME = "elpv-classifier-signed-on-main"
# What Kyverno creates once it leads and its TLS pair exists: the webhooks that validate Kyverno's
# own policies and the one that carries every policy's resource rules.
WEBHOOKS = (
    "validatingwebhookconfiguration/kyverno-policy-validating-webhook-cfg",
    "validatingwebhookconfiguration/kyverno-resource-validating-webhook-cfg",
)

StartProcess = Callable[[str, Sequence[str | Path], dict[str, str]], int]


class AdmissionError(RuntimeError):
    """Kyverno could not be set up: the message says what and where its log is."""


@dataclass(frozen=True)
class Admission:
    """What `start()` set up (paths in the sandbox's state directory)."""

    signing_key: Path  # cosign private key, empty password (COSIGN_PASSWORD="")
    public_key: Path
    policy: Path  # the sandbox variant of the policy, rendered with public_key, not applied
    port: int  # Kyverno's webhook server, 127.0.0.1
    started: float  # time.monotonic() when the process was started


def _run(
    argv: Sequence[str | Path],
    *,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv],
        input=input_text,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise AdmissionError(
            f"`{' '.join(str(a) for a in argv)}` failed ({proc.returncode}):\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def kyverno_crds(go: str = "go") -> list[Path]:
    """The CRD files of CRD_FOLDERS in the pinned Kyverno module (Go module proxy, or the module
    cache the wrapper module's build filled)."""
    from gitops.commands.validate.schemas import KYVERNO_MODULE, KYVERNO_VERSION, go_module_dir

    with tempfile.TemporaryDirectory(prefix="sandbox-kyverno-") as scratch:
        module = go_module_dir(go, KYVERNO_MODULE, KYVERNO_VERSION, Path(scratch))
    files = sorted(f for folder in CRD_FOLDERS for f in (module / folder).glob("*.yaml"))
    if not files:
        raise AdmissionError(f"no CRDs under {module}/{{{','.join(CRD_FOLDERS)}}}")
    return files


def cosign_env(state: Path) -> dict[str, str]:
    """cosign with an empty key password, and its TUF cache (unused with a key) in STATE."""
    env = dict(os.environ)
    env["COSIGN_PASSWORD"] = ""
    env["TUF_ROOT"] = str(state / "admission" / "tuf")
    return env


def generate_key_pair(cosign: Path, out_dir: Path, state: Path, name: str = "cosign") -> Path:
    """`cosign generate-key-pair` into out_dir/<name>.key and .pub; returns the private key."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _run(
        [cosign, "generate-key-pair", "--output-key-prefix", out_dir / name],
        env=cosign_env(state),
        cwd=out_dir,
    )
    return out_dir / f"{name}.key"


def render_policy(kustomize: Path, root: Path, public_key: str) -> dict[str, Any]:
    """sandbox/image-policy/ rendered, the placeholder replaced by `public_key` (PEM)."""
    import yaml  # the project's own dependency (PyYAML), imported late like sandbox/ingress.py

    out = _run([kustomize, "build", root / POLICY_OVERLAY]).stdout
    docs = [d for d in yaml.safe_load_all(out) if isinstance(d, dict)]
    policies = [d for d in docs if d.get("kind") == "ImageValidatingPolicy"]
    if len(policies) != 1:
        raise AdmissionError(f"{POLICY_OVERLAY} renders {len(policies)} ImageValidatingPolicies")
    policy = policies[0]
    key = policy["spec"]["attestors"][0]["cosign"]["key"]
    if key.get("data") != KEY_PLACEHOLDER:
        raise AdmissionError(
            f"{POLICY_OVERLAY}: the first attestor's key is {key.get('data')!r}, expected the "
            f"placeholder {KEY_PLACEHOLDER} that the sandbox replaces with its public key"
        )
    key["data"] = public_key
    return policy


def kyverno_args(kubeconfig: Path, port: int, metrics_port: int) -> list[str]:
    """Kyverno's flags out of the cluster, each for a reason."""
    return [
        f"--kubeconfig={kubeconfig}",
        # Out of the cluster: the webhooks call https://127.0.0.1:<port>/... instead of a
        # Service, and the self-issued serving certificate names 127.0.0.1.
        f"--serverIP=127.0.0.1:{port}",
        # Listen on loopback only, on that port (the defaults are every address, 9443).
        "--webhookServerHost=127.0.0.1",
        f"--webhookServerPort={port}",
        # Required; the Secrets (in NAMESPACE) Kyverno creates for its CA and serving pair.
        f"--caSecretName={CA_SECRET}",
        f"--tlsSecretName={TLS_SECRET}",
        # No reports controller runs: writing admission reports would only fill etcd.
        "--admissionReports=false",
        # Prometheus metrics on loopback (the default is every address, port 8000), and no
        # controller-runtime metrics listener (default :8080).
        "--metricsHost=127.0.0.1",
        f"--metricsPort={metrics_port}",
        "--controllerRuntimeMetricsAddress=0",
        # Plain text log lines in STATE/logs/kyverno.log.
        "--disableLogColor",
    ]


def start(
    *,
    kubeconfig: Path,
    root: Path,
    state: Path,
    kyverno: Path,
    cosign: Path,
    kustomize: Path,
    kubectl: Path,
    start_process: StartProcess,
) -> Admission:
    """CRDs, namespace, key pair, rendered policy; then start Kyverno (wait_ready() waits)."""
    base = state / "admission"
    crds = kyverno_crds()
    k: list[str | Path] = [kubectl, "--kubeconfig", kubeconfig]
    # Server-side: the largest CRDs do not fit the client-side last-applied annotation.
    _run([*k, "apply", "--server-side", *(a for f in crds for a in ("-f", f))])
    _run(
        [*k, "apply", "-f", "-"],
        input_text=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        ),
    )
    signing_key = generate_key_pair(cosign, base, state)
    public_key = signing_key.with_suffix(".pub").read_text()
    policy = base / "image-policy.json"
    policy.write_text(json.dumps(render_policy(kustomize, root, public_key), indent=2) + "\n")
    _run(
        [
            *k,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *(f"crd/{name}" for name in crd_names(crds)),
        ]
    )
    port = free_port()
    env = {**os.environ, **KYVERNO_ENV, "TUF_ROOT": str(base / "tuf")}
    started = time.monotonic()
    start_process(PROCESS, [kyverno, *kyverno_args(kubeconfig, port, free_port())], env)
    return Admission(
        signing_key=signing_key,
        public_key=signing_key.with_suffix(".pub"),
        policy=policy,
        port=port,
        started=started,
    )


def crd_names(files: list[Path]) -> list[str]:
    """metadata.name of each CRD file (the file names are <group>_<plural>.yaml)."""
    names = []
    for f in files:
        group, _, plural = f.stem.partition("_")
        names.append(f"{plural}.{group}")
    return names


def wait_ready(
    admission: Admission,
    *,
    kubeconfig: Path,
    kubectl: Path,
    log_file: Path,
    alive: Callable[[], bool],
    timeout: float = 180,
) -> float:
    """Until Kyverno serves and has registered its webhooks; returns seconds since its start."""
    deadline = admission.started + timeout

    def registered() -> bool:
        proc = subprocess.run(
            [str(kubectl), "--kubeconfig", str(kubeconfig), "get", *WEBHOOKS, "-o", "name"],
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.returncode == 0

    while not (port_open(admission.port) and registered()):
        if not alive():
            raise AdmissionError(f"kyverno exited during start-up: see {log_file}")
        if time.monotonic() > deadline:
            raise AdmissionError(
                f"kyverno did not register its webhooks within {timeout:.0f} s: see {log_file}"
            )
        time.sleep(0.5)
    return time.monotonic() - admission.started
