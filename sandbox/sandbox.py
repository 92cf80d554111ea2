"""Local GitOps sandbox: a real Kubernetes control plane and real Argo CD on one machine.

    python sandbox/sandbox.py up        # start everything, bootstrap Argo CD, write env.json
    python sandbox/sandbox.py down      # stop every process this sandbox started, remove state
    python sandbox/sandbox.py status    # what runs, where (reads env.json)

What runs (every server on 127.0.0.1, every process tracked by a pid file in .tools/sandbox/run):
- kube-apiserver, etcd, kube-controller-manager, kube-scheduler and kwok (simulated nodes, so
  pods are scheduled and report Running/Ready without a container runtime), started from the
  locally built binaries by `kwokctl create cluster --runtime binary`, which also makes the
  certificates and the kubeconfig;
- redis-server for Argo CD's cache;
- `git daemon` serving a bare repository that plays `origin`; it is seeded with this working
  tree's HEAD plus one commit that points argocd/ at it (the manifests' documented override);
- Argo CD repo-server, application-controller and server as local processes (one multi-call
  binary chosen by ARGOCD_BINARY_NAME) against the kubeconfig, the way Argo CD's own local
  development runs them (ARGOCD_FAKE_IN_CLUSTER makes "in-cluster" mean that kubeconfig).

The contract with the end-to-end tests is .tools/sandbox/env.json (see `SandboxEnv`).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import importlib.util
import io
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(os.environ.get("TOOLS", ROOT / ".tools"))
SANDBOX_BIN = Path(os.environ.get("SANDBOX_BIN", TOOLS / "sandbox" / "bin"))
STATE = Path(os.environ.get("SANDBOX_STATE", TOOLS / "sandbox" / "state"))
RUN = STATE / "run"
LOGS = STATE / "logs"
ENV_FILE = STATE / "env.json"
CLUSTER_NAME = "elpv-gitops"
ARGOCD_NAMESPACE = "argocd"
ORIGIN_REPO = "elpv-gitops.git"
SIMULATED_NODES = 2
# Live mode's serving image: what `make push` of the tiny test model writes (mk/image.mk).
DEFAULT_IMAGE_JSON = ROOT / "build" / "test-image.json"


@dataclass(frozen=True)
class SandboxEnv:
    """Where everything is: written by `up`, read by tests/e2e and bench/sandbox.py."""

    kubeconfig: str
    kubectl: str
    argocd: str
    argocd_server: str
    argocd_config: str
    argocd_admin_password: str
    origin_url: str
    origin_path: str
    redis_port: int
    bin_dir: str
    state_dir: str
    started_seconds: float
    # "kwok" (simulated nodes) or "live" (one real node: containerd + runc + kubelet + kube-proxy)
    mode: str = "kwok"
    # live mode: the image both overlays were seeded with (registry/name:tag@sha256:...)
    image: str = ""
    # live mode: the Ingress controller's HTTPS entry point (sandbox/ingress.py)
    ingress_url: str = ""
    # `up --admission` (sandbox/admission.py): Kyverno runs; cosign, this run's signing key
    # (empty password) and the sandbox variant of the image policy, rendered, not applied
    cosign: str = ""
    signing_key: str = ""
    admission_policy: str = ""
    kyverno_ready_seconds: float = 0.0


def log(message: str) -> None:
    print(f">> sandbox: {message}", flush=True)


class SandboxError(RuntimeError):
    """A step failed: the message says which, and where its log is."""


def live_addons() -> ModuleType:
    """sandbox/addons.py (API server for the pods, metrics-server), beside this file."""
    spec = importlib.util.spec_from_file_location(
        "sandbox_addons", Path(__file__).with_name("addons.py")
    )
    if spec is None or spec.loader is None:
        raise SandboxError("sandbox/addons.py is missing beside sandbox/sandbox.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def admission_module() -> ModuleType:
    """sandbox/admission.py (Kyverno, the signing key, the sandbox policy), beside this file;
    loaded once (its AdmissionError and Admission must be the same classes for every caller)."""
    name = "sandbox_admission"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("admission.py"))
    if spec is None or spec.loader is None:
        raise SandboxError("sandbox/admission.py is missing beside sandbox/sandbox.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is defined
    spec.loader.exec_module(module)
    return module


def binary(name: str) -> Path:
    path = SANDBOX_BIN / name
    if not path.exists():
        raise SandboxError(
            f"{path} is missing: build the sandbox tools first with `make sandbox-tools`"
        )
    return path


def free_port() -> int:
    """A port that is free on 127.0.0.1 now (the kernel picks it; races are unlikely here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(
    argv: Sequence[str | Path],
    *,
    env: dict[str, str] | None = None,
    input_text: str | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv],
        env=env,
        input=input_text,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise SandboxError(
            f"`{' '.join(str(a) for a in argv)}` failed ({proc.returncode}):\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc


# --- processes ----------------------------------------------------------------------------

# Servers started by this Python process, kept so they are reaped (not left as zombies or
# reported as leaked) when `down` runs in the same process, as in bench/sandbox.py.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def start_process(name: str, argv: Sequence[str | Path], env: dict[str, str]) -> int:
    """Start a long-running server in its own session, logging to LOGS/<name>.log."""
    RUN.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    with (LOGS / f"{name}.log").open("ab") as out:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: `down` stops it and its children
            cwd=STATE,
        )
    _CHILDREN[proc.pid] = proc
    (RUN / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive: reap it if it is our child.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_process(name: str, grace_seconds: float = 10.0) -> None:
    """SIGTERM the process group recorded in RUN/<name>.pid, SIGKILL it after the grace time."""
    pid_file = RUN / f"{name}.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().strip())
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        log(f"{name} (pid {pid}) ignored SIGTERM for {grace_seconds:.0f} s: SIGKILL")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=grace_seconds)
    pid_file.unlink()


def wait_for(what: str, check: Callable[[], bool], timeout: float, log_name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise SandboxError(f"{what} not ready after {timeout:.0f} s: see {LOGS / (log_name + '.log')}")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- control plane (kwokctl) ----------------------------------------------------------------


def kwok_env() -> dict[str, str]:
    env = dict(os.environ)
    # kwokctl keeps clusters, pid files, certificates and its download cache under its workdir.
    env["KWOK_WORKDIR"] = str(STATE / "kwok")
    return env


def kwokctl_config(live: bool = False) -> Path:
    """kwokctl options as a config file: 127.0.0.1 everywhere, our binaries, nothing downloaded.

    Live mode: no kwok controller (the real kubelet owns its node), and the API server presents
    the admin client certificate to the kubelet (logs, exec, metrics) instead of none.
    """
    options: dict[str, object] = {
        "runtime": "binary",
        "bindAddress": "127.0.0.1",
        "kubeApiserverBinary": str(binary("kube-apiserver")),
        "kubeControllerManagerBinary": str(binary("kube-controller-manager")),
        "kubeSchedulerBinary": str(binary("kube-scheduler")),
        "kwokControllerBinary": str(binary("kwok")),
        "etcdBinary": str(binary("etcd")),
        "kubectlBinary": str(binary("kubectl")),
        "quietPull": True,
    }
    config: dict[str, object] = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": options,
    }
    if live:
        pki = STATE / "kwok" / "clusters" / CLUSTER_NAME / "pki"
        options["disable"] = ["kwok-controller"]
        config["componentsPatches"] = [
            {
                "name": "kube-apiserver",
                "extraArgs": [
                    {"key": "kubelet-client-certificate", "value": str(pki / "admin.crt")},
                    {"key": "kubelet-client-key", "value": str(pki / "admin.key")},
                    # The node's name is not in DNS: reach the kubelet at its InternalIP.
                    {"key": "kubelet-preferred-address-types", "value": "InternalIP"},
                ],
            }
        ]
        live_addons().control_plane(options, config, pki, RUN)
    path = STATE / "kwokctl.yaml"
    # JSON is YAML: kwokctl reads either.
    path.write_text(json.dumps(config, indent=2))
    return path


def start_control_plane(kubeconfig: Path, live: bool = False) -> None:
    kwokctl = binary("kwokctl")
    log("starting kube-apiserver, etcd, controller-manager, scheduler and kwok (kwokctl)")
    run(
        [
            kwokctl,
            "create",
            "cluster",
            "--name",
            CLUSTER_NAME,
            "--config",
            kwokctl_config(live),
            "--kubeconfig",
            kubeconfig,
            "--wait",
            "120s",
        ],
        env=kwok_env(),
    )
    if live:
        return
    log(f"adding {SIMULATED_NODES} simulated nodes")
    run(
        [
            kwokctl,
            "scale",
            "node",
            "--name",
            CLUSTER_NAME,
            "--replicas",
            str(SIMULATED_NODES),
            # The pods request ephemeral storage; kwok's node template declares none.
            "--param",
            '.allocatable["ephemeral-storage"]="100Gi"',
        ],
        env=kwok_env(),
    )


def stop_control_plane() -> None:
    if not (STATE / "kwok" / "clusters" / CLUSTER_NAME).exists():
        return
    kwokctl = SANDBOX_BIN / "kwokctl"
    log("stopping the control plane (kwokctl delete cluster)")
    run([kwokctl, "delete", "cluster", "--name", CLUSTER_NAME], env=kwok_env(), check=False)


# --- redis, origin ---------------------------------------------------------------------------


def start_redis() -> int:
    server = shutil.which("redis-server")
    if server is None:
        raise SandboxError("redis-server is missing: `apt-get install redis-server`")
    port = free_port()
    start_process(
        "redis",
        [
            server,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            "--dir",
            str(STATE),
        ],
        dict(os.environ),
    )
    wait_for("redis", lambda: port_open(port), 15, "redis")
    return port


def git_env() -> dict[str, str]:
    env = dict(os.environ)
    # Sandbox commits must not depend on the user's git identity or config.
    env.update(
        GIT_AUTHOR_NAME="elpv sandbox",
        GIT_AUTHOR_EMAIL="sandbox@elpv-gitops.invalid",
        GIT_COMMITTER_NAME="elpv sandbox",
        GIT_COMMITTER_EMAIL="sandbox@elpv-gitops.invalid",
    )
    return env


def start_origin() -> tuple[str, Path]:
    """A bare repository behind `git daemon` (read and push) on 127.0.0.1."""
    base = STATE / "git"
    bare = base / ORIGIN_REPO
    base.mkdir(parents=True, exist_ok=True)
    run(["git", "init", "--quiet", "--bare", "--initial-branch=main", bare])
    port = free_port()
    start_process(
        "git-daemon",
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--listen=127.0.0.1",
            f"--port={port}",
            f"--base-path={base}",
            "--export-all",
            "--enable=receive-pack",
            str(base),
        ],
        git_env(),
    )
    wait_for("git daemon", lambda: port_open(port), 15, "git-daemon")
    return f"git://127.0.0.1:{port}/{ORIGIN_REPO}", bare


