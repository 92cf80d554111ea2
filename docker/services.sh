#!/usr/bin/env bash
# The local services the image targets need: a Docker Engine and a registry on 127.0.0.1:5000.
#
#   services.sh up            install what is missing, start what is not running (idempotent)
#   services.sh down          stop what *this project* started (a dockerd or registry that was
#                             already running is left alone)
#   services.sh status        say what runs and who started it
#   services.sh run -- CMD    start what is missing, run CMD, then stop only what this call
#                             started (trap), so a test run leaves no process behind
#
# State (pid files, logs) lives in $ELPV_RUN_DIR (default .tools/run): a pid file there is the
# proof that we started a service, and `down` stops nothing else.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${ELPV_RUN_DIR:-$ROOT/.tools/run}"
# The standard locations: a second clone (CI's) finds the engine and its image cache where a
# system-installed Docker would keep them.
DOCKER_SOCK="${ELPV_DOCKER_SOCK:-/var/run/docker.sock}"
DOCKER_DATA_ROOT="${ELPV_DOCKER_DATA_ROOT:-/var/lib/docker}"
REGISTRY_ADDR="${ELPV_REGISTRY_ADDR:-127.0.0.1:5000}"
REGISTRY_ROOT="${ELPV_REGISTRY_ROOT:-$ROOT/.tools/registry}"
# Debian's client matches Debian's dockerd (API 1.41); a newer client elsewhere on PATH
# negotiates down, but this one needs no negotiation.
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker || echo docker)}"

log() { echo ">> services: $*" >&2; }

as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
  # apt-get update once per call, only when something is missing.
  if [[ $apt_updated -eq 0 ]]; then
    log "apt-get update"
    as_root apt-get update -q >/dev/null
    apt_updated=1
  fi
  log "apt-get install $*"
  # With recommends: the combination checked on these machines (TOOLING.md "Containers").
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

docker_up() { "$DOCKER" -H "unix://$DOCKER_SOCK" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

registry_up() {
  python3 - "$REGISTRY_ADDR" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(f"http://{sys.argv[1]}/v2/", timeout=2)
PY
}

# Run "$@" as a daemon: its own session (it outlives this shell and make, and gets no terminal
# signals), and none of the descriptors its starter had open beyond 0-2. A daemon that inherits
# them holds them for as long as it runs: `flock /tmp/elpv-docker.lock make train-image` left
# dockerd, containerd and the registry holding the benchmark lock after make had exited.
detached() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd="${fd##*/}"
    if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
  exec setsid "$@"
}

start_docker() {
  if docker_up; then return 1; fi  # someone else's engine (or ours from an earlier call): use it
  if ! command -v dockerd >/dev/null; then apt_install docker.io; fi
  DOCKER="$(command -v /usr/bin/docker || command -v docker)"
  mkdir -p "$RUN_DIR"
  log "starting dockerd (data-root $DOCKER_DATA_ROOT, log $RUN_DIR/dockerd.log)"
  detached dockerd --data-root "$DOCKER_DATA_ROOT" --host "unix://$DOCKER_SOCK" \
    --pidfile "$RUN_DIR/dockerd.daemon.pid" >>"$RUN_DIR/dockerd.log" 2>&1 </dev/null &
  # Our own record of the pid (dockerd refuses to start if its --pidfile already exists).
  echo $! >"$RUN_DIR/dockerd.pid"
  for _ in $(seq 1 120); do
    if docker_up; then log "dockerd ready ($("$DOCKER" -H "unix://$DOCKER_SOCK" version --format '{{.Server.Version}}'))"; return 0; fi
    if ! alive "$RUN_DIR/dockerd.pid"; then
      log "dockerd exited during start; last log lines:"; tail -20 "$RUN_DIR/dockerd.log" >&2; exit 1
    fi
    sleep 0.5
  done
  log "dockerd did not answer on $DOCKER_SOCK within 60 s; see $RUN_DIR/dockerd.log"; exit 1
}

start_registry() {
  if registry_up; then return 1; fi
  if ! command -v docker-registry >/dev/null; then apt_install docker-registry; fi
  mkdir -p "$RUN_DIR" "$REGISTRY_ROOT"
  log "starting docker-registry on $REGISTRY_ADDR (root $REGISTRY_ROOT, log $RUN_DIR/registry.log)"
  REGISTRY_HTTP_ADDR="$REGISTRY_ADDR" REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="$REGISTRY_ROOT" \
    detached docker-registry serve "$ROOT/docker/registry.yml" >>"$RUN_DIR/registry.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/registry.pid"
  for _ in $(seq 1 40); do
    if registry_up; then log "registry ready on $REGISTRY_ADDR"; return 0; fi
    if ! alive "$RUN_DIR/registry.pid"; then
      log "registry exited during start; last log lines:"; tail -20 "$RUN_DIR/registry.log" >&2; exit 1
    fi
    sleep 0.25
  done
  log "registry did not answer on $REGISTRY_ADDR within 10 s; see $RUN_DIR/registry.log"; exit 1
}

stop_pidfile() {  # stop_pidfile NAME TIMEOUT_S: TERM, wait, then KILL; only a pid we recorded
  local name=$1 timeout=$2 pidfile="$RUN_DIR/$1.pid" pid
  if ! alive "$pidfile"; then rm -f "$pidfile"; return 0; fi
  pid="$(cat "$pidfile")"
  log "stopping $name (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 $((timeout * 4))); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    sleep 0.25
  done
  log "$name did not stop within ${timeout}s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

stop_docker() {
  if ! alive "$RUN_DIR/dockerd.pid"; then rm -f "$RUN_DIR/dockerd.pid"; return 0; fi
  # Containers left by an interrupted test would keep their shims alive after dockerd goes.
  local running
  running="$("$DOCKER" -H "unix://$DOCKER_SOCK" ps -q 2>/dev/null || true)"
  if [[ -n "$running" ]]; then
    log "stopping containers left running: $(echo "$running" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    "$DOCKER" -H "unix://$DOCKER_SOCK" stop -t 5 $running >/dev/null 2>&1 || true
  fi
  stop_pidfile dockerd 30
}

status() {
  if docker_up; then
    if alive "$RUN_DIR/dockerd.pid"; then echo "dockerd: running, started by this project (pid $(cat "$RUN_DIR/dockerd.pid"))"
    else echo "dockerd: running, not started by this project (left alone by services-down)"; fi
  else echo "dockerd: not running"; fi
  if registry_up; then
    if alive "$RUN_DIR/registry.pid"; then echo "registry: $REGISTRY_ADDR, started by this project (pid $(cat "$RUN_DIR/registry.pid"))"
    else echo "registry: $REGISTRY_ADDR, not started by this project (left alone by services-down)"; fi
  else echo "registry: not running"; fi
}

case "${1:-}" in
  up)
    start_docker || true
    start_registry || true
    ;;
  down)
    stop_pidfile registry 10
    stop_docker
    ;;
  status) status ;;
  run)
    shift
    [[ "${1:-}" == "--" ]] && shift
    [[ $# -gt 0 ]] || { echo "usage: $0 run -- COMMAND..." >&2; exit 2; }
    started=()
    if start_docker; then started+=(docker); fi
    if start_registry; then started+=(registry); fi
    cleanup() {
      local rc=$?
      for s in "${started[@]}"; do
        if [[ $s == registry ]]; then stop_pidfile registry 10; else stop_docker; fi
      done
      exit "$rc"
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    "$@"
    ;;
  *)
    echo "usage: $0 up | down | status | run -- COMMAND..." >&2
    exit 2
    ;;
esac
