#!/usr/bin/env bash
# Build the serving image with every label filled in from git and the model card.
#
#   docker/build.sh IMAGE_REF [MODEL_DIR] [BASE_IMAGE]
#
# IMAGE_REF  e.g. 127.0.0.1:5000/elpv-classifier:<git sha>
# MODEL_DIR  folder with model.tflite + model_card.json inside the repo (default: models)
# BASE_IMAGE default python-base (the Dockerfile's digest-pinned python:3.11-slim stage, as on GitHub);
#            `make image` passes the local debootstrap base
# Needs build/image/{requirements.txt,wheels/} (`make wheelhouse`). DOCKER_BUILD_FLAGS adds flags
# (e.g. --no-cache, as docs/image.md's reproducibility check does).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
image="${1:?usage: build.sh IMAGE_REF [MODEL_DIR] [BASE_IMAGE]}"
model_dir="${2:-models}"
base="${3:-python-base}"
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"

for f in model.tflite model_card.json; do
  if [[ ! -f "$model_dir/$f" ]]; then
    echo "build.sh: $model_dir/$f is missing: run \`make run\` (dvc repro) for the real model," \
      "or \`make test-model\` and MODEL_DIR=build/test-model for a tiny one" >&2
    exit 2
  fi
done
case "$model_dir" in
  models | build/test-model | build/test-model-b) ;;
  *) echo "build.sh: MODEL_DIR=$model_dir is not in .dockerignore's allow-list; add it there" >&2; exit 2 ;;
esac
if [[ ! -f build/image/requirements.txt ]] || ! ls build/image/wheels/pip-*.whl >/dev/null 2>&1; then
  echo "build.sh: no wheelhouse in build/image: run \`make wheelhouse\`" >&2
  exit 2
fi

# Labels: deterministic for a given commit and model (created = the commit's time, not now), so
# rebuilding a commit changes no label.
# REVISION comes from make, which derived the tag from the same value (HEAD may move meanwhile).
revision="${REVISION:-$(git rev-parse HEAD)}"
created="$(git show -s --format=%cI "$revision")"
# Where the source lives: the origin remote, GitHub Actions' repository, else this checkout.
if [[ -n "${GITHUB_SERVER_URL:-}" && -n "${GITHUB_REPOSITORY:-}" ]]; then
  default_source="$GITHUB_SERVER_URL/$GITHUB_REPOSITORY"
else
  default_source="$(git config --get remote.origin.url || echo "file://$ROOT")"
fi
source_url="${IMAGE_SOURCE_URL:-$default_source}"
version="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
mapfile -t card < <(python3 - "$model_dir/model_card.json" <<'PY'
import json, sys
card = json.load(open(sys.argv[1]))
print(card["version"]); print(card["data_hash"])
for key in ("accuracy", "balanced_accuracy", "roc_auc", "f1"):
    print(f'{card["metrics"][key]:.4f}')
PY
)

echo ">> image: building $image (base $base, model $model_dir)" >&2
started=$(date +%s)
# BuildKit skips nothing we need and caches per stage; Debian's dockerd 20.10 has it built in.
# shellcheck disable=SC2086
DOCKER_BUILDKIT=1 nice -n 10 "$DOCKER" build \
  --file Dockerfile \
  --tag "$image" \
  --build-arg "BASE_IMAGE=$base" \
  --build-arg "MODEL_DIR=$model_dir" \
  --build-arg "SOURCE_URL=$source_url" \
  --build-arg "REVISION=$revision" \
  --build-arg "CREATED=$created" \
  --build-arg "VERSION=$version" \
  --build-arg "MODEL_VERSION=${card[0]}" \
  --build-arg "MODEL_DATA_HASH=${card[1]}" \
  --build-arg "MODEL_ACCURACY=${card[2]}" \
  --build-arg "MODEL_BALANCED_ACCURACY=${card[3]}" \
  --build-arg "MODEL_ROC_AUC=${card[4]}" \
  --build-arg "MODEL_F1=${card[5]}" \
  --progress "${BUILD_PROGRESS:-plain}" \
  ${DOCKER_BUILD_FLAGS:-} \
  . >&2
size="$("$DOCKER" image inspect --format '{{.Size}}' "$image")"
echo ">> image: built $image ($((size / 1000000)) MB) in $(($(date +%s) - started)) s" >&2
