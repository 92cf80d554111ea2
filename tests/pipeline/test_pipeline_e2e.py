"""The real DVC pipeline, end to end, on a generated dataset in the ELPV layout.

A temporary copy of the project (src/, dvc.yaml) gets a params.yaml that points `base.data_dir`
at a small generated dataset (two made-up cell types, 32x32, one epoch): the same `dvc repro`
that trains the real model, in about a minute, and proof that swapping the dataset is a params
change only.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from classifier.host import cpu
from classifier.model_card import ModelCard, split_fingerprint
from classifier.pipeline.ingest import dir_md5

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def generate_dataset(root: Path, per_group: int = 12, size: int = 40) -> Path:
    """Cells with a grid of busbars; defective ones get a dark crack. Same layout as ELPV."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for cell_type in ("alpha", "beta"):
        for defective in (0, 1):
            for i in range(per_group):
                img = rng.normal(0.7 if cell_type == "alpha" else 0.55, 0.05, (size, size))
                img[:, size // 3] = img[:, 2 * size // 3] = 0.2  # busbars
                if defective:
                    row = int(rng.integers(5, size - 5))
                    img[row - 1 : row + 2, :] = 0.05
                name = f"images/{cell_type}_{defective}_{i:03d}.png"
                pixels = (np.clip(img, 0, 1) * 255).astype(np.uint8)
                Image.fromarray(pixels, mode="L").save(root / name)
                rows.append((name, "1.0" if defective else "0.0", cell_type))
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("path", "probability", "type"))
        writer.writerows(rows)
    return root


def tiny_params(data_dir: str) -> dict[str, object]:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    # Both planes whatever params.yaml says, so the two-plane path runs end to end here.
    params["base"].update({"data_dir": data_dir, "image_size": 32, "channels": ["gray", "darkest"]})
    params["train"].update({"epochs": 1, "batch_size": 8, "filters": [4, 8], "patience": 1})
    return params


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    generate_dataset(root / "generated")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params("generated")), encoding="utf-8")
    run(["dvc", "init", "--no-scm", "-q"], root)
    return root


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(cwd / "src"),  # the copy's code, not the repo's
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_dvc_repro_runs_every_stage_on_a_generated_dataset(project: Path) -> None:
    result = run(["dvc", "repro"], project)
    out = result.stdout + result.stderr
    for stage in ("prepare", "train", "evaluate", "export"):
        assert f"Running stage '{stage}'" in out
    # params.yaml's ensemble: every member is trained, and the saved model averages them.
    members = int(tiny_params("generated")["train"]["ensemble"])  # type: ignore[index]
    assert f"train: member {members} of {members}" in out or members == 1
    trained = json.loads((project / "metrics/train.json").read_text(encoding="utf-8"))
    assert trained["members"] == members
    assert [m["best_epoch"] for m in trained["per_member"].values()] == [1] * members
    # params.yaml's cross_fold: with it, each member scored its own fold and the averaged model
    # has no held-out validation score.
    cross_fold = bool(tiny_params("generated")["train"]["cross_fold"])  # type: ignore[index]
    assert trained["cross_fold"] is cross_fold
    assert trained["ordinal"] is bool(tiny_params("generated")["train"]["ordinal"])  # type: ignore[index]
    assert (trained["val_accuracy"] is None) is cross_fold
    assert all(m["val_accuracy"] is not None for m in trained["per_member"].values())
    metrics = json.loads((project / "metrics/metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["per_cell_type"]) == {"alpha", "beta"}
    assert 0.0 <= metrics["accuracy"] <= 1.0
    parity = json.loads((project / "metrics/export.json").read_text(encoding="utf-8"))
    assert parity["parity_max_abs_diff"] <= parity["parity_tolerance"]
    card = ModelCard.load(project / "models/model_card.json")
    assert card.data_hash == dir_md5(project / "generated")  # not ELPV's: it says what it saw
    assert (card.input.height, card.input.width, card.input.channels) == (32, 32, 2)
    assert card.input.channel_names == ("gray", "darkest")
    assert card.params["base"]["data_dir"] == "generated"
    # The CPU decides the weights too: train records it, the card carries it.
    assert trained["trained_on"]["vector_isa"] == cpu()["vector_isa"] != "unknown"
    assert card.extra["trained_on"] == trained["trained_on"]
    # Per-image outcomes for the gate: keyed by the test split as prepare wrote it.
    with (project / "data/prepared/splits.csv").open(encoding="utf-8") as fh:
        test_rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    outcomes = card.test_outcomes
    assert outcomes is not None
    assert outcomes.images == metrics["images"] == len(test_rows)
    assert outcomes.fingerprint == split_fingerprint(
        [r["path"] for r in test_rows], [int(r["label"]) for r in test_rows]
    )
    assert outcomes.accuracy == pytest.approx(metrics["accuracy"], abs=1e-6)
    for picture in ("confusion_matrix.png", "roc.png", "errors.png", "training_history.png"):
        assert (project / "plots" / picture).read_bytes()[:4] == b"\x89PNG"
    assert (project / "dvc.lock").is_file()


def test_dvc_repro_again_is_a_no_op(project: Path) -> None:
    out = run(["dvc", "repro"], project).stdout
    assert "Running stage" not in out
    status = run(["dvc", "status"], project).stdout
    assert "up to date" in status
