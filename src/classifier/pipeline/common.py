"""Small helpers every stage shares: params, seeds, dataset layout, JSON output.

Stages read `params.yaml` only through `load_params`, in their `main()`; the functions they call
take explicit arguments, so tests never touch `params.yaml`.
"""

from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

PARAMS_FILE = Path("params.yaml")
# The dataset layout every stage expects (ELPV's, and any other dataset that follows it):
#   <data_dir>/labels.csv  with columns  path,probability,type   (path relative to <data_dir>)
#   <data_dir>/<path>      the images, any format Pillow reads
LABELS_FILE = "labels.csv"
LABEL_COLUMNS = ("path", "probability", "type")
CLASS_NAMES = ("functional", "defective")


class PipelineError(RuntimeError):
    """A stage cannot go on; the message says what is wrong and how to fix it."""


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PipelineError(f"{path} not found: run from the repository root") from exc
    if not isinstance(raw, dict):
        raise PipelineError(f"{path} must be a mapping of sections (base, prepare, train, ...)")
    return raw


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """One stage's section of params.yaml, with a clear error when it is missing."""
    value = params.get(name)
    if not isinstance(value, dict):
        raise PipelineError(f"params.yaml has no section {name!r}: add it (see docs/pipeline.md)")
    return value


def input_channels(base: dict[str, Any]) -> tuple[str, ...]:
    """`base.channels`: the model's input planes (`classifier.imaging.CHANNELS`); gray alone when
    the key is absent (params files older than the key)."""
    from classifier.imaging import UnknownChannel, check_channels

    raw = base.get("channels", ["gray"])
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise PipelineError(f"base.channels must be a list of channel names, got {raw!r}")
    try:
        return check_channels(raw)
    except UnknownChannel as exc:
        raise PipelineError(f"base.channels: {exc}") from exc


def set_seeds(seed: int) -> None:
    """Seed every random source we use. TensorFlow's, when it is imported, is seeded by train."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)


@dataclass(frozen=True)
class Sample:
    path: str  # relative to the data directory
    probability: float  # the annotators' defect probability
    cell_type: str  # "mono" or "poly" for ELPV; any string for other datasets


def stratum(label: int, cell_type: str) -> str:
    """The key every stratified split uses (prepare's splits, train's cross-fold folds): the
    binary label and the cell type together, as in the paper."""
    return f"{label}/{cell_type}"


def read_labels(data_dir: Path) -> list[Sample]:
    """Read and validate `<data_dir>/labels.csv`; every listed image must exist."""
    labels_path = data_dir / LABELS_FILE
    if not labels_path.is_file():
        raise PipelineError(
            f"{labels_path} not found: get the data with `make data`, or point base.data_dir "
            "at a folder with labels.csv (path,probability,type) and the images"
        )
    with labels_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != LABEL_COLUMNS:
            raise PipelineError(
                f"{labels_path}: header must be {','.join(LABEL_COLUMNS)}, got {reader.fieldnames}"
            )
        samples: list[Sample] = []
        for line, row in enumerate(reader, start=2):
            try:
                probability = float(row["probability"])
            except ValueError as exc:
                raise PipelineError(
                    f"{labels_path}:{line}: probability {row['probability']!r} is not a number"
                ) from exc
            if not 0.0 <= probability <= 1.0:
                raise PipelineError(f"{labels_path}:{line}: probability must be in [0, 1]")
            if not (data_dir / row["path"]).is_file():
                raise PipelineError(f"{labels_path}:{line}: image {row['path']} does not exist")
            samples.append(Sample(row["path"], probability, row["type"]))
    if not samples:
        raise PipelineError(f"{labels_path} lists no images")
    return samples


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PipelineError(f"{path} not found: run the stage that writes it first") from exc
