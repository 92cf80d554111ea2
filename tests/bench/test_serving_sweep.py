"""bench.serving's batch-size sweep: its report and its input check (the load itself needs
vegeta and a model: `python -m bench.serving --batch-sizes ...`); and the machine's busy share
that every load step records."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import bench.serving as serving  # the repo root is not on the import path

Load = serving.Load


def _load(rps: float, p99: float) -> Load:
    return Load(
        requests=int(rps),
        rps=rps,
        success=1.0,
        p50_ms=p99 / 2,
        p95_ms=p99,
        p99_ms=p99,
        max_ms=p99,
        status_codes={"200": int(rps)},
        load_avg=1.0,
        server_cpu_ms=3.0,
    )


def test_sweep_rows_give_medians_and_the_ratio_to_the_last_config() -> None:
    results = {
        "max batch 4": {16: [_load(400, 50), _load(440, 48), _load(420, 52)]},
        "max batch 16": {16: [_load(500, 60), _load(400, 55), _load(480, 58)]},
    }
    rows = serving.sweep_rows(results)
    assert rows[0].endswith("| req/s / max batch 16's |")
    # Median req/s 420, median p99 50.0; per-round ratios 0.8, 1.1, 0.875 -> median 0.875.
    assert rows[2] == "| max batch 4 | 16 | 420 (400, 440, 420) | 25.0 | 50.0 | 3.00 | 0.88 |"
    assert rows[3] == "| max batch 16 | 16 | 480 (500, 400, 480) | 29.0 | 58.0 | 3.00 | 1.00 |"


def test_a_batch_size_below_one_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        serving.main(["--batch-sizes", "4", "0"])
    assert exc.value.code == 2
    assert "every size must be >= 1" in capsys.readouterr().err


def test_machine_times_count_busy_and_idle_ticks() -> None:
    total0, idle0 = serving.machine_times()
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # busy: the machine's total must move more than idle
        pass
    total1, idle1 = serving.machine_times()
    assert total1 - total0 > idle1 - idle0 >= 0