def seed_origin(origin_url: str, image: str = "") -> Path:
    """Push HEAD to origin's main, plus one commit pointing argocd/ at origin.

    The URL goes in through the manifests' one override mechanism (the gitops-repo values,
    set with `kustomize edit set configmap`), and the prod sync window is dropped the documented
    way, so the sandbox syncs prod at any hour. Returns the seeded clone.
    """
    env = git_env()
    clone = STATE / "seed"
    if clone.exists():
        shutil.rmtree(clone)
    run(["git", "clone", "--quiet", "--no-hardlinks", ROOT, clone], env=env)
    run(["git", "checkout", "--quiet", "-B", "main"], cwd=clone, env=env)
    kustomize = TOOLS / "bin" / "kustomize"
    argocd_dir = clone / "argocd"
    run(
        [kustomize, "edit", "set", "configmap", "gitops-repo", f"--from-literal=url={origin_url}"],
        cwd=argocd_dir / "apps",
    )
    if "prod-sync-window.yaml" in (argocd_dir / "kustomization.yaml").read_text():
        run(
            [kustomize, "edit", "remove", "patch", "--path", "prod-sync-window.yaml"],
            cwd=argocd_dir,
        )
    if image:
        seed_images(clone, image)
        live_addons().seed(clone, kustomize, push_single_binary_image, SANDBOX_BIN, REGISTRY)
    run(
        ["git", "commit", "--quiet", "-am", "sandbox: point Argo CD at the local origin"],
        cwd=clone,
        env=env,
    )
    run(["git", "push", "--quiet", origin_url, "HEAD:refs/heads/main"], cwd=clone, env=env)
    return clone


# --- Argo CD ---------------------------------------------------------------------------------

# Sandbox-only Argo CD settings: kwok mode has no ingress controller, so nothing ever fills an
# Ingress's status.loadBalancer and Argo CD would call it Progressing forever. The override
# (Argo CD's documented resource.customizations mechanism) says so instead of hiding it. Live
# mode runs Traefik (sandbox/ingress.py), which fills it: no override there.
INGRESS_HEALTH_LUA = """\
hs = {}
hs.status = "Healthy"
hs.message = "sandbox: no ingress controller, load balancer status not expected"
return hs
"""

