"""The CPU a model was trained on. Standard library only.

Unpinned, TensorFlow's kernels sum in an order that depends on the CPU's vector set and core
count, so the same seeds train other weights on another CPU; the pipeline pins them
(classifier.pipeline.kernels, docs/pipeline.md "Same weights on every CPU"). metrics/train.json
and the model card record the CPU and the pin, so a model that differs can be traced.
"""

from __future__ import annotations

import platform
from pathlib import Path


def vector_isa(flags: set[str]) -> str:
    """The widest SIMD set in a /proc/cpuinfo `flags` line. Hosts that share a model name ("AMD
    EPYC") differ here, and so do their epoch times and their weights."""
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            return name
    return "no AVX"


def cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """{"model": ..., "vector_isa": ...} of the first processor; "unknown" where the file (not
    Linux) or a field is missing."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        lines = []
    fields: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return {
        "model": fields.get("model name") or platform.processor() or "unknown",
        "vector_isa": vector_isa(set(fields["flags"].split())) if "flags" in fields else "unknown",
    }
