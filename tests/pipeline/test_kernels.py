"""The pinned CPU kernels: the same weights whatever the host's core count, AVX2 kernels on all.

A host with fewer cores is played on this one by confining the process to one core: unpinned,
TensorFlow sizes its thread pools by the cores and trains other weights (the control below);
pinned, not a bit may change. The vector set cannot be varied under the pin (it sets
ONEDNN_MAX_CPU_ISA=AVX2 over any value a host has), so that part is checked as a setting here;
whether another CPU's AVX2 kernels give the same bits is a cross-host question: docs/pipeline.md
"Same weights on every CPU".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from classifier.pipeline import kernels

PROBE = Path(__file__).with_name("kernel_probe.py")


def _weights(tmp_path: Path, name: str, env: dict[str, str], *flags: str) -> np.ndarray:
    out = tmp_path / f"{name}.npy"
    clean = {k: v for k, v in os.environ.items() if k not in kernels.PINNED}
    clean.pop(kernels.HOST_KERNELS_ENV, None)
    subprocess.run(
        [sys.executable, str(PROBE), str(out), *flags],
        env={**clean, **env},
        check=True,
        timeout=600,
    )
    return np.load(out)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_pinned_kernels_train_the_same_weights_on_another_core_count(tmp_path: Path) -> None:
    here = _weights(tmp_path, "pinned", {})
    elsewhere = _weights(tmp_path, "pinned-1cpu", {}, "--one-cpu")
    assert np.array_equal(here, elsewhere), f"max |diff| {np.abs(here - elsewhere).max():.3g}"

    # Control: without the pin the same two hosts train other weights, so the check above can
    # see a difference when there is one.
    host = {kernels.HOST_KERNELS_ENV: "1"}
    here = _weights(tmp_path, "host", host)
    elsewhere = _weights(tmp_path, "host-1cpu", host, "--one-cpu")
    assert not np.array_equal(here, elsewhere)


@pytest.mark.parametrize("host_cap", ["AVX512_CORE_AMX", "AVX"])
def test_the_pin_sets_the_vector_set_over_the_hosts_own(
    host_cap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(kernels.HOST_KERNELS_ENV, raising=False)
    monkeypatch.setattr(kernels, "_loaded_without", [])  # TensorFlow may be loaded here
    for name in kernels.PINNED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", host_cap)
    kernels.pin_cpu_kernels()
    assert {k: os.environ[k] for k in kernels.PINNED} == kernels.PINNED
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def test_training_refuses_to_run_when_tensorflow_loaded_before_the_pin(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in kernels.PINNED}
    clean.pop(kernels.HOST_KERNELS_ENV, None)
    code = (
        "import tensorflow\n"
        "from classifier.pipeline import train\n"
        "train.main(['prepared', 'model.keras', 'train.json', 'plots'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=clean,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "KernelPinError" in result.stderr
    assert "import classifier.pipeline first" in result.stderr


def test_the_record_names_the_pin_or_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kernels.HOST_KERNELS_ENV, raising=False)
    record = kernels.kernel_record()
    assert record["kernels"] == "pinned"
    assert record["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert record["TF_NUM_INTRAOP_THREADS"] == kernels.PINNED["TF_NUM_INTRAOP_THREADS"]
    monkeypatch.setenv(kernels.HOST_KERNELS_ENV, "1")
    assert kernels.kernel_record()["kernels"].startswith("host")