# Likewise there is no metrics-server, so an HPA always reports ScalingActive=False with
# FailedGetResourceMetric, which Argo CD's built-in HPA check calls Degraded, failing every sync
# (and skipping PruneLast). The sandbox check still reports real scaling failures as Degraded.
HPA_HEALTH_LUA = """\
hs = { status = "Healthy", message = "sandbox: no metrics-server, CPU metrics not expected" }
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.status == "False" and (c.reason == "FailedGetScale" or c.reason == "FailedUpdateScale"
        or c.reason == "InvalidSelector") then
      hs.status = "Degraded"
      hs.message = c.message
    end
  end
end
return hs
"""


def argocd_env(kubeconfig: Path, binary_name: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KUBECONFIG=str(kubeconfig),
        ARGOCD_FAKE_IN_CLUSTER="true",  # "in-cluster" = the cluster of $KUBECONFIG
        ARGOCD_BINARY_NAME=binary_name,
        ARGOCD_GPG_ENABLED="false",
        ARGOCD_TLS_DATA_PATH=str(STATE / "argocd" / "tls"),
        ARGOCD_SSH_DATA_PATH=str(STATE / "argocd" / "ssh"),
        ARGOCD_GNUPGHOME=str(STATE / "argocd" / "gpg"),
        ARGOCD_EXEC_TIMEOUT="60s",
        # repo-server runs `kustomize`, `git` and Argo CD's git helper scripts from PATH: the
        # project's pinned kustomize first, then the helpers (what Argo CD's image installs).
        PATH=f"{TOOLS / 'bin'}:{argocd_helpers()}:{env.get('PATH', '/usr/bin:/bin')}",
        HOME=str(STATE / "argocd" / "home"),
        # repo-server keeps its checkouts in $TMPDIR/_argocd-repo; in STATE, `down` removes them.
        TMPDIR=str(STATE / "argocd" / "tmp"),
    )
    # Its git credential socket is /tmp/reposerver-ask-pass.sock unless told otherwise; a Unix
    # socket path has room for 107 bytes, so a very deep checkout keeps Argo CD's default.
    ask_pass = STATE / "argocd" / "tmp" / "ask-pass.sock"
    if len(os.fsencode(ask_pass)) < 108:
        env["ARGOCD_ASK_PASS_SOCK"] = str(ask_pass)
    for sub in ("tls", "ssh", "gpg", "home", "tmp"):
        (STATE / "argocd" / sub).mkdir(parents=True, exist_ok=True)
    return env


def argocd_helpers() -> Path:
    """Argo CD's helper scripts from its module download, made executable.

    The repo-server execs `git-verify-wrapper.sh` for every revision it renders (and fails the
    render with "permission denied" when it is missing); Argo CD's image puts these on PATH.
    """
    helpers = STATE / "argocd" / "bin"
    helpers.mkdir(parents=True, exist_ok=True)
    for script in ("git-verify-wrapper.sh", "gpg-wrapper.sh", "git-ask-pass.sh"):
        target = helpers / script
        if not target.exists():
            shutil.copyfile(argocd_files() / "hack" / script, target)
            target.chmod(0o755)
    # Helm sources (the metrics-server add-on) are rendered with `helm` from PATH.
    helm = SANDBOX_BIN / "helm"
    if helm.exists() and not (helpers / "helm").exists():
        (helpers / "helm").symlink_to(helm.resolve())
    return helpers


def kubectl(kubeconfig: Path, *args: str, input_text: str | None = None) -> str:
    return run([binary("kubectl"), "--kubeconfig", kubeconfig, *args], input_text=input_text).stdout


def install_argocd(kubeconfig: Path, password: str, ingress_health: bool = True) -> None:
    """CRDs and the settings ConfigMaps/Secret that Argo CD reads from its namespace.

    `ingress_health`: add the Ingress health override (kwok mode has no ingress controller).
    """
    crds = argocd_files() / "crds"
    log(f"installing Argo CD CRDs from {crds}")
    kubectl(kubeconfig, "apply", "--server-side", "-k", str(crds))
    # `kubectl wait` errors (instead of waiting) while a new CRD has no conditions yet.
    wait_for(
        "Argo CD CRDs",
        lambda: (
            run(
                [
                    binary("kubectl"),
                    "--kubeconfig",
                    kubeconfig,
                    "wait",
                    "--for=condition=Established",
                    "--timeout=5s",
                    "crd/applications.argoproj.io",
                    "crd/appprojects.argoproj.io",
                ],
                check=False,
            ).returncode
            == 0
        ),
        60,
        "kube-apiserver",
    )
    labels = {"app.kubernetes.io/part-of": "argocd"}
    bcrypt_hash = run(
        [binary("argocd"), "account", "bcrypt", "--password", password],
        env=argocd_env(kubeconfig, "argocd"),
    ).stdout.strip()
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ARGOCD_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm", "namespace": ARGOCD_NAMESPACE, "labels": labels},
            "data": {
                # Poll rarely: the tests refresh on push (`argocd app get --refresh`), as a
                # webhook would, so a fast sync never comes from the poll.
                "timeout.reconciliation": "180s",
                **(
                    {"resource.customizations.health.networking.k8s.io_Ingress": INGRESS_HEALTH_LUA}
                    if ingress_health
                    else {}
                ),
                "resource.customizations.health.autoscaling_HorizontalPodAutoscaler": (
                    HPA_HEALTH_LUA
                ),
                "admin.enabled": "true",
                "users.anonymous.enabled": "false",
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "argocd-rbac-cm",
                "namespace": ARGOCD_NAMESPACE,
                "labels": labels,
            },
            "data": {"policy.default": "role:readonly"},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "argocd-cmd-params-cm",
                "namespace": ARGOCD_NAMESPACE,
                "labels": labels,
            },
            "data": {},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "argocd-secret", "namespace": ARGOCD_NAMESPACE, "labels": labels},
            "type": "Opaque",
            "stringData": {
                "admin.password": bcrypt_hash,
                "admin.passwordMtime": "2026-01-01T00:00:00Z",
                "server.secretkey": secrets.token_urlsafe(32),
            },
        },
    ]
    kubectl(
        kubeconfig,
        "apply",
        "-f",
        "-",
        input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )


def argocd_files() -> Path:
    """Argo CD's CRDs and helper scripts, copied beside the binary by sandbox/tools/build.sh."""
    version = read_versions()["ARGOCD_VERSION"]
    path = SANDBOX_BIN.parent / f"argocd-{version}-files"
    if not (path / "crds").is_dir():
        raise SandboxError(f"{path} is missing: run `make sandbox-tools`")
    return path


