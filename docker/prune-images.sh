#!/usr/bin/env bash
# Remove this project's per-commit images except those of one commit, then dangling layers.
#
#   docker/prune-images.sh <commit>      (needs a running dockerd: `services.sh run -- ...`)
#
# Every `make test` tags the serving, test and training images with its commit, and a machine
# keeps /var/lib/docker between runs: without this, each CI run leaves about 3 GB behind and the
# disk fills after a few dozen runs. The kept commit's images are the next run's layer cache;
# the debootstrap base images (elpv-base*) are named by content and stay.
set -euo pipefail

[[ $# -eq 1 && -n $1 ]] || { echo "usage: $0 <commit sha to keep>" >&2; exit 2; }
keep="$1"
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker || echo docker)}"
REGISTRY="${REGISTRY:-127.0.0.1:5000}"
# The names mk/image.mk and mk/train.mk push under (tests/container/test_prune_images.py checks).
: "${PRUNE_REPOSITORIES:=elpv-classifier elpv-classifier-test elpv-train}"

stale=()
for repo in $PRUNE_REPOSITORIES; do
	while IFS= read -r ref; do
		tag="${ref##*:}"
		[[ $tag == "$keep"* ]] || stale+=("$ref")
	done < <("$DOCKER" images --format '{{.Repository}}:{{.Tag}}' "$REGISTRY/$repo" | grep -v ':<none>$' || true)
done
if [[ ${#stale[@]} -gt 0 ]]; then
	echo ">> prune-images: removing ${#stale[@]} image tag(s) of other commits (keeping ${keep:0:12})"
	"$DOCKER" image rm "${stale[@]}" >/dev/null
fi
"$DOCKER" image prune --force >/dev/null
echo ">> prune-images: $("$DOCKER" system df --format '{{.Type}} {{.Size}}' | head -1)"
