#!/usr/bin/env bash
# The training image's entrypoint: one `dvc repro` of the train stage in a workspace on the
# training volume (a PersistentVolumeClaim mounted at $TRAIN_VOLUME), with the DVC cache on the
# same volume, so data and stage outputs survive the pod and the next run reuses them.
#
#   $TRAIN_VOLUME/dvc-cache/          DVC cache shared by every run (dvc pull / repro fill it)
#   $TRAIN_VOLUME/runs/$TRAIN_RUN/    the run's workspace: the image's snapshot of the commit
#                                     (dvc.yaml, dvc.lock, params.yaml, data.dvc, src/) plus
#                                     what the stages write (data/prepared, models, metrics)
#
# env: TRAIN_RUN (the Job's name, from the pod's job-name label), TRAIN_VOLUME (/data),
#      TRAIN_TARGET (DVC target, default `train`: prepare and train, as `dvc repro train`),
#      TRAIN_PARAMS_OVERRIDE (a YAML file merged into params.yaml; default
#      /etc/elpv-train/params-override.yaml, used if present), DVC_REMOTE_URL (a DVC remote
#      URL or path that replaces the commit's default remote, e.g. a shared claim's mount),
#      DVC_PUSH (true: `dvc push --run-cache` to the default remote afterwards, then print
#      the hand-back: one `ELPV_HANDBACK <path> <base64>` line for dvc.lock, which names the
#      pushed model by its hash, and for metrics/train.json, which is kept in git and not in
#      the remote; k8s-train/run-job.sh saves them).
# Exit status: dvc's. The last line on stdout is metrics/train.json, so `kubectl logs` shows it.
set -euo pipefail

snapshot="${WORKSPACE_SNAPSHOT:-/opt/workspace}"
volume="${TRAIN_VOLUME:-/data}"
run="${TRAIN_RUN:?TRAIN_RUN is empty: set it to the Job name (the manifests take it from the pod label job-name)}"
target="${TRAIN_TARGET:-train}"
override="${TRAIN_PARAMS_OVERRIDE:-/etc/elpv-train/params-override.yaml}"

log() { echo ">> train-job: $*" >&2; }

if [[ ! -d "$volume" || ! -w "$volume" ]]; then
  log "the training volume $volume is missing or not writable by uid $(id -u):" \
    "mount the PersistentVolumeClaim there (k8s-train/base/job.yaml) with fsGroup $(id -g)"
  exit 2
fi
case "$run" in
  */* | . | .. | "") log "TRAIN_RUN=$run is not a plain name"; exit 2 ;;
esac

work="$volume/runs/$run"
# A retried pod starts over from the commit's snapshot; the DVC cache keeps what earlier
# attempts finished, so a rerun of an unchanged stage is a checkout, not a training.
rm -rf "$work"
mkdir -p "$work" "$volume/dvc-cache"
cp -R "$snapshot/." "$work/"
cd "$work"
export PYTHONPATH="$work/src"
# A writable home for DVC, Matplotlib and Keras on a read-only root filesystem.
export HOME="${TMPDIR:-/tmp}/home" MPLCONFIGDIR="${TMPDIR:-/tmp}/matplotlib"
mkdir -p "$HOME" "$MPLCONFIGDIR"

# No git in the workspace: DVC runs without SCM; cache and site cache on the volume.
dvc config --local core.no_scm true
dvc config --local core.site_cache_dir "$volume/dvc-site-cache"
dvc config --local cache.dir "$volume/dvc-cache"
if [[ -n "${DVC_REMOTE_URL:-}" ]]; then
  # The commit's remote is a path on the machine that committed it: the pod's is set here.
  dvc remote add --local --force --default cluster "$DVC_REMOTE_URL"
fi

if [[ -f "$override" ]]; then
  log "merging $override into params.yaml"
  python - "$override" <<'PY'
import sys
from pathlib import Path

import yaml


def merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
extra = yaml.safe_load(Path(sys.argv[1]).read_text(encoding="utf-8")) or {}
if not isinstance(extra, dict):
    sys.exit(f"train-job: {sys.argv[1]} must be a YAML mapping like params.yaml, got {type(extra).__name__}")
Path("params.yaml").write_text(yaml.safe_dump(merge(params, extra), sort_keys=False), encoding="utf-8")
PY
fi

data_dir="$(python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["base"]["data_dir"])')"
if [[ "$data_dir" == data/raw ]]; then
  # The dataset data.dvc pins: from the cache on the volume, else from the DVC remote.
  if ! dvc checkout -q data.dvc 2>/dev/null; then
    log "data/raw is not in the volume's cache: dvc pull data.dvc"
    dvc pull -q data.dvc
  fi
elif [[ ! -f "$data_dir/labels.csv" ]]; then
  log "base.data_dir=$data_dir has no labels.csv: put an ELPV-layout dataset there" \
    "(labels.csv + images) or leave data_dir at data/raw (data.dvc)"
  exit 2
fi

log "dvc repro $target in $work (cache $volume/dvc-cache)"
started=$(date +%s)
dvc repro "$target"
log "dvc repro $target took $(($(date +%s) - started)) s"
if [[ "${DVC_PUSH:-false}" == true ]]; then
  log "dvc push --run-cache $target"
  dvc push --run-cache "$target"
  # Only after a complete push: a lock in the log means its outputs are in the remote.
  # base64: the files' exact bytes, one log line each.
  for file in dvc.lock metrics/train.json; do
    echo "ELPV_HANDBACK $file $(base64 -w0 "$file")"
  done
fi
cat metrics/train.json
echo
