"""Thread sizing reads the cgroup quota (v2 and v1) and falls back to the affinity mask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from classifier.serving.cpu import available_cpus, cgroup_cpu_quota

AFFINITY = len(os.sched_getaffinity(0))


def test_cgroup_v2_quota_is_read(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    assert available_cpus(tmp_path) == min(2, AFFINITY)


def test_cgroup_v2_unlimited_falls_back_to_affinity(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    assert available_cpus(tmp_path) == AFFINITY


def test_cgroup_v1_quota_is_read(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 0.5
    assert available_cpus(tmp_path) == 1


def test_cgroup_v1_unlimited_is_minus_one(tmp_path: Path) -> None:
    (tmp_path / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) is None


@pytest.mark.parametrize("content", ["", "garbage", "1 2 3", "x 100000"])
def test_unreadable_quota_falls_back_to_affinity(tmp_path: Path, content: str) -> None:
    (tmp_path / "cpu.max").write_text(content)
    assert available_cpus(tmp_path) == AFFINITY


def test_quota_never_exceeds_affinity(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("6400000 100000\n")  # 64 CPUs granted
    assert available_cpus(tmp_path) == AFFINITY


def test_no_cgroup_files_falls_back_to_affinity(tmp_path: Path) -> None:
    assert available_cpus(tmp_path / "missing") == AFFINITY
