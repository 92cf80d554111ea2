"""Stage `prepare`: labels -> stratified train/val/test split -> preprocessed arrays.

Protocol of the reference paper (Deitsch et al., Solar Energy 2019): a cell is defective when its
defect probability is > 0.5, and the data is split 75/25 into train/test, stratified by label and
cell type. Validation (early stopping, LR schedule) is carved out of the training part, so the
test split is seen only by `evaluate` and `export`.

Every image goes through `classifier.imaging.preprocess` with `base.channels` (the planes the
model reads; serving computes the same ones from the model card).

    python -m classifier.pipeline.prepare DATA_DIR OUT

Writes `OUT/{train,val,test}.npz` (x, y, p, type, path) and `OUT/splits.csv`:
`y` is the binary label every metric uses, `p` the graded defect probability (ELPV's experts
voted 0, 1/3, 2/3 or 1) that training can use as a soft target.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from sklearn.model_selection import train_test_split

from classifier.imaging import GRAY_ONLY, preprocess
from classifier.pipeline.common import (
    PARAMS_FILE,
    PipelineError,
    Sample,
    input_channels,
    load_params,
    read_labels,
    section,
    stratum,
    write_json,
)

SPLITS = ("train", "val", "test")


def binary_label(probability: float, threshold: float) -> int:
    """1 (defective) when the defect probability is above the threshold, else 0 (functional)."""
    return int(probability > threshold)


def strata(samples: list[Sample], threshold: float) -> list[str]:
    """Each sample's stratification key (`stratum`)."""
    return [stratum(binary_label(s.probability, threshold), s.cell_type) for s in samples]


def split_indices(
    samples: list[Sample],
    *,
    threshold: float,
    test_fraction: float,
    val_fraction: float,
    seed: int,
) -> dict[str, list[int]]:
    """Stratified split into train/val/test index lists (sorted, disjoint, covering all).

    `val_fraction` is a fraction of the *training* part (the 1 - test_fraction share).
    """
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 < value < 1.0:
            raise PipelineError(f"prepare.{name} must be in (0, 1), got {value}")
    keys = strata(samples, threshold)
    smallest = min(Counter(keys).values())
    if smallest < 3:
        raise PipelineError(
            f"a label/type group has only {smallest} image(s); stratifying into train/val/test "
            "needs at least 3 per group: add images or merge rare cell types"
        )
    indices = np.arange(len(samples))
    try:
        rest, test = train_test_split(
            indices, test_size=test_fraction, random_state=seed, stratify=keys
        )
        rest_keys = [keys[i] for i in rest]
        train, val = train_test_split(
            rest, test_size=val_fraction, random_state=seed, stratify=rest_keys
        )
    except ValueError as exc:  # sklearn: a split too small to hold every group
        raise PipelineError(
            f"cannot stratify {len(samples)} images into these fractions: {exc}; "
            "use more images or larger fractions"
        ) from exc
    return {
        "train": sorted(train.tolist()),
        "val": sorted(val.tolist()),
        "test": sorted(test.tolist()),
    }


def load_images(
    data_dir: Path,
    samples: list[Sample],
    size: tuple[int, int],
    channels: tuple[str, ...] = GRAY_ONLY,
) -> npt.NDArray[np.float32]:
    """Preprocess every image with the function serving uses, stacked as (N, H, W, channels)."""
    out = np.empty((len(samples), size[0], size[1], len(channels)), dtype=np.float32)
    for i, sample in enumerate(samples):
        with Image.open(data_dir / sample.path) as image:
            out[i] = preprocess(image, size, channels)
    return out


def prepare(
    data_dir: Path,
    out_dir: Path,
    *,
    image_size: int,
    threshold: float,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    channels: tuple[str, ...] = GRAY_ONLY,
) -> dict[str, Any]:
    """Split, preprocess and write the arrays; returns a summary (counts per split/label/type)."""
    samples = read_labels(data_dir)
    splits = split_indices(
        samples,
        threshold=threshold,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    size = (image_size, image_size)
    summary: dict[str, Any] = {
        "image_size": image_size,
        "channels": list(channels),
        "threshold": threshold,
        "splits": {},
    }
    rows: list[tuple[str, float, str, int, str]] = []
    for name in SPLITS:
        chosen = [samples[i] for i in splits[name]]
        x = load_images(data_dir, chosen, size, channels)
        y = np.array([binary_label(s.probability, threshold) for s in chosen], dtype=np.float32)
        probabilities = np.array([s.probability for s in chosen], dtype=np.float32)
        types = np.array([s.cell_type for s in chosen])
        paths = np.array([s.path for s in chosen])
        np.savez(out_dir / f"{name}.npz", x=x, y=y, p=probabilities, type=types, path=paths)
        counts = Counter(f"{int(label)}/{t}" for label, t in zip(y, types, strict=True))
        summary["splits"][name] = {
            "images": len(chosen),
            "by_label_type": dict(sorted(counts.items())),
        }
        rows += [
            (s.path, s.probability, s.cell_type, binary_label(s.probability, threshold), name)
            for s in chosen
        ]
        print(f"prepare: {name:5s} {len(chosen):5d} images, {int(y.sum())} defective", flush=True)
    with (out_dir / "splits.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("path", "probability", "type", "label", "split"))
        writer.writerows(sorted(rows))
    write_json(out_dir / "summary.json", summary)
    return summary


def load_split(prepared_dir: Path, name: str) -> dict[str, npt.NDArray[Any]]:
    """Read one split written by `prepare` (keys: x, y, p, type, path)."""
    path = prepared_dir / f"{name}.npz"
    if not path.is_file():
        raise PipelineError(f"{path} not found: run `dvc repro prepare` first")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="the dataset: labels.csv and its images")
    parser.add_argument("out", type=Path, help="where to write the prepared splits")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    base, cfg = section(params, "base"), section(params, "prepare")
    started = time.monotonic()
    prepare(
        args.data_dir,
        args.out,
        image_size=int(base["image_size"]),
        threshold=float(base["threshold"]),
        test_fraction=float(cfg["test_fraction"]),
        val_fraction=float(cfg["val_fraction"]),
        seed=int(base["seed"]),
        channels=input_channels(base),
    )
    print(f"prepare: wrote {args.out}/{{train,val,test}}.npz in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
