"""bench/thread_settings.py's argument errors (the timing itself is a benchmark, not a test)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import bench.thread_settings as thread_settings  # the repo root is not on the import path

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [["--epochs", "1"], ["--rounds", "0"]])
def test_too_few_epochs_or_rounds_is_refused_with_the_bounds(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match=r"--epochs must be >= 2 .* and --rounds >= 1"):
        thread_settings.main(argv)


def test_without_prepared_data_it_says_which_command_makes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")  # where the prepared data would be
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        SystemExit, match=r"prepared/train\.npz not found: run `make pipeline` first"
    ):
        thread_settings.main([])


def test_every_setting_names_only_knobs_the_child_applies() -> None:
    known = {"intra", "inter", "onednn"}
    assert thread_settings.SETTINGS["default"] == {}
    for setting in thread_settings.SETTINGS.values():
        assert set(setting) <= known
        assert ("intra" in setting) == ("inter" in setting)  # set together or not at all