def read_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in (ROOT / "sandbox" / "tools" / "versions.sh").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip()
    return versions


def start_argocd(kubeconfig: Path, redis_port: int) -> tuple[int, int]:
    """Start repo-server, application-controller, server; return (server, metrics) ports."""
    argocd = binary("argocd")
    repo_port, server_port = free_port(), free_port()
    redis = f"127.0.0.1:{redis_port}"
    repo = f"127.0.0.1:{repo_port}"
    common = ["--loglevel", "info", "--redis", redis]
    start_process(
        "argocd-repo-server",
        [
            argocd,
            *common,
            "--address",
            "127.0.0.1",
            "--port",
            str(repo_port),
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            str(free_port()),
        ],
        argocd_env(kubeconfig, "argocd-repo-server"),
    )
    wait_for("argocd-repo-server", lambda: port_open(repo_port), 60, "argocd-repo-server")
    # The controller's metrics listener is hard-coded to 0.0.0.0 in Argo CD
    # (controller/appcontroller.go); block_external_access() closes it to other hosts.
    controller_metrics = free_port()
    start_process(
        "argocd-application-controller",
        [
            argocd,
            *common,
            "--repo-server",
            repo,
            "--namespace",
            ARGOCD_NAMESPACE,
            "--metrics-port",
            str(controller_metrics),
            "--status-processors",
            "4",
            "--operation-processors",
            "2",
        ],
        argocd_env(kubeconfig, "argocd-application-controller"),
    )
    block_external_access(controller_metrics)
    start_process(
        "argocd-server",
        [
            argocd,
            *common,
            "--repo-server",
            repo,
            "--namespace",
            ARGOCD_NAMESPACE,
            "--insecure",
            "--address",
            "127.0.0.1",
            "--port",
            str(server_port),
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            str(free_port()),
        ],
        argocd_env(kubeconfig, "argocd-server"),
    )
    wait_for("argocd-server", lambda: port_open(server_port), 60, "argocd-server")
    return server_port, controller_metrics


def block_external_access(port: int) -> None:
    """Drop TCP to `port` from anything but loopback (for listeners we cannot bind ourselves)."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            log(f"{tool} missing: port {port} stays reachable from other hosts")
            continue
        rule = ["INPUT", "!", "-i", "lo", "-p", "tcp", "--dport", str(port), "-j", "DROP"]
        if run([tool, "-I", *rule], check=False).returncode == 0:
            with (RUN / "firewall-rules").open("a") as out:
                out.write(json.dumps([tool, *rule]) + "\n")


def remove_firewall_rules() -> None:
    rules = RUN / "firewall-rules"
    if not rules.exists():
        return
    for line in rules.read_text().splitlines():
        tool, *rule = json.loads(line)
        run([tool, "-D", *rule], check=False)
    rules.unlink()


def argocd_login(env: SandboxEnv) -> None:
    run(
        [
            env.argocd,
            "login",
            env.argocd_server,
            "--plaintext",
            "--username",
            "admin",
            "--password",
            env.argocd_admin_password,
            "--config",
            env.argocd_config,
        ],
        env=argocd_env(Path(env.kubeconfig), "argocd"),
    )


# The service refuses to start without its API token (docs/environments.md, "The API token"). On
# a real cluster a secrets operator makes this Secret; in the sandbox, `up` plays that operator,
# one random token per environment, before Argo CD deploys anything.
API_TOKEN_SECRET_NAME = "elpv-classifier-api-token"  # noqa: S105 (a name, not a secret)
ENV_NAMESPACES = ("elpv-staging", "elpv-prod")


def create_api_token_secrets(kubeconfig: Path) -> None:
    for namespace in ENV_NAMESPACES:
        objects = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": API_TOKEN_SECRET_NAME, "namespace": namespace},
                "type": "Opaque",
                "stringData": {"token": secrets.token_urlsafe(32)},
            },
        ]
        for obj in objects:
            kubectl(kubeconfig, "apply", "-f", "-", input_text=json.dumps(obj))


def bootstrap_applications(kubeconfig: Path, seed: Path) -> None:
    """`kubectl apply -k argocd/` of the seeded origin: the one-time bootstrap of the docs."""
    rendered = run([TOOLS / "bin" / "kustomize", "build", seed / "argocd"]).stdout
    kubectl(kubeconfig, "apply", "-f", "-", input_text=rendered)


# --- live mode: one real node (containerd + runc + CNI bridge + kubelet + kube-proxy) ---------
#
# Everything the node writes goes under STATE, except what the components hard-code: containerd's
# shim sockets (/run/containerd/s), the CNI result cache (/var/lib/cni), the kubelet's log
# symlinks (/var/log/containers), the cgroups (/sys/fs/cgroup/*/elpv-sandbox), iptables chains
# (KUBE-*, CNI-*) and a few sysctls. `up` records what exists before it starts (HOST_BEFORE) and
# `down` removes exactly what is new, so the host is left as it was (tests/e2e/test_live_node.py
# checks it).

NODE_NAME = "elpv-node"
BRIDGE = "elpv-br0"  # created by `up`; the CNI bridge plugin attaches the pods' veths to it
POD_SUBNET = "10.244.0.0/24"
NODE_IP = "10.244.0.1"  # the bridge's address: the node's InternalIP and the pods' gateway
CGROUP_PARENT = "elpv-sandbox"  # kubelet cgroupRoot: every pod cgroup lives below it
REGISTRY = os.environ.get("ELPV_REGISTRY_ADDR", "127.0.0.1:5000")
HOST_BEFORE = RUN / "host-before.json"
# Host paths a node component writes to although its state is elsewhere (see above).
HOST_PATHS = (
    "/run/containerd",
    "/run/containerd/s",
    "/run/netns",
    "/run/nri",
    "/var/lib/cni",
    "/var/lib/cni/results",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/log/containers",
    "/var/log/pods",
    "/etc/cni",
    "/etc/kubernetes",
    "/opt/cni",
    "/usr/libexec/kubernetes",
)
# Kernel settings the kubelet (protectKernelDefaults: false), the bridge plugin (isGateway turns
# on forwarding) and kube-proxy may change; `down` puts back what it found.
SYSCTLS = (
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
)
CHAIN_PREFIXES = ("KUBE-", "CNI-")
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def node_dir(*parts: str) -> Path:
    return STATE.joinpath("node", *parts)


def containerd_socket() -> Path:
    return node_dir("containerd", "containerd.sock")


def host_snapshot() -> dict[str, Any]:
    """What exists on the host outside STATE that a node could leave behind."""
    paths: dict[str, list[str] | None] = {}
    for path in HOST_PATHS:
        p = Path(path)
        paths[path] = sorted(os.listdir(p)) if p.is_dir() else None
    links = sorted(
        line.split(":", 2)[1].strip().split("@")[0]
        for line in run(["ip", "-o", "link", "show"]).stdout.splitlines()
        if line.count(":") >= 2
    )
    chains: dict[str, list[str]] = {}
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in IPTABLES_TABLES:
            out = run([tool, "-t", table, "-S"], check=False).stdout
            chains[f"{tool}/{table}"] = sorted(out.splitlines())
    sysctls = {}
    for key in SYSCTLS:
        with contextlib.suppress(OSError):
            sysctls[key] = (Path("/proc/sys") / key).read_text().strip()
    cgroups = sorted(
        str(d.relative_to(CGROUP_ROOT))
        for d in CGROUP_ROOT.glob(f"*/{CGROUP_PARENT}")
        if d.is_dir()
    )
    mounts = sorted(
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if not line.split()[4].startswith(str(STATE))
    )
    return {
        "paths": paths,
        "links": links,
        "iptables": chains,
        "sysctls": sysctls,
        "cgroups": cgroups,
        "mounts": mounts,
    }


def pause_image() -> str:
    """Kubernetes' own pause (build/pause/linux/pause.c of the pinned module), built and pushed.

    The pod sandbox ("infra") container of every pod, compiled by `sandbox/tools/build.sh pause`,
    packed as a one-layer OCI image with fixed timestamps (so the digest only changes with the
    source) and pushed to the local registry through its HTTP API. Returns the image reference.
    """
    version = read_versions()["K8S_VERSION"]
    ref = f"{REGISTRY}/elpv-sandbox/pause:{version}"
    out = binary("pause")
    push_single_binary_image(ref, out, "/pause")
    return ref


def single_binary_image(binary_path: Path, target: str) -> tuple[bytes, bytes, bytes]:
    """(config, gzipped layer, manifest) of an OCI image holding one executable, reproducibly."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(target.lstrip("/"))
        data = binary_path.read_bytes()
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        tar.addfile(info, io.BytesIO(data))
    layer_tar = raw.getvalue()
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": [target], "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer_tar)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256_digest(layer),
                    "size": len(layer),
                }
            ],
        },
        sort_keys=True,
    ).encode()
    return config, layer, manifest


