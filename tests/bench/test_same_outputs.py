"""bench/same_outputs.py: which outputs count as the same (the runs themselves take minutes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.same_outputs import same_file  # the repo root is not on the import path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_summary_counts_what_was_computed_not_how_long_it_took(tmp_path: Path) -> None:
    def summary(run: str, seconds: float, accuracy: float) -> Path:
        content = {"train_seconds": seconds, "val_accuracy": accuracy}
        return write(tmp_path / run / "train.json", json.dumps(content))

    old = summary("old", 49.7, 0.8)
    assert same_file(old, summary("slower", 71.5, 0.8))
    assert not same_file(old, summary("other", 49.7, 0.81))


def test_any_other_file_must_match_byte_for_byte(tmp_path: Path) -> None:
    old = write(tmp_path / "old" / "roc.csv", "fpr,tpr\n0,1\n")
    assert same_file(old, write(tmp_path / "same" / "roc.csv", "fpr,tpr\n0,1\n"))
    assert not same_file(old, write(tmp_path / "other" / "roc.csv", "fpr,tpr\n0,1.0\n"))
    # metrics.json has no volatile key: a changed number anywhere in it is a difference
    metrics = write(tmp_path / "old" / "metrics.json", '{"accuracy": 0.8}')
    assert not same_file(metrics, write(tmp_path / "new" / "metrics.json", '{"accuracy": 0.81}'))
