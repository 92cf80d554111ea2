#!/usr/bin/env bash
# Run the train stage as a Kubernetes Job and wait for it (`make train-job`).
#
#   k8s-train/run-job.sh OVERLAY IMAGE [TIMEOUT_S]
#
# OVERLAY  a kustomization of k8s-train (k8s-train/base, k8s-train/overlays/gpu, ...)
# IMAGE    the training image, NAME:TAG@sha256:<digest> (what `make train-push` records)
# env: KUBECTL (default kubectl; KUBECONFIG picks the cluster), KUSTOMIZE (default kustomize),
#      KUBECONFIG_DATA (a kubeconfig's content, as CI passes a secret: written to a private
#      temporary file for this run only, and used instead of KUBECONFIG), TRAIN_HANDBACK_DIR
#      (where to save the run's dvc.lock and metrics/train.json when the Job pushed its outputs
#      to a DVC remote: what `make train-pull` uses; emptied first, so files there are this run's)
#
# Pins IMAGE in a temporary copy of k8s-train (the checkout is never edited), deletes the
# previous Job (one run at a time: the claim is ReadWriteOnce), applies, then waits for Complete
# or Failed and prints the pod's log. Exit 0: the run completed; 1: it failed or timed out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
overlay="${1:?usage: run-job.sh OVERLAY IMAGE [TIMEOUT_S]}"
image="${2:?usage: run-job.sh OVERLAY IMAGE [TIMEOUT_S]}"
timeout="${3:-7200}"
KUBECTL="${KUBECTL:-kubectl}"
KUSTOMIZE="${KUSTOMIZE:-kustomize}"
namespace=elpv-train
job=elpv-train

log() { echo ">> train-job: $*" >&2; }

if [[ ! "$image" =~ ^[^@[:space:]]+:[^@:/[:space:]]+@sha256:[0-9a-f]{64}$ ]]; then
  log "image '$image' is not NAME:TAG@sha256:<digest>; pass what \`make train-push\` wrote" \
    "(build/train-image.json) or the digest your registry reported"
  exit 2
fi
overlay_abs="$(cd "$overlay" 2>/dev/null && pwd)" || { log "$overlay: no such directory"; exit 2; }
case "$overlay_abs/" in
  "$ROOT/k8s-train/"*) ;;
  *) log "$overlay is not inside k8s-train/ (k8s-train/base or k8s-train/overlays/<name>)"; exit 2 ;;
esac

handback="${TRAIN_HANDBACK_DIR:-}"
# The files the Job hands back (docker/train-entrypoint.sh), and nothing else from its log.
handback_files=(dvc.lock metrics/train.json)
if [[ -n "$handback" ]]; then
  for file in "${handback_files[@]}"; do rm -f "$handback/$file"; done
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [[ -n "${KUBECONFIG_DATA:-}" ]]; then
  (umask 077 && printf '%s\n' "$KUBECONFIG_DATA" > "$work/kubeconfig")
  export KUBECONFIG="$work/kubeconfig"
fi
cp -R "$ROOT/k8s-train" "$work/k8s-train"
copy="$work/k8s-train/${overlay_abs#"$ROOT/k8s-train/"}"
(cd "$copy" && "$KUSTOMIZE" edit set image "elpv-train=$image")
"$KUSTOMIZE" build "$copy" > "$work/rendered.yaml"

if "$KUBECTL" get job "$job" -n "$namespace" >/dev/null 2>&1; then
  log "deleting the previous run's Job $namespace/$job"
  "$KUBECTL" delete job "$job" -n "$namespace" --cascade=foreground --wait=true --timeout=120s >&2
fi
log "applying $overlay with $image"
"$KUBECTL" apply -f "$work/rendered.yaml" >&2

started=$(date +%s)
state=""
while (($(date +%s) - started < timeout)); do
  state="$("$KUBECTL" get job "$job" -n "$namespace" \
    -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}' 2>/dev/null || true)"
  case " $state " in
    *" Complete "* | *" Failed "*) break ;;
  esac
  sleep 5
done
elapsed=$(($(date +%s) - started))
"$KUBECTL" logs "job/$job" -n "$namespace" > "$work/job.log" 2>&1 || true
# The hand-back lines (saved below) are long base64: the stage's own lines are what to read.
# (grep finds nothing in an empty log: not a reason to stop before the Job's state is reported)
{ grep -v '^ELPV_HANDBACK ' "$work/job.log" || true; } | tail -n 200
case " $state " in
  *" Complete "*)
    log "Job $namespace/$job completed in ${elapsed} s"
    if [[ -n "$handback" ]]; then
      saved=0
      for file in "${handback_files[@]}"; do
        data="$(awk -v f="$file" '$1 == "ELPV_HANDBACK" && $2 == f { print $3; exit }' "$work/job.log")"
        [[ -n "$data" ]] || continue
        mkdir -p "$(dirname "$handback/$file")"
        printf '%s' "$data" | base64 -d > "$handback/$file"
        saved=$((saved + 1))
      done
      if ((saved == ${#handback_files[@]})); then
        log "the run's ${handback_files[*]} -> $handback/;" \
          "\`make train-pull\` fetches its model from the DVC remote"
      else
        log "no model hand-back: the Job did not push to a DVC remote (add" \
          "k8s-train/components/shared-dvc-remote, or set DVC_PUSH and a remote); the outputs stay on the claim"
      fi
    fi
    exit 0
    ;;
  *" Failed "*)
    log "Job $namespace/$job failed after ${elapsed} s:"
    "$KUBECTL" get job "$job" -n "$namespace" \
      -o jsonpath='{range .status.conditions[*]}{.type}: {.reason} {.message}{"\n"}{end}' >&2 || true
    ;;
  *)
    log "Job $namespace/$job neither completed nor failed within ${timeout} s; its pods:"
    "$KUBECTL" describe pods -n "$namespace" -l "batch.kubernetes.io/job-name=$job" 2>&1 | tail -40 >&2 || true
    ;;
esac
exit 1
