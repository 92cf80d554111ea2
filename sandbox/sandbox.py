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
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

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


def log(message: str) -> None:
    print(f">> sandbox: {message}", flush=True)


class SandboxError(RuntimeError):
    """A step failed: the message says which, and where its log is."""


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


def kwokctl_config() -> Path:
    """kwokctl options as a config file: 127.0.0.1 everywhere, our binaries, nothing downloaded."""
    config = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": {
            "runtime": "binary",
            "bindAddress": "127.0.0.1",
            "kubeApiserverBinary": str(binary("kube-apiserver")),
            "kubeControllerManagerBinary": str(binary("kube-controller-manager")),
            "kubeSchedulerBinary": str(binary("kube-scheduler")),
            "kwokControllerBinary": str(binary("kwok")),
            "etcdBinary": str(binary("etcd")),
            "kubectlBinary": str(binary("kubectl")),
            "quietPull": True,
        },
    }
    path = STATE / "kwokctl.yaml"
    # JSON is YAML: kwokctl reads either.
    path.write_text(json.dumps(config, indent=2))
    return path


def start_control_plane(kubeconfig: Path) -> None:
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
            kwokctl_config(),
            "--kubeconfig",
            kubeconfig,
            "--wait",
            "120s",
        ],
        env=kwok_env(),
    )
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


def seed_origin(origin_url: str) -> Path:
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
    run(
        ["git", "commit", "--quiet", "-am", "sandbox: point Argo CD at the local origin"],
        cwd=clone,
        env=env,
    )
    run(["git", "push", "--quiet", origin_url, "HEAD:refs/heads/main"], cwd=clone, env=env)
    return clone


# --- Argo CD ---------------------------------------------------------------------------------

# Sandbox-only Argo CD settings: there is no ingress controller, so nothing ever fills an
# Ingress's status.loadBalancer and Argo CD would call it Progressing forever. The override
# (Argo CD's documented resource.customizations mechanism) says so instead of hiding it.
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
    return helpers


def kubectl(kubeconfig: Path, *args: str, input_text: str | None = None) -> str:
    return run([binary("kubectl"), "--kubeconfig", kubeconfig, *args], input_text=input_text).stdout


def install_argocd(kubeconfig: Path, password: str) -> None:
    """CRDs and the settings ConfigMaps/Secret that Argo CD reads from its namespace."""
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
                "resource.customizations.health.networking.k8s.io_Ingress": INGRESS_HEALTH_LUA,
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


def bootstrap_applications(kubeconfig: Path, seed: Path) -> None:
    """`kubectl apply -k argocd/` of the seeded origin: the one-time bootstrap of the docs."""
    rendered = run([TOOLS / "bin" / "kustomize", "build", seed / "argocd"]).stdout
    kubectl(kubeconfig, "apply", "-f", "-", input_text=rendered)


# --- up / down -------------------------------------------------------------------------------


def up() -> SandboxEnv:
    if ENV_FILE.exists():
        raise SandboxError(f"a sandbox is already up ({ENV_FILE}): `make sandbox-down` first")
    started = time.monotonic()
    if STATE.exists():
        shutil.rmtree(STATE)
    STATE.mkdir(parents=True)
    kubeconfig = STATE / "kubeconfig"
    try:
        start_control_plane(kubeconfig)
        redis_port = start_redis()
        origin_url, origin_path = start_origin()
        seed = seed_origin(origin_url)
        password = secrets.token_urlsafe(18)
        install_argocd(kubeconfig, password)
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
        )
        argocd_login(env)
        bootstrap_applications(kubeconfig, seed)
        env = SandboxEnv(**{**asdict(env), "started_seconds": round(time.monotonic() - started, 1)})
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
    for name in (*ARGOCD_PROCESSES, "git-daemon", "redis"):
        stop_process(name)
    remove_firewall_rules()
    stop_control_plane()
    leftovers = sorted(p.stem for p in RUN.glob("*.pid")) if RUN.exists() else []
    for name in leftovers:
        stop_process(name)
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
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up()
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
