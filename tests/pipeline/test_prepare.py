"""The split: stratified by label and cell type, seeded, and the test part kept apart."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from classifier.pipeline.common import PipelineError, Sample, read_labels
from classifier.pipeline.prepare import binary_label, split_indices, strata

REPO = Path(__file__).resolve().parents[2]


def make_samples(per_group: dict[tuple[float, str], int]) -> list[Sample]:
    samples = []
    for (probability, cell_type), count in per_group.items():
        samples += [
            Sample(f"img/{cell_type}{probability}-{i}.png", probability, cell_type)
            for i in range(count)
        ]
    return samples


ELPV_LIKE = make_samples(
    {(0.0, "mono"): 588, (0.33, "poly"): 1098, (1.0, "mono"): 369, (1.0, "poly"): 452}
)


def test_binary_label_is_defective_only_above_the_threshold() -> None:
    assert [binary_label(p, 0.5) for p in (0.0, 0.3333, 0.5, 0.6667, 1.0)] == [0, 0, 0, 1, 1]


def test_split_is_stratified_by_label_and_type() -> None:
    splits = split_indices(ELPV_LIKE, threshold=0.5, test_fraction=0.25, val_fraction=0.15, seed=1)
    keys = strata(ELPV_LIKE, 0.5)
    total = Counter(keys)
    for name, fraction in (("test", 0.25), ("val", 0.75 * 0.15), ("train", 0.75 * 0.85)):
        got = Counter(keys[i] for i in splits[name])
        for group, count in total.items():
            assert abs(got[group] - count * fraction) <= 2, (name, group)


def test_split_is_disjoint_complete_and_seeded() -> None:
    a = split_indices(ELPV_LIKE, threshold=0.5, test_fraction=0.25, val_fraction=0.15, seed=7)
    b = split_indices(ELPV_LIKE, threshold=0.5, test_fraction=0.25, val_fraction=0.15, seed=7)
    c = split_indices(ELPV_LIKE, threshold=0.5, test_fraction=0.25, val_fraction=0.15, seed=8)
    assert a == b
    assert a["test"] != c["test"]
    parts = [set(a[name]) for name in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == len(ELPV_LIKE)
    assert set().union(*parts) == set(range(len(ELPV_LIKE)))


def test_split_rejects_a_group_too_small_to_stratify() -> None:
    samples = make_samples({(0.0, "mono"): 20, (1.0, "mono"): 20, (1.0, "poly"): 2})
    with pytest.raises(PipelineError, match="at least 3"):
        split_indices(samples, threshold=0.5, test_fraction=0.25, val_fraction=0.15, seed=0)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_rejects_fractions_outside_zero_one(fraction: float) -> None:
    with pytest.raises(PipelineError, match="test_fraction"):
        split_indices(ELPV_LIKE, threshold=0.5, test_fraction=fraction, val_fraction=0.1, seed=0)


def test_read_labels_rejects_a_wrong_header(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("file,prob,kind\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="header must be path,probability,type"):
        read_labels(tmp_path)


def test_read_labels_rejects_a_missing_image(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("path,probability,type\nnope.png,1.0,mono\n", "utf-8")
    with pytest.raises(PipelineError, match=r"labels.csv:2: image nope.png does not exist"):
        read_labels(tmp_path)


def test_only_evaluate_and_export_depend_on_the_test_split() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    readers = {name for name, s in stages.items() if "data/prepared/test.npz" in s.get("deps", [])}
    assert readers == {"evaluate", "export"}
    assert "data/prepared" not in stages["train"]["deps"]  # train sees train.npz and val.npz only


def test_prepare_keeps_binary_labels_and_graded_probabilities(tmp_path: Path) -> None:
    from PIL import Image

    from classifier.pipeline.prepare import load_split, prepare

    data = tmp_path / "raw"
    (data / "images").mkdir(parents=True)
    rows = ["path,probability,type"]
    for i, probability in enumerate([0.0, 1 / 3, 2 / 3, 1.0] * 6):
        name = f"images/c{i:02d}.png"
        Image.new("L", (12, 12), color=i * 10).save(data / name)
        rows.append(f"{name},{probability:.6f},{'mono' if i % 2 else 'poly'}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    prepare(
        data,
        tmp_path / "prepared",
        image_size=8,
        threshold=0.5,
        test_fraction=0.25,
        val_fraction=0.25,
        seed=0,
    )
    split = load_split(tmp_path / "prepared", "train")
    assert set(split) == {"x", "y", "p", "type", "path"}
    np.testing.assert_allclose(np.unique(split["p"]), [0.0, 1 / 3, 2 / 3, 1.0], atol=1e-6)
    np.testing.assert_array_equal(split["y"], (split["p"] > 0.5).astype(np.float32))


def _tiny_dataset(data: Path) -> None:
    from PIL import Image

    (data / "images").mkdir(parents=True)
    rows = ["path,probability,type"]
    for i, probability in enumerate([0.0, 1.0] * 6):
        name = f"images/c{i:02d}.png"
        pixels = np.full((24, 24), 200, dtype=np.uint8)
        pixels[11, 2:-2] = 20  # a one-pixel dark line
        Image.fromarray(pixels, mode="L").save(data / name)
        rows.append(f"{name},{probability:.6f},mono")
    (data / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_prepare_writes_the_planes_base_channels_names(tmp_path: Path) -> None:
    from classifier.pipeline.prepare import load_split, prepare

    _tiny_dataset(tmp_path / "raw")
    summary = prepare(
        tmp_path / "raw",
        tmp_path / "prepared",
        image_size=8,
        threshold=0.5,
        test_fraction=0.25,
        val_fraction=0.25,
        seed=0,
        channels=("gray", "darkest"),
    )
    assert summary["channels"] == ["gray", "darkest"]
    x = load_split(tmp_path / "prepared", "train")["x"]
    assert x.shape[1:] == (8, 8, 2)
    # The darkest plane keeps the line darker than the plain resize does.
    assert float(x[..., 1].min()) < float(x[..., 0].min())


@pytest.mark.parametrize("channels", [["grey"], "gray", []])
def test_base_channels_must_name_known_planes(channels: object) -> None:
    from classifier.pipeline.common import input_channels

    with pytest.raises(PipelineError, match=r"base\.channels"):
        input_channels({"channels": channels})


def test_base_channels_defaults_to_gray() -> None:
    from classifier.pipeline.common import input_channels

    assert input_channels({}) == ("gray",)
