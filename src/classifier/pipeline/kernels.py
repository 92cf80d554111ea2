"""TensorFlow's CPU kernels, pinned so that the same commit trains the same weights on a given CPU
whatever its core count and vector set (across makes of CPU it does not: see below).

Three things decide the order in which a CPU sums, and so the last bits of every weight, which
a long training amplifies into another model (docs/pipeline.md, "Same weights on every CPU"):
- whether TensorFlow routes convolutions through oneDNN: by default only on CPUs with AVX-512
  VNNI, BF16 or AMX, so an AVX2 host and an AVX-512 host run different kernels;
- the widest vector set oneDNN dispatches to: its sgemm serves TensorFlow's matmuls even with
  the oneDNN ops off, so an AVX-512 host sums differently from an AVX2 one;
- the number of intra-op threads: TensorFlow splits each reduction by the size of its pool,
  which defaults to the number of cores.

`pin_cpu_kernels()` fixes all three: oneDNN on, its vector set capped at AVX2 (which every x86-64
host this project supports has: Intel since 2013, AMD since 2015), and a fixed pool of threads
whatever the core count. TensorFlow reads these variables once, when it loads, so the package
`classifier.pipeline` calls it on import: every stage module is inside the package, and so the
pin comes before any of them imports TensorFlow. `require_pinned()` is the stages' check.

Measured: the same bits on one core and two, and the same AVX2 kernels on an AVX-512 host; an
AMD (AVX2) and an Intel (AVX-512 + AMX) host still sum differently under the pin, by something
these variables do not reach (docs/pipeline.md has both trainings, compared paired).

`ELPV_HOST_KERNELS=1` lets TensorFlow choose for the host: faster on AVX-512 hosts, but the
weights then depend on the CPU, and `metrics/train.json` says so.
"""

from __future__ import annotations

import os
import sys

HOST_KERNELS_ENV = "ELPV_HOST_KERNELS"

# The pool size is part of the contract: 2 uses every core of the 2-core machines the time budget
# is stated for; a bigger host runs the same 2 threads (a change here retrains the model).
PINNED = {
    "TF_ENABLE_ONEDNN_OPTS": "1",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "TF_NUM_INTRAOP_THREADS": "2",
    "TF_NUM_INTEROP_THREADS": "1",
}


class KernelPinError(RuntimeError):
    """TensorFlow was loaded before the pin, with other settings: the pin cannot take effect."""


def host_kernels() -> bool:
    """Whether the user asked for the host's own kernels instead of the pinned ones."""
    return os.environ.get(HOST_KERNELS_ENV, "").strip().lower() in {"1", "true", "yes"}


def _unpinned() -> list[str]:
    return sorted(k for k, v in PINNED.items() if os.environ.get(k) != v)


# Set by pin_cpu_kernels: the variables TensorFlow had already loaded without.
_loaded_without: list[str] = []


def pin_cpu_kernels() -> None:
    """Set the pinned variables (unless ELPV_HOST_KERNELS=1). Idempotent; must come before
    TensorFlow loads, or TensorFlow keeps what it read (require_pinned() then refuses)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if host_kernels():
        return
    if "tensorflow" in sys.modules:
        _loaded_without[:] = _unpinned()
    os.environ.update(PINNED)


def require_pinned() -> None:
    """Raise KernelPinError when the pin cannot have taken effect in this process."""
    if _loaded_without and not host_kernels():
        raise KernelPinError(
            "TensorFlow was imported before classifier.pipeline, so it runs without "
            f"{', '.join(_loaded_without)} pinned and would train CPU-dependent weights: import "
            f"classifier.pipeline first, or set {HOST_KERNELS_ENV}=1 to use the host's kernels"
        )


def kernel_record() -> dict[str, str]:
    """What metrics/train.json records: the pinned settings, or that the host chose."""
    if host_kernels():
        return {"kernels": "host (ELPV_HOST_KERNELS=1): weights depend on the CPU"}
    return {"kernels": "pinned", **{k: os.environ.get(k, "") for k in PINNED}}