def sha256_digest(blob: bytes) -> str:
    return f"sha256:{hashlib.sha256(blob).hexdigest()}"


def oci_archive(ref: str, binary_path: Path, target: str, out: Path) -> Path:
    """The same image as an OCI archive for `ctr images import` (no registry needed)."""
    config, layer, manifest = single_binary_image(binary_path, target)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha256_digest(manifest),
                    "size": len(manifest),
                    "annotations": {"io.containerd.image.name": ref},
                }
            ],
        }
    ).encode()
    entries = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
    entries += [(f"blobs/sha256/{sha256_digest(b)[7:]}", b) for b in (config, layer, manifest)]
    with tarfile.open(out, "w") as tar:
        for name, blob in entries:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return out


def push_single_binary_image(ref: str, binary_path: Path, target: str) -> str:
    """Push an OCI image holding one executable (its entrypoint) to a plain-HTTP registry."""
    registry, _, rest = ref.partition("/")
    name, _, tag = rest.rpartition(":")
    config, layer, manifest = single_binary_image(binary_path, target)
    base = f"http://{registry}/v2/{name}"

    def put_blob(blob: bytes) -> None:
        digest = sha256_digest(blob)
        try:
            registry_call(f"{base}/blobs/{digest}", "HEAD")
            return
        except urllib.error.HTTPError as err:
            if err.code != 404:
                raise
        location = registry_call(f"{base}/blobs/uploads/", "POST", b"")
        if location.startswith("/"):
            location = f"http://{registry}{location}"
        sep = "&" if "?" in location else "?"
        registry_call(f"{location}{sep}digest={digest}", "PUT", blob, "application/octet-stream")

    try:
        put_blob(config)
        put_blob(layer)
        registry_call(
            f"{base}/manifests/{tag}", "PUT", manifest, "application/vnd.oci.image.manifest.v1+json"
        )
    except (urllib.error.URLError, OSError) as err:
        raise SandboxError(
            f"pushing {ref} to the registry at {registry} failed ({err}): is it up? "
            "(`make services-up`, or run through `docker/services.sh run --`)"
        ) from err
    return sha256_digest(manifest)


