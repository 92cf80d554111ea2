#!/usr/bin/env bash
# Push REPO:TAG to the local registry and record what was pushed.
#
#   docker/push.sh REPO TAG OUT_JSON     e.g. 127.0.0.1:5000/elpv-classifier <sha> build/image.json
#
# OUT_JSON = {"image": REPO, "tag": TAG, "digest": "sha256:..."}: the manifest digest the
# registry stores, which is what `gitops bump` pins (image@digest) and what a pull by digest gets.
set -euo pipefail
repo="${1:?usage: push.sh REPO TAG OUT_JSON}"
tag="${2:?usage: push.sh REPO TAG OUT_JSON}"
out="${3:?usage: push.sh REPO TAG OUT_JSON}"
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"

echo ">> push: $repo:$tag" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
"$DOCKER" push "$repo:$tag" | tee "$log" >&2
# `docker push` ends with "<tag>: digest: sha256:<hex> size: <n>".
digest="$(grep -oE 'digest: sha256:[0-9a-f]{64}' "$log" | tail -1 | cut -d' ' -f2)"
if [[ -z "$digest" ]]; then
  echo "push.sh: no digest in docker push's output; is the registry up? (make services-up)" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
python3 - "$repo" "$tag" "$digest" "$out" <<'PY'
import json, sys
repo, tag, digest, out = sys.argv[1:]
with open(out, "w", encoding="utf-8") as f:
    json.dump({"image": repo, "tag": tag, "digest": digest}, f, indent=2)
    f.write("\n")
PY
echo ">> push: $repo:$tag@$digest -> $out" >&2
