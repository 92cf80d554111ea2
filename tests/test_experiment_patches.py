"""docs/experiments/ keeps code that waits off main as patches (its README). Each patch names
the main commit it was made on (`base-commit:`, as `git format-patch --base` writes it) and
must apply to that commit's tree: then it can always be replayed there and rebased forward,
however far main has moved since. A patch that no longer applies to its own base (edited by
hand, truncated, a wrong base) is lost code, and fails here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATCHES = sorted((ROOT / "docs/experiments").glob("*.patch"))
BASE_COMMIT = re.compile(r"^base-commit: ([0-9a-f]{40})$", re.MULTILINE)

needs_git = pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout"
)


def git(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, env=env
    )


def base_commit(patch: Path) -> str:
    bases: list[str] = BASE_COMMIT.findall(patch.read_text(encoding="utf-8"))
    assert len(bases) == 1, (
        f"{patch.name} names {len(bases)} base commits, not one: export it with "
        "`git format-patch --base=<main commit it was made on> --stdout <base>..HEAD`"
    )
    return bases[0]


def test_the_experiments_folder_has_patches_and_lists_each() -> None:
    assert PATCHES, "docs/experiments/ has no patches: is the folder still needed?"
    readme = (ROOT / "docs/experiments/README.md").read_text(encoding="utf-8")
    assert [p.name for p in PATCHES if f"`{p.name}`" not in readme] == []


@pytest.mark.parametrize("patch", PATCHES, ids=[p.name for p in PATCHES])
def test_each_patch_names_one_base_commit(patch: Path) -> None:
    base_commit(patch)


@needs_git
@pytest.mark.parametrize("patch", PATCHES, ids=[p.name for p in PATCHES])
def test_each_patch_applies_to_its_base_commit(patch: Path, tmp_path: Path) -> None:
    base = base_commit(patch)
    if git("cat-file", "-e", f"{base}^{{commit}}").returncode != 0:
        shallow = git("rev-parse", "--is-shallow-repository").stdout.strip() == "true"
        hint = "this clone is shallow: `git fetch --unshallow`" if shallow else "a wrong base?"
        pytest.fail(f"{patch.name}: base commit {base} is not in this clone ({hint})")
    assert git("merge-base", "--is-ancestor", base, "HEAD").returncode == 0, (
        f"{patch.name}: base commit {base} is not in this branch's history: base a patch on a "
        "commit of main"
    )
    # The base's tree in a scratch index: no checkout, and the working tree is never touched.
    env = {**os.environ, "GIT_INDEX_FILE": str(tmp_path / "index")}
    read = git("read-tree", base, env=env)
    assert read.returncode == 0, read.stderr
    result = git("apply", "--cached", "--check", str(patch), env=env)
    assert result.returncode == 0, (
        f"{patch.name} does not apply to its base commit {base[:12]}: re-export it from a "
        f"branch where it applies (docs/experiments/README.md)\n{result.stderr}"
    )
