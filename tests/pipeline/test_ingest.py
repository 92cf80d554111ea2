"""Ingest rebuilds data/raw from the installed package, byte for byte, or fails loudly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from classifier.pipeline.common import PipelineError, read_labels
from classifier.pipeline.ingest import (
    DataHashMismatch,
    dir_md5,
    ingest,
    main,
    recorded_hash,
)

REPO = Path(__file__).resolve().parents[2]
DATA_DVC = REPO / "data.dvc"


def write_dvc_file(path: Path, md5: str) -> Path:
    path.write_text(f"outs:\n- md5: {md5}\n  hash: md5\n  path: raw\n", encoding="utf-8")
    return path


def test_ingest_rebuilds_the_hash_recorded_in_data_dvc(tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    assert ingest(dest, DATA_DVC) == recorded_hash(DATA_DVC)
    samples = read_labels(dest)
    assert len(samples) == 2624
    assert {s.cell_type for s in samples} == {"mono", "poly"}
    # A second call sees matching data and leaves it alone.
    assert ingest(dest, DATA_DVC) == recorded_hash(DATA_DVC)


def test_ingest_fails_loudly_when_the_hash_does_not_match(tmp_path: Path) -> None:
    dvc_file = write_dvc_file(tmp_path / "data.dvc", "0" * 32 + ".dir")
    dest = tmp_path / "raw"
    with pytest.raises(DataHashMismatch, match="Nothing was written"):
        ingest(dest, dvc_file)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data.dvc"]  # no staging left behind


def test_ingest_cli_exits_nonzero_on_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dvc_file = write_dvc_file(tmp_path / "data.dvc", "f" * 32 + ".dir")
    with pytest.raises(SystemExit) as exc:
        main(["--dest", str(tmp_path / "raw"), "--dvc-file", str(dvc_file)])
    assert exc.value.code == 1
    assert "ERROR" in capsys.readouterr().err


def test_ingest_refuses_to_overwrite_different_data(tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / "labels.csv").write_text("path,probability,type\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="refusing to overwrite"):
        ingest(dest, DATA_DVC)
    assert (dest / "labels.csv").read_text(encoding="utf-8") == "path,probability,type\n"


def test_dir_md5_equals_the_hash_dvc_records(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "b.txt").write_bytes(b"bee\n")
    (data / "sub" / "a.bin").write_bytes(bytes(range(256)))
    (data / "a-b.txt").write_bytes(b"")  # sorts between "a" and "b": order matters in the hash
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent))
    assert dvc is not None
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    subprocess.run([dvc, "add", "-q", "data"], cwd=tmp_path, check=True)
    assert dir_md5(data) == recorded_hash(tmp_path / "data.dvc")
