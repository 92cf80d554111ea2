"""How many CPUs this process may really use.

`os.cpu_count()` reports the host's cores, not the pod's limit: a pod limited to 2 CPUs on a
64-core node would start 64 threads and spend its quota on contention. The cgroup CPU quota
(cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`) is the limit Kubernetes
sets; the affinity mask covers `taskset` and cpusets. We take the smaller of the two.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def read_cgroup_file(path: Path) -> str | None:
    """One cgroup control file's stripped text, or None where it is missing or unreadable."""
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs granted by the cgroup quota (e.g. 1.5), or None when unlimited or unknown."""
    v2 = read_cgroup_file(root / "cpu.max")  # "max 100000" or "150000 100000"
    if v2 is not None:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                quota, period = int(parts[0]), int(parts[1])
            except ValueError:
                return None
            return quota / period if quota > 0 and period > 0 else None
        return None
    for v1_dir in (root / "cpu", root / "cpu,cpuacct", root):
        quota_text = read_cgroup_file(v1_dir / "cpu.cfs_quota_us")
        period_text = read_cgroup_file(v1_dir / "cpu.cfs_period_us")
        if quota_text is None or period_text is None:
            continue
        try:
            quota, period = int(quota_text), int(period_text)
        except ValueError:
            return None
        return quota / period if quota > 0 and period > 0 else None
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """Whole CPUs to size thread pools by: ceil(cgroup quota), capped by the affinity mask."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        affinity = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is None:
        return max(1, affinity)
    return max(1, min(affinity, math.ceil(quota)))
