"""The memory this process may use, from its cgroup (the pod's `limits.memory`).

cgroup v2 `memory.max` ("max" = unlimited), else v1 `memory.limit_in_bytes` (a huge number =
unlimited). Used to size the in-flight request limit when it is not set explicitly.
"""

from __future__ import annotations

from pathlib import Path

from classifier.serving.cpu import CGROUP_ROOT, read_cgroup_file

# cgroup v1 reports "no limit" as a page-rounded LONG_MAX; anything above 1 PiB is no limit.
_NO_LIMIT_ABOVE = 1 << 50


def cgroup_memory_limit(root: Path = CGROUP_ROOT) -> int | None:
    """Bytes the cgroup allows, or None when unlimited or unknown."""
    candidates = [root / "memory.max"] + [
        d / "memory.limit_in_bytes" for d in (root / "memory", root)
    ]
    for path in candidates:
        text = read_cgroup_file(path)
        if text is None:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            return None
        return value if 0 < value < _NO_LIMIT_ABOVE else None
    return None
