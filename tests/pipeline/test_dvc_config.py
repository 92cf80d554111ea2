"""The repository's DVC config keeps `dvc` from leaving files behind on an offline machine.

With usage reports on, every `dvc` command writes one into TMPDIR and hands it to a detached
sender; offline (CI, this sandbox) the file stays there for good, one per command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DVC = Path(sys.executable).with_name("dvc")


def test_dvc_in_the_repository_leaves_nothing_in_tmpdir(tmp_path: Path) -> None:
    # conftest turns reports off for every test through the environment; this one checks the
    # repository's own setting, which is what `make run` and the workflows rely on.
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_NO_ANALYTICS", "DVC_TEST")}
    env["TMPDIR"] = str(tmp_path)
    subprocess.run([str(DVC), "version"], cwd=REPO, env=env, check=True, capture_output=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
