"""bench/epoch_cost.py: variants, their errors, the ratio table, and one real timed child."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import bench.epoch_cost as epoch_cost  # the repo root is not on the import path
from tests.pipeline.test_pipeline_e2e import generate_dataset, tiny_params


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a params.yaml and a labels file, as the parent checks before any child."""
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "labels.csv").write_text("path,probability,type\n")
    (tmp_path / "params.yaml").write_text("base: {data_dir: data/raw, image_size: 96}\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A generated dataset and a tiny params.yaml, for a real (short) training; returns the
    params file."""
    generate_dataset(tmp_path / "generated")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params("generated")), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return params_file


@pytest.mark.parametrize("argv", [["--epochs", "1"], ["--rounds", "0"]])
def test_too_few_epochs_or_rounds_is_refused_with_the_bounds(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match=r"--epochs must be >= 2 .* and --rounds >= 1"):
        epoch_cost.main([*argv, "--variant", "a", "--variant", "b"])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([["96 px"]], "at least two --variant"),
        ([["a"], ["a", "base.image_size=64"]], "'a' given twice"),
        ([["base.image_size=64"], ["b"]], "start with a name"),
    ],
)
def test_bad_variants_are_refused_with_what_to_do(raw: list[list[str]], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        epoch_cost.parse_variants(raw)


@pytest.mark.usefixtures("project")
def test_a_bad_key_is_refused_before_any_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_training(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("trained despite a bad override")

    monkeypatch.setattr(subprocess, "run", no_training)
    with pytest.raises(SystemExit, match=r"no key 'base\.image_sise'"):
        epoch_cost.main(["--variant", "96 px", "--variant", "64 px", "base.image_sise=64"])


def test_without_the_data_it_says_which_command_makes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "params.yaml").write_text("base: {data_dir: data/raw, image_size: 96}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"data/raw/labels\.csv not found: run `make data` first"):
        epoch_cost.main(["--variant", "96 px", "--variant", "64 px", "base.image_size=64"])


@pytest.mark.usefixtures("project")
def test_a_failed_child_shows_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_child(command: list[str], **_kwargs: Any) -> None:
        raise subprocess.CalledProcessError(1, command, stderr="Traceback ...\nValueError: boom")

    monkeypatch.setattr(subprocess, "run", failing_child)
    with pytest.raises(SystemExit, match=r"(?s)variant '96 px' failed:.*ValueError: boom"):
        epoch_cost.main(["--variant", "96 px", "--variant", "64 px", "base.image_size=64"])


@pytest.mark.usefixtures("project")
def test_variants_are_interleaved_and_compared_by_median_after_the_first_epoch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []
    times = {"": [[9.0, 4.0, 6.0, 5.0], [9.0, 5.0, 7.0, 6.0]], "64": [[9.0, 2.0, 3.0, 4.0]] * 2}
    times["64"][1] = [9.0, 2.0, 3.0, 10.0]  # one stalled epoch: the mean moves, not the median
    faults = {"": [9e6, 1e6, 3e6, 2e6], "64": [9e6, 5e5, 5e5, 5e5]}

    def fake_child(command: list[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        """What a child prints, without its training (the parent's plumbing is under test)."""
        overrides = command[command.index("--child") + 1 :]
        calls.append(overrides)
        key = "64" if overrides else ""
        seconds = times[key][sum(1 for c in calls if c == overrides) - 1]
        out = json.dumps({"seconds": seconds, "minor_faults": faults[key]})
        return subprocess.CompletedProcess(command, 0, stdout=f"prepare: ...\n{out}\n")

    written: dict[str, str] = {}
    monkeypatch.setattr(subprocess, "run", fake_child)
    monkeypatch.setattr(epoch_cost, "write_section", written.__setitem__)
    monkeypatch.setattr(epoch_cost, "machine_line", lambda: "test machine")
    epoch_cost.main(["--rounds", "2", "--variant", "96", "--variant", "64", "base.image_size=64"])
    assert list(written) == ["epoch-cost"]
    assert calls == [[], ["base.image_size=64"], [], ["base.image_size=64"]]
    out = capsys.readouterr().out
    # the first epoch (graph building) left out of both medians
    assert "round 2, 96: median epoch 6.00 s (mean 6.00 s), 2,000,000 minor page faults" in out
    assert (
        "| 96 | (params.yaml) | 5.00 / 6.00 | 1.00x | 5.00 / 6.00 | 2,000,000 / 2,000,000 |" in out
    )
    row = "| 64 | `base.image_size=64` | 3.00 / 3.00 | 0.55x | 3.00 / 5.00 | 500,000 / 500,000 |"
    assert row in out
    section = written["epoch-cost"]  # docs/benchmarks.md gets the table and the exact command
    assert row in section
    assert "--variant 64 base.image_size=64`" in section


def test_a_child_times_every_epoch_of_a_real_training(tiny_project: Path) -> None:
    epochs = epoch_cost.train_once(["base.image_size=24"], 3, tiny_project)
    assert len(epochs["seconds"]) == len(epochs["minor_faults"]) == 3
    assert all(t > 0 for t in epochs["seconds"])


def test_the_keras_feed_override_fits_the_py_dataset_instead_of_the_batch_dataset(
    tiny_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from classifier.pipeline import train

    built: list[object] = []
    real = train.batch_dataset

    def spy(batches: Any) -> Any:
        built.append(batches)
        return real(batches)

    monkeypatch.setattr(train, "batch_dataset", spy)
    for overrides, calls in (([], 1), ([epoch_cost.KERAS_FEED], 1)):
        epochs = epoch_cost.train_once([*overrides, "base.image_size=24"], 2, tiny_project)
        assert len(epochs["seconds"]) == 2
        assert len(built) == calls  # the second training did not build one
    assert train.batch_dataset is spy  # put back after the keras-feed child


def test_env_overrides_set_or_unset_the_childs_environment_not_params(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "from-the-parent")
    seen: list[tuple[list[str], str | None]] = []

    def fake_child(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen.append((command[command.index("--child") + 1 :], kwargs["env"].get("GLIBC_TUNABLES")))
        out = json.dumps({"seconds": [9.0, 5.0, 5.0], "minor_faults": [1.0, 1.0, 1.0]})
        return subprocess.CompletedProcess(command, 0, stdout=out + "\n")

    monkeypatch.setattr(subprocess, "run", fake_child)
    monkeypatch.setattr(epoch_cost, "write_section", lambda *_: None)
    monkeypatch.setattr(epoch_cost, "machine_line", lambda: "test machine")
    epoch_cost.main(
        [
            "--epochs", "3", "--rounds", "1",
            "--variant", "default", "env:GLIBC_TUNABLES=",
            "--variant", "tuned", "env:GLIBC_TUNABLES=glibc.malloc.top_pad=1", "base.image_size=64",
        ]
    )  # fmt: skip
    assert seen == [([], None), (["base.image_size=64"], "glibc.malloc.top_pad=1")]


def test_a_host_kernels_variant_starts_without_the_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    from classifier.pipeline.kernels import PINNED

    for name, value in PINNED.items():  # what importing classifier.pipeline did in the parent
        monkeypatch.setenv(name, value)
    assert all(epoch_cost.child_environment({})[k] == v for k, v in PINNED.items())
    host = epoch_cost.child_environment({"ELPV_HOST_KERNELS": "1"})
    assert host["ELPV_HOST_KERNELS"] == "1"
    assert not set(PINNED) & set(host)  # TensorFlow chooses, as without the pin
    off = epoch_cost.child_environment({"ELPV_HOST_KERNELS": "1", "TF_ENABLE_ONEDNN_OPTS": "0"})
    assert [k for k in PINNED if k in off] == ["TF_ENABLE_ONEDNN_OPTS"]
    assert off["TF_ENABLE_ONEDNN_OPTS"] == "0"  # the variant's own setting applies on top


@pytest.mark.parametrize("override", ["env:=1", "env:GLIBC_TUNABLES"])
def test_a_malformed_env_override_says_the_form(override: str) -> None:
    with pytest.raises(SystemExit, match=r"expected env:NAME=VALUE"):
        epoch_cost.split_overrides([override])


def test_a_bad_section_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        epoch_cost.main(["--section", "Epoch Cost", "--variant", "a", "--variant", "b"])
    assert "use lowercase letters, digits and dashes" in capsys.readouterr().err
