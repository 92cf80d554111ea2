#!/usr/bin/env bash
# Build the training image (docker/train.Dockerfile) from a context of its own.
#
#   docker/train-build.sh IMAGE_REF [BASE_IMAGE]
#   docker/train-build.sh --context-only     stage the context and stop (CI's build-push-action
#                                            builds it: .github/workflows/train-cluster.yml)
#
# Needs build/train-image/{requirements.txt,wheels/} (`make train-wheelhouse`). Stages the
# workspace (the pipeline files `dvc repro train` reads) and the entrypoint into that context, so
# nothing else of the checkout (.git, .venv, data/) is sent to the builder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
image="${1:?usage: train-build.sh IMAGE_REF [BASE_IMAGE] | --context-only}"
base="${2:-python-base}"
context="${TRAIN_CONTEXT:-build/train-image}"
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"

if [[ ! -f "$context/requirements.txt" ]] || ! ls "$context"/wheels/pip-*.whl >/dev/null 2>&1; then
  echo "train-build.sh: no wheelhouse in $context: run \`make train-wheelhouse\`" >&2
  exit 2
fi

# The workspace: what dvc.yaml's train stage (and prepare, upstream of it) reads, nothing more.
rm -rf "$context/workspace"
mkdir -p "$context/workspace/.dvc" "$context/workspace/src"
cp dvc.yaml dvc.lock params.yaml data.dvc .dvcignore "$context/workspace/"
cp .dvc/config "$context/workspace/.dvc/config"
cp -R src/classifier "$context/workspace/src/classifier"
find "$context/workspace" -name __pycache__ -prune -exec rm -rf {} +
cp docker/train-entrypoint.sh "$context/train-entrypoint.sh"
if [[ "$image" == --context-only ]]; then
  echo ">> train image: context staged in $context" >&2
  exit 0
fi

revision="${REVISION:-$(git rev-parse HEAD)}"
source_url="${IMAGE_SOURCE_URL:-$(git config --get remote.origin.url || echo "file://$ROOT")}"
echo ">> train image: building $image (base $base)" >&2
started=$(date +%s)
# shellcheck disable=SC2086
DOCKER_BUILDKIT=1 nice -n 10 "$DOCKER" build \
  --file docker/train.Dockerfile \
  --tag "$image" \
  --build-arg "BASE_IMAGE=$base" \
  --build-arg "REVISION=$revision" \
  --build-arg "SOURCE_URL=$source_url" \
  --progress "${BUILD_PROGRESS:-plain}" \
  ${DOCKER_BUILD_FLAGS:-} \
  "$context" >&2
size="$("$DOCKER" image inspect --format '{{.Size}}' "$image")"
echo ">> train image: built $image in $(($(date +%s) - started)) s ($((size / 1000000)) MB)" >&2