def registry_call(
    url: str, method: str, data: bytes | None = None, content_type: str | None = None
) -> str:
    """One request to the plain-HTTP local registry; returns the Location header (if any)."""
    if not url.startswith("http://"):
        raise SandboxError(f"not a registry URL: {url}")
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(url, method=method, data=data, headers=headers)  # noqa: S310 (http:// checked above)
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 (http:// checked above)
        location: str = resp.headers.get("Location", "")
        return location


def write_node_configs(kubeconfig: Path, pause: str) -> dict[str, Path]:
    """containerd, CNI, kubelet and kube-proxy configuration files, all under STATE/node."""
    pki = STATE / "kwok" / "clusters" / CLUSTER_NAME / "pki"
    for sub in ("containerd", "cni/net.d", "cni/ipam", "kubelet", "kubelet-logs", "runc"):
        node_dir(*sub.split("/")).mkdir(parents=True, exist_ok=True)
    certs = node_dir("containerd", "certs.d", REGISTRY)
    certs.mkdir(parents=True, exist_ok=True)
    (certs / "hosts.toml").write_text(
        f'server = "http://{REGISTRY}"\n\n'
        f'[host."http://{REGISTRY}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    containerd_toml = node_dir("containerd", "config.toml")
    containerd_toml.write_text(
        f"""version = 4
root = "{node_dir("containerd", "root")}"
state = "{node_dir("containerd", "state")}"
# The default imports /etc/containerd/conf.d/*.toml: the sandbox reads nothing of the host's.
imports = []
# NRI would listen on /var/run/nri; the other snapshotters are not needed here.
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs"]

[plugins.'io.containerd.server.v1.grpc']
  address = "{containerd_socket()}"

[plugins.'io.containerd.server.v1.ttrpc']
  address = "{containerd_socket()}.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{pause}"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{node_dir("containerd", "certs.d")}"

[plugins.'io.containerd.internal.v1.opt']
  path = "{node_dir("containerd", "opt")}"

[plugins.'io.containerd.image-verifier.v1.bindir']
  bin_dir = "{node_dir("containerd", "image-verifier")}"

[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  # This machine withholds CAP_SYS_RESOURCE even from root, so the kubelet's negative
  # oom_score_adj for pause (-998) and Guaranteed pods fails in runc ("failed to update
  # /proc/self/oom_score_adj: Permission denied"); clamp it to containerd's own (0).
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{binary("runc")}"
        Root = "{node_dir("runc")}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{node_dir("cni", "net.d")}"
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""
    )
    node_dir("cni", "net.d", "10-elpv-sandbox.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "elpv-sandbox",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": True,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                            # Services (the API server's `kubernetes` one too) via the
                            # bridge, where kube-proxy's rules are; no default route.
                            "routes": [{"dst": live_addons().SERVICE_CIDR}],
                            "dataDir": str(node_dir("cni", "ipam")),
                        },
                    }
                ],
            },
            indent=2,
        )
    )
    kubelet_yaml = node_dir("kubelet", "config.yaml")
    kubelet_yaml.write_text(
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "address": NODE_IP,
                "port": 10250,
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": free_port(),
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": True},
                    "x509": {"clientCAFile": str(pki / "ca.crt")},
                },
                "authorization": {"mode": "Webhook"},
                # This machine mounts cgroup v1 only; kubelet 1.35+ refuses it unless told.
                "failCgroupV1": False,
                "cgroupDriver": "cgroupfs",
                "cgroupRoot": f"/{CGROUP_PARENT}",
                "failSwapOn": False,
                "containerRuntimeEndpoint": f"unix://{containerd_socket()}",
                "podLogsDir": str(node_dir("kubelet-logs")),
                "volumePluginDir": str(node_dir("kubelet", "volume-plugins")),
                "serializeImagePulls": False,
                "maxPods": 30,
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                # A shared disk of a test machine: evict only when it is really full.
                "evictionHard": {
                    "memory.available": "100Mi",
                    "nodefs.available": "1%",
                    "imagefs.available": "1%",
                    "nodefs.inodesFree": "1%",
                },
                "resolvConf": "/etc/resolv.conf",
                "nodeStatusUpdateFrequency": "4s",
                "syncFrequency": "10s",
            },
            indent=2,
        )
    )
    proxy_yaml = node_dir("kube-proxy.yaml")
    proxy_yaml.write_text(
        json.dumps(
            {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "clientConnection": {"kubeconfig": str(kubeconfig)},
                "mode": "iptables",
                "hostnameOverride": NODE_NAME,
                "clusterCIDR": POD_SUBNET,
                "healthzBindAddress": f"127.0.0.1:{free_port()}",
                "metricsBindAddress": f"127.0.0.1:{free_port()}",
                # NodePorts only on the bridge address, never on the host's interfaces.
                "nodePortAddresses": [f"{NODE_IP}/32"],
                # Leave the host's conntrack table sizes and timeouts alone.
                "conntrack": {
                    "maxPerCore": 0,
                    "min": 0,
                    "tcpEstablishedTimeout": "0s",
                    "tcpCloseWaitTimeout": "0s",
                },
                "iptables": {"localhostNodePorts": False},
            },
            indent=2,
        )
    )
    return {"containerd": containerd_toml, "kubelet": kubelet_yaml, "kube-proxy": proxy_yaml}


def node_env() -> dict[str, str]:
    env = dict(os.environ)
    # containerd finds its shim (containerd-shim-runc-v2) on PATH.
    env["PATH"] = f"{SANDBOX_BIN}:/usr/sbin:/sbin:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def ctr(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(
        [binary("ctr"), "--address", containerd_socket(), "--namespace", "k8s.io", *args],
        check=check,
    )


def start_node(kubeconfig: Path) -> None:
    """Bridge, containerd, kubelet, kube-proxy; wait until the node is Ready."""
    if os.geteuid() != 0:
        raise SandboxError("live mode runs a kubelet and containerd: it needs root")
    for tool in ("ip", "iptables", "umount"):
        if shutil.which(tool) is None:
            raise SandboxError(f"live mode needs `{tool}` on PATH")
    if not Path("/usr/lib/cni/bridge").exists():
        raise SandboxError(
            "the CNI plugins are missing: `apt-get install containernetworking-plugins`"
        )
    log("live node: pause image -> local registry")
    pause = pause_image()
    configs = write_node_configs(kubeconfig, pause)
    # The bridge exists before the first pod so that the kubelet can serve on its address.
    run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    env = node_env()
    log(f"live node: containerd {read_versions()['CONTAINERD_VERSION']} + runc")
    start_process("containerd", [binary("containerd"), "--config", configs["containerd"]], env)
    wait_for("containerd", containerd_socket().exists, 60, "containerd")
    create_cgroup_root()
    log(f"live node: kubelet + kube-proxy ({NODE_NAME}, {NODE_IP})")
    start_process(
        "kubelet",
        [
            binary("kubelet"),
            "--config",
            configs["kubelet"],
            "--kubeconfig",
            kubeconfig,
            "--root-dir",
            node_dir("kubelet", "root"),
            "--cert-dir",
            node_dir("kubelet", "pki"),
            "--hostname-override",
            NODE_NAME,
            "--node-ip",
            NODE_IP,
            "--node-labels",
            "topology.kubernetes.io/zone=sandbox",
            "--v",
            "1",
        ],
        env,
    )
    start_process("kube-proxy", [binary("kube-proxy"), "--config", configs["kube-proxy"]], env)

    def ready() -> bool:
        out = run(
            [
                binary("kubectl"),
                "--kubeconfig",
                kubeconfig,
                "get",
                "node",
                NODE_NAME,
                "-o",
                'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            ],
            check=False,
        ).stdout
        return out.strip() == "True"

    wait_for(f"node {NODE_NAME}", ready, 120, "kubelet")


def create_cgroup_root() -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy before it starts (cgroup v1)."""
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        if not (hierarchy / "cgroup.procs").exists():
            continue
        parent = hierarchy / CGROUP_PARENT
        parent.mkdir(exist_ok=True)
        # A new v1 cpuset has no CPUs and no memory nodes: inherit the root's.
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / name).exists():
                (parent / name).write_text((hierarchy / name).read_text())


def stop_node() -> None:
    """Kubelet first (so nothing restarts), then every container, then containerd and the rest."""
    for name in ("kubelet", "kube-proxy"):
        stop_process(name)
    socket_path = containerd_socket()
    if socket_path.exists() and (RUN / "containerd.pid").exists():
        tasks = ctr("tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 15
        for task in tasks:
            while ctr("tasks", "delete", task, check=False).returncode != 0:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
    stop_process("containerd")
    # Shims re-parent themselves to init (own session): they are found by our socket's path.
    kill_matching(str(socket_path))
    kill_cgroup_members()


def kill_matching(needle: str) -> None:
    """SIGKILL every process whose command line contains `needle` (a path inside STATE)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmdline and int(proc.name) != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(proc.name), signal.SIGKILL)


def kill_cgroup_members() -> None:
    """SIGKILL anything still in a pod cgroup, then remove the cgroups, deepest first."""
    for controller in sorted(CGROUP_ROOT.glob(f"*/{CGROUP_PARENT}")):
        for procs in controller.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10
    for controller in sorted(CGROUP_ROOT.glob(f"*/{CGROUP_PARENT}")):
        dirs = sorted(
            (d for d in controller.rglob("*") if d.is_dir()),
            key=lambda d: len(d.parts),
            reverse=True,
        )
        for d in [*dirs, controller]:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        log(f"cgroup {d} still busy")
                        break
                    time.sleep(0.2)


def unmount_state() -> None:
    """Lazily unmount everything mounted below STATE (pod volumes, rootfs, netns), deepest first."""
    prefix = str(STATE)
    for _ in range(5):
        mounts = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4] == prefix or line.split()[4].startswith(prefix + "/")
        ]
        if not mounts:
            return
        for mount in sorted(set(mounts), key=len, reverse=True):
            run(["umount", "-l", mount], check=False)


def restore_host(before: dict[str, Any]) -> None:
    """Remove what the node added outside STATE (HOST_BEFORE has what was there before)."""
    run(["ip", "link", "delete", BRIDGE], check=False)
    paths = before["paths"]
    in_use = Path("/proc/net/unix").read_text()
    # Deepest first: /run/containerd/s before /run/containerd.
    for path in sorted(HOST_PATHS, key=len, reverse=True):
        p = Path(path)
        if not p.is_dir():
            continue
        old = paths.get(path)
        keep = set(old) if isinstance(old, list) else set()
        for entry in p.iterdir():
            if entry.name in keep or str(entry) in HOST_PATHS:
                continue
            if entry.is_socket() and str(entry) in in_use:
                continue  # someone else's live socket (another containerd's shim)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
        if old is None:
            with contextlib.suppress(OSError):
                p.rmdir()
    for key, rules in before["iptables"].items():
        tool, table = key.split("/")
        restore_iptables(tool, table, set(rules))
    for key, value in before["sysctls"].items():
        path = Path("/proc/sys") / key
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(f"{value}\n")


def restore_iptables(tool: str, table: str, before: set[str]) -> None:
    """Delete the KUBE-*/CNI-* chains that were not there before, and the rules jumping to them.

    Only those: a rule someone else added meanwhile (Docker's, another sandbox's) stays.
    """
    lines = run([tool, "-t", table, "-S"], check=False).stdout.splitlines()
    new_rules = [
        line
        for line in lines
        if line.startswith("-A ")
        and line not in before
        and any(f"{jump} {prefix}" in line for jump in ("-j", "-g") for prefix in CHAIN_PREFIXES)
    ]
    new_chains = [
        line.split()[1]
        for line in lines
        if line.startswith("-N ")
        and line not in before
        and line.split()[1].startswith(CHAIN_PREFIXES)
    ]
    for rule in new_rules:
        chain = rule.split()[1]
        if chain in new_chains:
            continue  # flushed below
        # -S quotes comments ("kubernetes service portals"): split like a shell would.
        run([tool, "-t", table, "-D", *shlex.split(rule)[1:]], check=False)
    for chain in new_chains:
        run([tool, "-t", table, "-F", chain], check=False)
    for chain in new_chains:
        run([tool, "-t", table, "-X", chain], check=False)


def host_leftovers(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two host snapshots, in words (empty: the host is as it was)."""
    problems = []
    for key in ("links", "cgroups", "mounts"):
        extra = sorted(set(after[key]) - set(before[key]))
        if extra:
            problems.append(f"{key} left: {extra}")
    for section in ("paths", "iptables", "sysctls"):
        b, a = before[section], after[section]
        for name in sorted(set(a) | set(b)):
            old, new = b.get(name), a.get(name)
            if isinstance(old, list) and isinstance(new, list):
                extra = sorted(set(new) - set(old))
                if extra:
                    problems.append(f"{section} {name}: new {extra}")
            elif old != new:
                problems.append(f"{section} {name}: {old!r} -> {new!r}")
    return problems


def seed_images(clone: Path, image: str) -> None:
    """Point both overlays at `image` (registry/name:tag@digest), as `gitops bump` would."""
    kustomize = TOOLS / "bin" / "kustomize"
    for env_name in ("staging", "prod"):
        run(
            [kustomize, "edit", "set", "image", f"elpv-classifier={image}"],
            cwd=clone / "overlays" / env_name,
        )


def image_from_json(path: Path) -> str:
    """registry/name:tag@digest from docker/push.sh's JSON ({image, tag, digest})."""
    if not path.exists():
        raise SandboxError(
            f"{path} is missing: live mode runs the serving image; push one first "
            "(`make push IMAGE_JSON=...` or `make e2e-live`, which pushes the tiny test model's)"
        )
    data = json.loads(path.read_text())
    return f"{data['image']}:{data['tag']}@{data['digest']}"


def start_ingress(kubeconfig: Path, seed: Path) -> str:
    """Live mode's Ingress controller (sandbox/ingress.py); returns its HTTPS URL."""
    import ingress  # beside this script (on sys.path when run as one); live mode only

    log(f"live node: ingress controller traefik {read_versions()['TRAEFIK_VERSION']}")
    try:
        return ingress.start(
            kubeconfig=kubeconfig,
            seed=seed,
            state=STATE,
            traefik=binary("traefik"),
            kustomize=TOOLS / "bin" / "kustomize",
            kubectl=binary("kubectl"),
            start_process=start_process,
        )
    except ingress.IngressError as err:
        raise SandboxError(str(err)) from err


def start_admission(kubeconfig: Path) -> Any:
    """Kyverno against the API server, a key pair, the sandbox policy (sandbox/admission.py)."""
    admission = admission_module()
    log(f"admission: kyverno {read_versions()['KYVERNO_VERSION']} (webhooks on 127.0.0.1)")
    try:
        return admission.start(
            kubeconfig=kubeconfig,
            root=ROOT,
            state=STATE,
            kyverno=binary("kyverno"),
            cosign=binary("cosign"),
            kustomize=TOOLS / "bin" / "kustomize",
            kubectl=binary("kubectl"),
            start_process=start_process,
        )
    except admission.AdmissionError as err:
        raise SandboxError(str(err)) from err


def wait_admission(kubeconfig: Path, started: Any) -> float:
    """Until Kyverno has registered its webhooks; the seconds since it was started."""
    admission = admission_module()
    pid = int((RUN / f"{admission.PROCESS}.pid").read_text())
    try:
        seconds: float = admission.wait_ready(
            started,
            kubeconfig=kubeconfig,
            kubectl=binary("kubectl"),
            log_file=LOGS / f"{admission.PROCESS}.log",
            alive=lambda: pid_alive(pid),
        )
    except admission.AdmissionError as err:
        raise SandboxError(str(err)) from err
    log(f"admission: kyverno ready {seconds:.1f} s after its start")
    return seconds


# --- up / down -------------------------------------------------------------------------------


def up(live: bool = False, image_json: Path | None = None, admission: bool = False) -> SandboxEnv:
    if ENV_FILE.exists():
        raise SandboxError(f"a sandbox is already up ({ENV_FILE}): `make sandbox-down` first")
    started = time.monotonic()
    image = image_from_json(image_json or DEFAULT_IMAGE_JSON) if live else ""
    if STATE.exists():
        shutil.rmtree(STATE)
    STATE.mkdir(parents=True)
    kubeconfig = STATE / "kubeconfig"
    try:
        if live:
            RUN.mkdir(parents=True, exist_ok=True)
            HOST_BEFORE.write_text(json.dumps(host_snapshot(), indent=1))
            live_addons().open_apiserver_port(RUN)
        start_control_plane(kubeconfig, live)
        if live:
            start_node(kubeconfig)
            import train_volume  # sandbox/train_volume.py: the training Job's PersistentVolumes

            train_volume.create(binary("kubectl"), kubeconfig, NODE_NAME, STATE)
        # Kyverno starts now and gets ready while Argo CD starts (waited for below).
        kyverno = start_admission(kubeconfig) if admission else None
        redis_port = start_redis()
        origin_url, origin_path = start_origin()
        seed = seed_origin(origin_url, image)
        password = secrets.token_urlsafe(18)
        install_argocd(kubeconfig, password, ingress_health=not live)
        server_port, _ = start_argocd(kubeconfig, redis_port)
        env = SandboxEnv(
            kubeconfig=str(kubeconfig),
            kubectl=str(binary("kubectl")),
            argocd=str(binary("argocd")),
            argocd_server=f"127.0.0.1:{server_port}",
            argocd_config=str(STATE / "argocd" / "cli-config"),
            argocd_admin_password=password,
            origin_url=origin_url,
            origin_path=str(origin_path),
            redis_port=redis_port,
            bin_dir=str(SANDBOX_BIN),
            state_dir=str(STATE),
            started_seconds=0.0,
            mode="live" if live else "kwok",
            image=image,
        )
        argocd_login(env)
        create_api_token_secrets(kubeconfig)
        ingress_url = start_ingress(kubeconfig, seed) if live else ""
        bootstrap_applications(kubeconfig, seed)
        extra: dict[str, Any] = {}
        if kyverno is not None:
            extra = {
                "cosign": str(binary("cosign")),
                "signing_key": str(kyverno.signing_key),
                "admission_policy": str(kyverno.policy),
                "kyverno_ready_seconds": round(wait_admission(kubeconfig, kyverno), 1),
            }
        env = SandboxEnv(
            **{
                **asdict(env),
                **extra,
                "started_seconds": round(time.monotonic() - started, 1),
                "ingress_url": ingress_url,
            }
        )
        ENV_FILE.write_text(json.dumps(asdict(env), indent=2))
    except BaseException:
        log(f"start failed: stopping what did start (logs in {LOGS})")
        down(keep_logs=True)
        raise
    log(
        f"up in {env.started_seconds:.0f} s: API server via {kubeconfig}, Argo CD at "
        f"http://{env.argocd_server}, origin {origin_url}; settings in {ENV_FILE}"
    )
    return env


ARGOCD_PROCESSES = ("argocd-server", "argocd-application-controller", "argocd-repo-server")


def down(keep_logs: bool = False) -> None:
    # Kyverno before the control plane: it would otherwise retry the API server until killed.
    for name in (*ARGOCD_PROCESSES, "kyverno", "git-daemon", "redis"):
        stop_process(name)
    remove_firewall_rules()
    live = HOST_BEFORE.exists()
    if live:
        stop_node()
    stop_control_plane()
    live_addons().remove_firewall(RUN)
    leftovers = sorted(p.stem for p in RUN.glob("*.pid")) if RUN.exists() else []
    for name in leftovers:
        stop_process(name)
    if live:
        before = json.loads(HOST_BEFORE.read_text())
        unmount_state()
        restore_host(before)
    if STATE.exists():
        if keep_logs and LOGS.exists():
            kept = Path(tempfile.mkdtemp(prefix="elpv-sandbox-logs-"))
            shutil.copytree(LOGS, kept, dirs_exist_ok=True)
            log(f"logs kept in {kept}")
        shutil.rmtree(STATE, ignore_errors=True)
    log("down: no sandbox process left")


def status() -> int:
    if not ENV_FILE.exists():
        print("sandbox: down")
        return 1
    env = json.loads(ENV_FILE.read_text())
    print(json.dumps(env, indent=2))
    for pid_file in sorted(RUN.glob("*.pid")):
        pid = int(pid_file.read_text())
        print(f"{pid_file.stem:32} pid {pid:>7} {'running' if pid_alive(pid) else 'DEAD'}")
    return 0


@contextlib.contextmanager
def running() -> Iterator[SandboxEnv]:
    """Up for the duration of a `with` block (bench/sandbox.py)."""
    env = up()
    try:
        yield env
    finally:
        down()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--live",
        action="store_true",
        help="one real node (containerd, runc, kubelet, kube-proxy) instead of simulated ones",
    )
    parser.add_argument(
        "--image-json",
        type=Path,
        default=DEFAULT_IMAGE_JSON,
        help="live mode: the pushed serving image both overlays are seeded with "
        "(docker/push.sh's JSON; default %(default)s)",
    )
    parser.add_argument(
        "--admission",
        action="store_true",
        help="also run Kyverno's admission controller and make a cosign key pair "
        "(sandbox/admission.py; needs `make sandbox-admission-tools`)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(live=args.live, image_json=args.image_json, admission=args.admission)
        elif args.command == "down":
            down()
        else:
            return status()
    except SandboxError as err:
        print(f"sandbox: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
