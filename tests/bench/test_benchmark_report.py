"""docs/benchmarks.md is one file written by many benchmarks, a section each: the markers must
stay well formed, or rewriting one section would swallow or duplicate another."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from classifier.host import vector_isa

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.report import (  # the repo root is not on the import path
    BENCHMARKS_MD,
    machine_line,
    section_names,
    write_section,
)


def test_committed_benchmarks_file_has_well_formed_unique_sections() -> None:
    names = section_names(BENCHMARKS_MD.read_text(encoding="utf-8"))
    assert {"model-quality", "serving", "sandbox", "ci", "members"} <= set(names)


def test_rewriting_a_section_leaves_the_others_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    write_section("a", "first a", path)
    write_section("b", "only b", path)
    write_section("a", "second a", path)
    text = path.read_text(encoding="utf-8")
    assert section_names(text) == ["a", "b"]
    assert "second a" in text
    assert "first a" not in text
    assert "only b" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- BEGIN a -->\n<!-- BEGIN b -->\n<!-- END b -->\n<!-- END a -->\n", "inside"),
        ("<!-- BEGIN a -->\n<!-- END a -->\n<!-- BEGIN a -->\n<!-- END a -->\n", "twice"),
        ("<!-- BEGIN a -->\n", "no END"),
        ("<!-- END a -->\n", "without its BEGIN"),
    ],
)
def test_malformed_markers_are_refused_before_anything_is_written(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit, match=message):
        write_section("c", "new", path)
    assert path.read_text(encoding="utf-8") == text


def test_the_machine_line_reads_this_machine() -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    flags = next(line for line in cpuinfo.splitlines() if line.startswith("flags"))
    isa = vector_isa(set(flags.split(":", 1)[1].split()))
    assert f" ({isa}), " in machine_line()  # nproc's count follows OMP_NUM_THREADS: not checked
