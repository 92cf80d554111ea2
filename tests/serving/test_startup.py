"""What a start imports (docs/serving.md "Start-up"): each test fails if a cut comes back.

Each check runs in a fresh interpreter, since this test process has imported much already."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _run(code: str, model_dir: Path) -> None:
    env = {
        **os.environ,
        "CLASSIFIER_MODEL_DIR": str(model_dir),
        "CLASSIFIER_ALLOW_UNAUTHENTICATED": "true",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("setting", "threads"), [(None, 1), ("2", 2)])
def test_main_runs_numpy_blas_on_one_thread_unless_told(setting: str | None, threads: int) -> None:
    """OpenBLAS's threads spin at import, costing a start as much CPU as NumPy's import; the
    service calls no BLAS. An operator's OPENBLAS_NUM_THREADS wins. main() stops at the missing
    model folder, after it has imported NumPy."""
    pytest.importorskip("threadpoolctl")  # reads the pool size from the loaded library
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env |= {"CLASSIFIER_MODEL_DIR": "/nonexistent", "CLASSIFIER_ALLOW_UNAUTHENTICATED": "true"}
    if setting is not None:
        env["OPENBLAS_NUM_THREADS"] = setting
    code = (
        "import sys, threadpoolctl\n"
        "from classifier.serving.__main__ import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert 'cannot start' in str(exc), exc\n"
        "assert 'numpy' in sys.modules\n"
        "print([p['num_threads'] for p in threadpoolctl.threadpool_info()\n"
        "       if p['internal_api'] == 'openblas'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"[{threads}]"


def test_main_freezes_what_start_up_built_so_collections_skip_it(tiny_model_dir: Path) -> None:
    """The objects of the start (tens of thousands) leave the youngest generation frozen, so
    the first collections after the pause do not walk them all. main() runs up to the point
    where it would serve."""
    _run(
        "import gc, sys\n"
        "import classifier.serving.__main__ as entry\n"
        "class Stop:\n"
        "    def run(self):\n"
        "        frozen, young = gc.get_freeze_count(), gc.get_count()[0]\n"
        "        assert gc.isenabled()\n"
        "        assert frozen > 20000, f'{frozen} objects frozen'\n"
        "        assert young < 1000, f'{young} objects in the youngest generation'\n"
        "        sys.exit(0)\n"
        "entry.graceful_server = lambda config: Stop()\n"
        "entry.main()\n",
        tiny_model_dir,
    )
