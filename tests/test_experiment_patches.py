"""docs/experiments/ keeps code that waits off main as patches (its README): each must still
apply to main on its own, or it is lost the moment main moves under it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATCHES = sorted((ROOT / "docs/experiments").glob("*.patch"))


def test_the_experiments_folder_has_patches_and_lists_each() -> None:
    assert PATCHES, "docs/experiments/ has no patches: is the folder still needed?"
    readme = (ROOT / "docs/experiments/README.md").read_text(encoding="utf-8")
    assert [p.name for p in PATCHES if f"`{p.name}`" not in readme] == []


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout"
)
@pytest.mark.parametrize("patch", PATCHES, ids=[p.name for p in PATCHES])
def test_each_patch_applies_to_this_tree_on_its_own(patch: Path) -> None:
    result = subprocess.run(
        ["git", "apply", "--check", str(patch)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"{patch.name} no longer applies: rebase it\n{result.stderr}"
