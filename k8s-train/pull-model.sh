#!/usr/bin/env bash
# Fetch the model a training Job pushed to the DVC remote (`make train-pull`).
#
#   k8s-train/pull-model.sh HANDBACK_DIR [WORKSPACE]
#
# HANDBACK_DIR  what `make train-job` saved of the run (build/train-job): dvc.lock and
#               metrics/train.json
# WORKSPACE     the DVC project to put them in (default: this checkout)
# env: DVC (default dvc), TRAIN_REMOTE (the remote as this machine sees it, e.g. the share's
#      mount point; default: the workspace's default remote)
#
# Copies the two files into WORKSPACE, then `dvc pull` of the train stage's cached outputs (the
# model, its plots) by the hashes the lock names. The lock then records the cluster's run:
# commit it to deploy that model; `dvc status` says whether this checkout's data and params are
# the ones it was trained on (an overlay's params overrides make them differ).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
handback="${1:?usage: pull-model.sh HANDBACK_DIR [WORKSPACE]}"
lock="$handback/dvc.lock"
workspace="${2:-$ROOT}"
DVC="${DVC:-dvc}"

log() { echo ">> train-pull: $*" >&2; }

if [[ ! -s "$lock" ]]; then
  log "$lock is missing or empty: run \`make train-job\` with an overlay that pushes to a DVC" \
    "remote (k8s-train/components/shared-dvc-remote) first"
  exit 2
fi
if ! python3 - "$lock" <<'PY'; then
import sys

import yaml

try:
    lock = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
    outs = lock["stages"]["train"]["outs"]
    assert isinstance(outs, list) and all("md5" in o for o in outs)
except Exception as exc:  # any shape but a DVC lock with a train stage
    sys.exit(f">> train-pull: {sys.argv[1]} is not a dvc.lock with a train stage ({exc!r})")
PY
  exit 2
fi
if [[ ! -f "$workspace/dvc.yaml" ]]; then
  log "$workspace has no dvc.yaml: WORKSPACE must be a checkout of this repository"
  exit 2
fi

if [[ ! -s "$handback/metrics/train.json" ]]; then
  log "$handback/metrics/train.json is missing: the hand-back of \`make train-job\` is incomplete"
  exit 2
fi
mkdir -p "$workspace/metrics"
cp "$lock" "$workspace/dvc.lock"
cp "$handback/metrics/train.json" "$workspace/metrics/train.json"
cd "$workspace"
remote=()
if [[ -n "${TRAIN_REMOTE:-}" ]]; then
  "$DVC" remote add --local --force cluster "$TRAIN_REMOTE"
  remote=(--remote cluster)
fi
log "dvc pull train (${TRAIN_REMOTE:-the default remote})"
"$DVC" pull "${remote[@]}" train
log "dvc.lock now records the cluster's run; \`dvc status\` compares it with this checkout"
