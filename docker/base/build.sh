#!/usr/bin/env bash
# Build the local base image (Debian bookworm + python3.11, nothing else) with debootstrap,
# for machines that cannot pull python:3.11-slim. Reused when an image of the same name exists:
# the name carries a hash of this script, so editing the recipe builds a new base.
#
#   docker/base/build.sh            prints the image name on stdout when done
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
RECIPE_HASH="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
IMAGE="${BASE_IMAGE_NAME:-elpv-base}:${SUITE}-py311-${RECIPE_HASH}"

log() { echo ">> base image: $*" >&2; }

if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  log "reusing $IMAGE"
  echo "$IMAGE"
  exit 0
fi

# debootstrap, chroot and apt-get need root (CI here runs as root; elsewhere sudo).
if [[ $EUID -ne 0 ]]; then
  exec sudo --preserve-env=DOCKER,DEBIAN_MIRROR,BASE_IMAGE_NAME,TMPDIR "$0" "$@"
fi

if ! command -v debootstrap >/dev/null; then
  log "apt-get install debootstrap"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
fi

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/elpv-base.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
log "debootstrap $SUITE (minbase + python3) into $rootfs: about 1-2 minutes"
# minbase = essential packages + apt. python3 brings python3.11 and its stdlib; no pip, no venv
# module (the Dockerfile runs pip from a wheel), no ca-certificates (the service makes no
# outbound TLS calls), no compilers.
nice -n 10 debootstrap --variant=minbase --include=python3 "$SUITE" "$rootfs" "$MIRROR" \
  >"$rootfs.debootstrap.log" 2>&1 || { tail -30 "$rootfs.debootstrap.log" >&2; exit 1; }
rm -f "$rootfs.debootstrap.log"

log "trimming docs, man pages, locales, apt lists and caches"
# Keep /usr/share/doc/*/copyright: the licence notices of what the image ships.
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/{man,info,locale,lintian,linda,bash-completion} \
  "$rootfs"/usr/share/i18n "$rootfs"/usr/lib/locale/* \
  "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/debconf/*-old \
  "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.cache
# Stdlib parts a service never imports (the test suite, idle/tkinter, lib2to3, ensurepip).
rm -rf "$rootfs"/usr/lib/python3.11/{test,idlelib,tkinter,turtledemo,lib2to3,ensurepip,pydoc_data}
# glibc's iconv charset modules (8 MB): Python has its own codecs and never calls iconv.
rm -rf "$rootfs"/usr/lib/x86_64-linux-gnu/gconv
# Keep (and complete) the stdlib bytecode: with a read-only root fs nothing can be cached at
# run time, so a missing .pyc is a compile on every container start (~1 s for asyncio & co).
chroot "$rootfs" python3 -m compileall -q -j 0 /usr/lib/python3.11 >/dev/null || true
# Same hostname/resolver state for every build; docker supplies both at run time.
: >"$rootfs/etc/hostname"
: >"$rootfs/etc/resolv.conf"
# Never ship a machine id: each container must not share one.
: >"$rootfs/etc/machine-id"

log "importing into docker as $IMAGE"
# --numeric-owner keeps root-owned files root-owned whatever the host's passwd says.
tar --numeric-owner --sort=name -C "$rootfs" -c . |
  "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase --include=python3 $SUITE (trimmed)" \
    - "$IMAGE" >/dev/null
# Bases of older recipes: removed unless an image still uses them (then `rm` refuses, fine).
"$DOCKER" image ls "${IMAGE%%:*}" --format '{{.Repository}}:{{.Tag}}' | grep -vxF "$IMAGE" |
  xargs -r "$DOCKER" image rm >/dev/null 2>&1 || true
size="$("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE")"
log "built $IMAGE ($((size / 1000000)) MB)"
echo "$IMAGE"
