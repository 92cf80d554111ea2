"""Does a code change leave the pipeline's outputs as they were? Two versions, one tiny run each.

    .venv/bin/python -m bench.same_outputs --base a87da7c

Runs `dvc repro` twice in temporary projects: once with `src/` and `dvc.yaml` of the git
revision `--base`, once with those of the working tree, both with the working tree's
params.yaml made tiny (a few ELPV cells from the installed `elpv-dataset` package, small images
and filters, a few epochs) and every other key, the ensemble, cross-fold members and the
ordinal head among them, as params.yaml has them. It then compares every output dvc.yaml
declares: the saved Keras model's weights bit for bit, JSON files but for the keys that record
time (`VOLATILE`), every other file (prepared arrays, .tflite, plot data, pictures) byte for
byte. Exits 1 and names every difference when there is one.
For a refactoring: a change that means to change the outputs has nothing to compare against.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Outputs that record when or how long, not what was computed: compared without these keys.
VOLATILE = {"train.json": ("train_seconds",), "model_card.json": ("exported_at",)}


def tiny_dataset(dest: Path, per_group: int) -> Path:
    """`per_group` cells of each (cell type, expert probability) of the package's dataset, in
    the ELPV layout (labels.csv + images), chosen in the package's order."""
    from classifier.pipeline.ingest import export_elpv, package_data_dir

    export_elpv(package_data_dir(), dest, per_group=per_group)
    return dest


def tiny_params(epochs: int) -> dict[str, Any]:
    """The working tree's params.yaml with a small model and input, on the tiny dataset."""
    params: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["base"].update({"data_dir": "data/raw", "image_size": 32})
    params["train"].update(
        {"epochs": epochs, "patience": epochs, "batch_size": 16, "filters": [4, 8]}
    )
    return params


def checkout(revision: str | None, dest: Path) -> None:
    """`src/` and `dvc.yaml` of `revision` (None: the working tree) into `dest`."""
    if revision is None:
        shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO / "dvc.yaml", dest / "dvc.yaml")
        return
    archive = dest / "code.tar"
    subprocess.run(
        ["git", "-C", str(REPO), "archive", "-o", str(archive), revision, "src", "dvc.yaml"],
        check=True,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()


def make_project(root: Path, revision: str | None, params: dict[str, Any], data: Path) -> None:
    """A project at `root` with `revision`'s code, `params` and `data`."""
    root.mkdir(parents=True)
    checkout(revision, root)
    shutil.copytree(data, root / "data/raw")
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


def run_pipeline(root: Path, revision: str | None) -> None:
    """`dvc repro` in the project at `root` (`make_project`), with its own code."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(root / "src"),  # this project's code, not the repository's
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "DVC_NO_ANALYTICS": "1",
    }
    for argv in (["dvc", "init", "--no-scm", "-q"], ["dvc", "repro"]):
        result = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(
                f"same-outputs: {' '.join(argv)} failed in {root} "
                f"({revision or 'working tree'}):\n{result.stdout}\n{result.stderr}"
            )


def keras_weights(path: Path) -> list[Any]:
    import keras

    return list(keras.models.load_model(path, compile=False).get_weights())


def same_file(old: Path, new: Path) -> bool:
    """Whether two outputs hold the same result: a Keras model's weights bit for bit, a JSON
    file's content but for its `VOLATILE` keys, any other file byte for byte."""
    if old.suffix == ".keras":  # a zip that records its save time: compare what it holds
        a, b = keras_weights(old), keras_weights(new)
        return len(a) == len(b) and all(
            x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
            for x, y in zip(a, b, strict=True)
        )
    if old.name in VOLATILE:
        a, b = (json.loads(path.read_text(encoding="utf-8")) for path in (old, new))
        for key in VOLATILE[old.name]:
            a.pop(key, None)
            b.pop(key, None)
        return bool(a == b)
    return old.read_bytes() == new.read_bytes()


def differences(old: Path, new: Path) -> tuple[list[str], list[str]]:
    """(outputs compared, outputs that differ) of two runs: every output dvc.yaml declares
    (outs, metrics, plots; each file of a directory)."""
    from classifier.pipeline.stages import load_stages

    compared, differ = [], []
    for stage in load_stages(new / "dvc.yaml").values():
        for declared in stage.outputs:
            paths = [new / declared]
            if not paths[0].exists():
                differ.append(f"{declared} (not written)")
                continue
            if paths[0].is_dir():
                paths = sorted(p for p in paths[0].rglob("*") if p.is_file())
            for path in paths:
                rel = path.relative_to(new).as_posix()
                compared.append(rel)
                if not (old / rel).is_file() or not same_file(old / rel, path):
                    differ.append(rel)
    return compared, differ


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--per-group", type=int, default=12, help="cells per type and level")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep both projects in this directory")
    args = parser.parse_args(argv)
    params = tiny_params(args.epochs)
    with tempfile.TemporaryDirectory(prefix="same-outputs-") as tmp:
        work = args.keep or Path(tmp)
        data = tiny_dataset(work / "dataset", args.per_group)
        base, new = work / "base", work / "new"
        runs = ((base, args.base), (new, None))
        for root, revision in runs:  # both copies first: the working tree may change meanwhile
            make_project(root, revision, params, data)
        for root, revision in runs:
            print(f"same-outputs: dvc repro with the code of {revision or 'the working tree'}")
            run_pipeline(root, revision)
        compared, differ = differences(base, new)
    if differ:
        print("same-outputs: DIFFERENT:\n  " + "\n  ".join(differ), file=sys.stderr)
        raise SystemExit(1)
    print(f"same-outputs: {args.base} and the working tree wrote the same {len(compared)} files:")
    print("  " + "\n  ".join(compared))


if __name__ == "__main__":
    main()
