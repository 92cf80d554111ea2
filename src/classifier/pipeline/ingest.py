"""Ingest: export ELPV from the installed `elpv-dataset` package into `data/raw`, byte for byte.

Not a DVC stage: `data/raw` is tracked by `data.dvc`, and the normal way to get it is
`dvc pull`. This module is the fallback when the remote lacks the data (a fresh machine, an empty
local remote): it rebuilds the directory from the package and checks that its DVC hash equals the
one recorded in `data.dvc`. A mismatch (another package version, an edited file) is a loud error
and leaves `data/raw` as it was: the data a model was trained on is never silently replaced.

The package ships the 300x300 8-bit PNGs themselves, so images are copied, not re-encoded, and
`labels.csv` is written with a fixed format: the same bytes on every machine, hence the same hash.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from classifier.pipeline.common import LABEL_COLUMNS, LABELS_FILE, PipelineError

DEFAULT_DEST = Path("data/raw")
DEFAULT_DVC_FILE = Path("data.dvc")


class DataHashMismatch(PipelineError):
    """The rebuilt data does not hash to what data.dvc records."""


def package_data_dir() -> Path:
    """Where the installed `elpv-dataset` wheel keeps `labels.csv` and `images/`."""
    try:
        root = importlib.resources.files("elpv_dataset") / "data"
    except ModuleNotFoundError as exc:
        raise PipelineError("elpv-dataset is not installed: run `make setup`") from exc
    path = Path(str(root))
    if not (path / "labels.csv").is_file():
        raise PipelineError(f"elpv-dataset has no data/labels.csv under {path}")
    return path


def export_elpv(source: Path, dest: Path, per_group: int | None = None) -> int:
    """Copy the images and write `labels.csv` (path,probability,type) into `dest`.

    The package's labels file is whitespace-separated `images/cellNNNN.png  <p>  <type>`; the
    probability token is kept verbatim (after checking it parses) so the output is stable.
    `per_group`: only the first that many images of each (cell type, probability), for a small
    dataset of the same kinds of cells. Returns the number of images.
    """
    lines = [ln.split() for ln in (source / "labels.csv").read_text(encoding="utf-8").splitlines()]
    rows = [ln for ln in lines if ln]
    (dest / "images").mkdir(parents=True, exist_ok=True)
    out = [",".join(LABEL_COLUMNS)]
    taken: Counter[tuple[str, str]] = Counter()
    for number, row in enumerate(rows, start=1):
        if len(row) != 3:
            raise PipelineError(f"{source}/labels.csv:{number}: expected 3 fields, got {row}")
        rel, probability, cell_type = row
        float(probability)  # raises ValueError on a corrupt package
        taken[cell_type, probability] += 1
        if per_group is not None and taken[cell_type, probability] > per_group:
            continue
        shutil.copyfile(source / rel, dest / rel)
        out.append(f"{rel},{probability},{cell_type}")
        if number % 500 == 0:
            print(f"ingest: copied {number}/{len(rows)} images", flush=True)
    (dest / LABELS_FILE).write_bytes(("\n".join(out) + "\n").encode("utf-8"))
    return len(out) - 1


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dir_md5(path: Path) -> str:
    """The hash DVC 3 records for a directory (`<md5>.dir`).

    DVC hashes the JSON list of `{"md5": <file md5>, "relpath": <posix path>}` sorted by relpath
    (dvc_data.hashfile.tree.Tree.as_bytes); computing it here needs no DVC cache or repo.
    """
    entries = [
        {"md5": file_md5(f), "relpath": f.relative_to(path).as_posix()}
        for f in path.rglob("*")
        if f.is_file()
    ]
    entries.sort(key=lambda e: e["relpath"])
    blob = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(blob, usedforsecurity=False).hexdigest() + ".dir"


def recorded_hash(dvc_file: Path) -> str:
    """The `md5` of the single output recorded in a `.dvc` file."""
    try:
        raw: Any = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
        return str(raw["outs"][0]["md5"])
    except FileNotFoundError as exc:
        raise PipelineError(f"{dvc_file} not found: run from the repository root") from exc
    except (KeyError, IndexError, TypeError) as exc:
        raise PipelineError(f"{dvc_file} has no outs[0].md5: is it a DVC file?") from exc


def ingest(dest: Path, dvc_file: Path, *, source: Path | None = None, force: bool = False) -> str:
    """Rebuild `dest` from the package, verified against `dvc_file`; returns the hash.

    Builds in a staging folder next to `dest` and moves it into place only when the hash matches.
    An existing `dest` is kept when it already matches, and is replaced only with `force`.
    """
    expected = recorded_hash(dvc_file)
    if dest.is_dir() and dir_md5(dest) == expected:
        print(f"ingest: {dest} already matches {dvc_file} ({expected})")
        return expected
    if dest.exists() and not force:
        raise PipelineError(
            f"{dest} exists but does not match {dvc_file}; refusing to overwrite it. "
            f"Restore it with `dvc checkout {dvc_file}`, or move it away (or pass --force)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ingest-", dir=dest.parent) as tmp:
        staging = Path(tmp) / "raw"
        count = export_elpv(source or package_data_dir(), staging)
        actual = dir_md5(staging)
        if actual != expected:
            raise DataHashMismatch(
                f"rebuilt data hashes to {actual} but {dvc_file} records {expected}: the installed "
                "elpv-dataset differs from the one the pipeline was built with. Nothing was "
                "written. Pin the elpv-dataset version in pyproject.toml; to adopt new data on "
                "purpose, see docs/pipeline.md (Data and remotes)"
            )
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    print(f"ingest: {count} images + {LABELS_FILE} -> {dest} (hash {actual} matches {dvc_file})")
    return actual


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--dvc-file", type=Path, default=DEFAULT_DVC_FILE)
    parser.add_argument("--force", action="store_true", help="replace a non-matching --dest")
    parser.add_argument(
        "--print-hash", action="store_true", help="only print the DVC hash of --dest and exit"
    )
    args = parser.parse_args(argv)
    try:
        if args.print_hash:
            print(dir_md5(args.dest))
            return
        ingest(args.dest, args.dvc_file, force=args.force)
    except PipelineError as exc:
        print(f"ingest: ERROR: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
