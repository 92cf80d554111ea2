"""docker/prune-images.sh against the real Docker Engine: the project's images tagged with
other commits go; the kept commit's tags (plain, `-b`, `-dirty`) and other repositories stay.
The images are new tags of the pushed test image in repositories of the test's own, so nothing
is built or pulled and no image of the project is touched."""

from __future__ import annotations

import os
import re
import subprocess
import uuid

import pytest

from .conftest import ROOT, PushedImage, docker

pytestmark = pytest.mark.container

SCRIPT = ROOT / "docker" / "prune-images.sh"
REGISTRY = "127.0.0.1:5000"


def _prune(keep: str, repositories: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRUNE_REPOSITORIES": " ".join(repositories)}
    return subprocess.run(
        [str(SCRIPT), keep], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def test_prune_removes_other_commits_and_keeps_the_given_one(pushed_image: PushedImage) -> None:
    run = uuid.uuid4().hex[:8]
    ours = [f"elpv-prune-{run}-serving", f"elpv-prune-{run}-train"]
    keep, other = "a" * 40, "b" * 40
    kept = [
        f"{REGISTRY}/{ours[0]}:{keep}",
        f"{REGISTRY}/{ours[0]}:{keep}-b",
        f"{REGISTRY}/{ours[1]}:{keep}-dirty",
        f"{REGISTRY}/elpv-prune-{run}-not-listed:{other}",  # not in the list: never touched
    ]
    stale = [f"{REGISTRY}/{ours[0]}:{other}", f"{REGISTRY}/{ours[1]}:{other}-b"]
    for ref in kept + stale:
        docker("tag", pushed_image.by_digest, ref)
    try:
        result = _prune(keep, ours)
        assert result.returncode == 0, result.stderr
        assert "removing 2 image tag(s)" in result.stdout
        tags = set(docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split())
        assert not tags & set(stale), f"left behind: {sorted(tags & set(stale))}"
        assert set(kept) <= tags, f"removed: {sorted(set(kept) - tags)}"
    finally:
        docker("image", "rm", *kept, *stale, check=False)


def test_prune_refuses_to_run_without_a_commit() -> None:
    result = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "usage" in result.stderr


def _first_group(pattern: str, text: str) -> str:
    found = re.search(pattern, text, re.MULTILINE)
    assert found is not None, f"{pattern!r} not found"
    return found.group(1)


def test_prune_covers_every_image_name_the_makefiles_push() -> None:
    listed = _first_group(r"PRUNE_REPOSITORIES:=([^}]*)\}", SCRIPT.read_text(encoding="utf-8"))
    pushed = {
        _first_group(rf"^{var}\s*\??:?=\s*(\S+)", (ROOT / "mk" / mk).read_text(encoding="utf-8"))
        for mk, var in (
            ("image.mk", "IMAGE_NAME"),
            ("image.mk", "TEST_IMAGE_NAME"),
            ("train.mk", "TRAIN_IMAGE_NAME"),
        )
    }
    assert pushed == set(listed.split())
