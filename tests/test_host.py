"""classifier.host: the CPU recorded with every trained model, since its vector set changes the
weights the same seeds train."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier.host import cpu, vector_isa


@pytest.mark.parametrize(
    ("flags", "isa"),
    [
        ({"sse2", "avx", "avx2", "fma", "avx512f", "avx512_bf16"}, "AVX-512"),
        ({"sse2", "avx", "avx2", "fma"}, "AVX2"),
        ({"sse2", "avx"}, "AVX"),
        ({"sse2"}, "no AVX"),
    ],
)
def test_the_widest_vector_set_is_named(flags: set[str], isa: str) -> None:
    assert vector_isa(flags) == isa


def test_the_first_processor_is_read(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx avx2\n\n"
        "processor\t: 1\nmodel name\t: Other CPU\nflags\t\t: fpu sse2 avx avx2 avx512f\n"
    )
    assert cpu(cpuinfo) == {"model": "Test CPU 9000", "vector_isa": "AVX2"}


def test_missing_fields_say_unknown_instead_of_guessing(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\n")
    assert cpu(cpuinfo)["vector_isa"] == "unknown"
    assert cpu(tmp_path / "absent")["vector_isa"] == "unknown"
