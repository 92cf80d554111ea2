#!/usr/bin/env bash
# Host-side wheelhouse for the image: the serving dependencies exported from uv.lock (with
# hashes), downloaded as manylinux wheels for CPython 3.11 on x86_64, plus pip's own wheel.
# Containers here cannot verify TLS to PyPI (the host trusts an intercepting CA the image must
# never carry), so the Dockerfile installs from this folder with --no-index.
#
#   docker/wheelhouse.sh OUT_DIR      writes OUT_DIR/requirements.txt and OUT_DIR/wheels/
# env: UV (uv binary), PIP (a pinned pip), PIP_VERSION (pip wheel that goes into the build stage)
set -euo pipefail

out="${1:?usage: wheelhouse.sh OUT_DIR}"
UV="${UV:?set UV to the uv binary}"
PIP="${PIP:?set PIP to a pip executable}"
PIP_VERSION="${PIP_VERSION:?set PIP_VERSION}"
mkdir -p "$out/wheels"

# [project].dependencies only: no train/dev/delivery groups, not the project itself.
# UV_EXPORT_EXTRA adds to that (bench/image.py: the train group's TensorFlow closure).
# shellcheck disable=SC2086
"$UV" export --frozen --no-default-groups --no-emit-project ${UV_EXPORT_EXTRA:-} --quiet \
  -o "$out/requirements.txt.new"
mv "$out/requirements.txt.new" "$out/requirements.txt"

# Debian bookworm and python:3.11-slim (also bookworm) have glibc 2.36: any manylinux tag up to
# 2_36 runs there. pip does not widen explicit --platform values, so they are listed.
platforms=()
for tag in manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
  manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
  platforms+=(--platform "$tag")
done
echo ">> wheelhouse: downloading $(grep -c '^[a-z]' "$out/requirements.txt") pinned packages into $out/wheels" >&2
# --no-deps: the export is the complete, resolved set; every file is checked against uv.lock's
# hashes (--require-hashes is implied by the hashes in the file). --ignore-requires-python: uv
# ignores upper bounds of Requires-Python when locking (backports-strenum 1.3.1 says <3.11 yet
# is locked for 3.11), so pip must install exactly what the lock and .venv have.
"$PIP" download --quiet --no-deps --only-binary=:all: --implementation cp --python-version 3.11 \
  --ignore-requires-python \
  --abi cp311 --abi abi3 --abi none "${platforms[@]}" \
  -r "$out/requirements.txt" -d "$out/wheels"
"$PIP" download --quiet --no-deps "pip==$PIP_VERSION" -d "$out/wheels"
# Wheels of versions no longer in the lock would only bloat the context.
python3 - "$out" <<'PY'
import re, sys
from pathlib import Path
out = Path(sys.argv[1])
wanted = {
    (re.sub(r"[-_.]+", "_", m.group(1)).lower(), m.group(2))
    for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", (out / "requirements.txt").read_text(), re.M)
}
for wheel in (out / "wheels").glob("*.whl"):
    name, version = wheel.name.split("-")[:2]
    if (name.lower(), version) not in wanted and name != "pip":
        wheel.unlink()
        print(f">> wheelhouse: removed stale {wheel.name}", file=sys.stderr)
PY
size="$(du -sm "$out/wheels" | cut -f1)"
echo ">> wheelhouse: $(ls "$out/wheels" | wc -l) wheels, ${size} MB -> $out/wheels" >&2
