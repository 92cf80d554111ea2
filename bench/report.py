"""Write one section of docs/benchmarks.md, leaving the other sections as they are.

Every benchmark script owns one section, fenced by HTML comments, and rewrites only that:
    <!-- BEGIN <name> -->
    ...
    <!-- END <name> -->
"""

from __future__ import annotations

import argparse
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from classifier.host import cpu

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def section_name(value: str) -> str:
    """argparse type of a benchmark's `--section`: a name its BEGIN/END markers can hold."""
    if not re.fullmatch(r"[a-z0-9-]+", value):
        raise argparse.ArgumentTypeError(f"{value!r}: use lowercase letters, digits and dashes")
    return value


def machine_line() -> str:
    """CPU model and SIMD set, usable cores, date: every figure names the machine it came from."""
    info = cpu()
    isa = "" if info["vector_isa"] == "unknown" else f" ({info['vector_isa']})"
    cores = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return f"{info['model']}{isa}, {cores} cores, {datetime.now(UTC):%Y-%m-%d}"


_MARKER = re.compile(r"<!-- (BEGIN|END) (\S+) -->")


def section_names(text: str) -> list[str]:
    """The sections of `text` in order; ValueError unless each BEGIN is closed by its own END
    before the next BEGIN (a section inside another would be lost when the outer is rewritten)."""
    names: list[str] = []
    open_name: str | None = None
    for match in _MARKER.finditer(text):
        kind, name = match.groups()
        if kind == "BEGIN":
            if open_name is not None:
                raise ValueError(f"section {name!r} begins inside section {open_name!r}")
            if name in names:
                raise ValueError(f"section {name!r} appears twice")
            open_name = name
        elif name != open_name:
            raise ValueError(f"END {name!r} without its BEGIN (open section: {open_name!r})")
        else:
            names.append(name)
            open_name = None
    if open_name is not None:
        raise ValueError(f"section {open_name!r} has no END")
    return names


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    try:
        section_names(text)
    except ValueError as err:
        raise SystemExit(f"{path}: {err}: fix the markers by hand, then rerun") from None
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = (
        pattern.sub(lambda _m: block, text)
        if pattern.search(text)
        else f"{text.rstrip()}\n\n{block}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
