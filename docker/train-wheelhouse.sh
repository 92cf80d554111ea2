#!/usr/bin/env bash
# Host-side wheelhouse for the training image (docker/train.Dockerfile): the serving
# dependencies plus the `train` group (TensorFlow, DVC, ...) exported from uv.lock with hashes,
# as manylinux wheels for CPython 3.11 on x86_64, plus pip's own wheel. Like docker/wheelhouse.sh
# (read it first), with one difference: a few of DVC's dependencies publish no wheel at all
# (antlr4-python3-runtime 4.9.3, an sdist only), so sdists are allowed, checked against the lock's
# hash on download, built into wheels here on the host, and the requirements file records the
# built wheel's hash in place of the sdist's. The image installs wheels only, offline.
#
#   docker/train-wheelhouse.sh OUT_DIR     writes OUT_DIR/requirements.txt and OUT_DIR/wheels/
# env: UV (uv binary), PIP (a pinned pip), PIP_VERSION (pip wheel that goes into the image),
#      TRAIN_GROUP (uv.lock's dependency group: train, the default, or train-gpu)
set -euo pipefail

out="${1:?usage: train-wheelhouse.sh OUT_DIR}"
UV="${UV:?set UV to the uv binary}"
PIP="${PIP:?set PIP to a pip executable}"
PIP_VERSION="${PIP_VERSION:?set PIP_VERSION}"
mkdir -p "$out/wheels" "$out/sdists"

group="${TRAIN_GROUP:-train}"
"$UV" export --frozen --no-default-groups --group "$group" --no-emit-project --quiet \
  -o "$out/requirements.locked.txt"

platforms=()
# NVIDIA's CUDA wheels (train-gpu) are tagged as old as manylinux2010.
for tag in manylinux2010_x86_64 manylinux_2_12_x86_64 manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 manylinux_2_25_x86_64 manylinux_2_27_x86_64 \
  manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
  platforms+=(--platform "$tag")
done
echo ">> train wheelhouse: $(grep -c '^[a-z]' "$out/requirements.locked.txt") pinned packages ($group) -> $out/wheels" >&2
# --prefer-binary: a wheel whenever one exists; an sdist only for packages that publish none.
# Every file is checked against uv.lock's hashes. Already-downloaded files are not fetched again.
"$PIP" download --quiet --no-deps --prefer-binary --implementation cp --python-version 3.11 \
  --ignore-requires-python --abi cp311 --abi abi3 --abi none "${platforms[@]}" \
  -r "$out/requirements.locked.txt" -d "$out/wheels"
"$PIP" download --quiet --no-deps "pip==$PIP_VERSION" -d "$out/wheels"

# sdists -> wheels (pure Python here; a compiled one would need the image's glibc and fail the
# install's platform check, which is the right failure).
shopt -s nullglob
for sdist in "$out"/wheels/*.tar.gz "$out"/wheels/*.zip; do
  echo ">> train wheelhouse: building a wheel from $(basename "$sdist") (no wheel on PyPI)" >&2
  "$PIP" wheel --quiet --no-deps --wheel-dir "$out/wheels" "$sdist"
  mv "$sdist" "$out/sdists/"
done

python3 - "$out" <<'PY'
"""requirements.txt = the locked export, with each sdist's hash replaced by its built wheel's."""
import hashlib
import re
import sys
from pathlib import Path

out = Path(sys.argv[1])
norm = lambda name: re.sub(r"[-_.]+", "_", name).lower()  # noqa: E731
wheels = {}
for wheel in (out / "wheels").glob("*.whl"):
    name, version = wheel.name.split("-")[:2]
    wheels.setdefault((norm(name), version), []).append(wheel)
built = {}
for sdist in (out / "sdists").iterdir():
    stem = re.sub(r"\.(tar\.gz|zip)$", "", sdist.name)
    name, _, version = stem.rpartition("-")
    built[(norm(name), version)] = sdist
text = (out / "requirements.locked.txt").read_text()
blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
result = []
for block in blocks:
    match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", block)
    if match and (norm(match[1]), match[2]) in built:
        (wheel,) = wheels[(norm(match[1]), match[2])]
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        head = block.split("\\\n")[0].rstrip()
        block = f"{head} \\\n    --hash=sha256:{digest}"
    result.append(block)
(out / "requirements.txt").write_text("\n".join(result))
wanted = {
    (norm(m[1]), m[2])
    for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", text, re.M)
}
for key, files in wheels.items():
    if key not in wanted and key[0] != "pip":
        for wheel in files:
            wheel.unlink()
            print(f">> train wheelhouse: removed stale {wheel.name}", file=sys.stderr)
PY
echo ">> train wheelhouse: $(ls "$out/wheels" | wc -l) wheels, $(du -sm "$out/wheels" | cut -f1) MB" >&2
