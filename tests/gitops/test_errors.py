"""Every command validates its input: exit code 2, a message that says what is wrong and how
to fix it, and the repository exactly as it was (HEAD and `git status --porcelain`)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def deployed(sandbox):
    """A CI clone with one deploy of staging; returns (clone, source revision)."""
    ci = sandbox.clone("ci")
    revision = sandbox.source_commit(ci, "one")
    result = sandbox.gitops(ci, *sandbox.bump_args("staging", revision))
    assert result.returncode == 0, result.stderr
    return ci, revision


def _assert_refused(sandbox, clone, args: list[str], expected: str) -> None:
    before = sandbox.state(clone)
    origin_before = sandbox.git(sandbox.origin, "for-each-ref")
    result = sandbox.gitops(clone, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in result.stderr
    assert "error:" in result.stderr
    assert sandbox.state(clone) == before
    assert sandbox.git(sandbox.origin, "for-each-ref") == origin_before


def _bump_with(sandbox, revision: str, **overrides: str) -> list[str]:
    args = sandbox.bump_args("staging", revision)
    for flag, value in overrides.items():
        index = args.index(f"--{flag.replace('_', '-')}")
        args[index + 1] = value
    return args


def test_bump_unknown_env_is_refused(sandbox, deployed) -> None:
    ci, revision = deployed
    args = _bump_with(sandbox, revision, env="qa")
    _assert_refused(sandbox, ci, args, "unknown environment 'qa'")


@pytest.mark.parametrize(
    "digest", ["sha256:abc", "md5:" + "0" * 64, "sha256:" + "G" * 64, "0" * 64]
)
def test_bump_malformed_digest_is_refused(sandbox, deployed, digest: str) -> None:
    ci, revision = deployed
    _assert_refused(sandbox, ci, _bump_with(sandbox, revision, digest=digest), "malformed digest")


def test_bump_image_with_tag_is_refused(sandbox, deployed) -> None:
    ci, revision = deployed
    args = _bump_with(sandbox, revision, image="ghcr.io/org/elpv-classifier:latest")
    _assert_refused(sandbox, ci, args, "carries a tag or digest")


def test_bump_dirty_tree_is_refused(sandbox, deployed) -> None:
    ci, _ = deployed
    newer = sandbox.source_commit(ci, "two")
    (ci / "src" / "app.py").write_text("# uncommitted edit\n")
    _assert_refused(sandbox, ci, sandbox.bump_args("staging", newer), "uncommitted changes")


def test_bump_overlay_without_images_entry_is_refused(sandbox) -> None:
    ci = sandbox.clone("ci")
    kustomization = ci / "overlays/staging/kustomization.yaml"
    kustomization.write_text(kustomization.read_text().split("images:")[0])
    sandbox.git(ci, "commit", "--quiet", "-am", "drop the image line")
    revision = sandbox.source_commit(ci, "one")
    _assert_refused(sandbox, ci, sandbox.bump_args("staging", revision), "no `images:` entry named")


def test_bump_unknown_source_revision_is_refused(sandbox, deployed) -> None:
    ci, _ = deployed
    args = _bump_with(sandbox, "f" * 40)
    _assert_refused(sandbox, ci, args, "is not a commit in this repository")


def test_bump_invalid_model_card_is_refused(sandbox, deployed) -> None:
    ci, _ = deployed
    newer = sandbox.source_commit(ci, "two")
    card = sandbox.root / "broken-card.json"
    card.write_text(json.dumps({"schema_version": 1, "metrics": {}}))
    args = _bump_with(sandbox, newer, model_card=str(card))
    _assert_refused(sandbox, ci, args, "metrics lack")


def test_bump_missing_arguments_are_named(sandbox, deployed) -> None:
    ci, revision = deployed
    _assert_refused(sandbox, ci, ["bump", "--env", "staging", "--tag", revision], "--image")


def test_bump_with_local_unpushed_commit_is_refused(sandbox, deployed) -> None:
    ci, _ = deployed
    newer = sandbox.source_commit(ci, "two")
    (ci / "notes.txt").write_text("local only\n")
    sandbox.git(ci, "add", "notes.txt")
    sandbox.git(ci, "commit", "--quiet", "-m", "not pushed")
    _assert_refused(sandbox, ci, sandbox.bump_args("staging", newer), "not on origin/main")


def test_rollback_without_earlier_deploy_is_refused(sandbox, deployed) -> None:
    ci, _ = deployed
    _assert_refused(sandbox, ci, ["rollback", "--env", "staging"], "no deploy commit to roll back")


def test_rollback_to_unknown_revision_is_refused(sandbox, deployed) -> None:
    ci, _ = deployed
    _assert_refused(sandbox, ci, ["rollback", "--env", "staging", "--to", "0123456789"], "matches")


def test_rollback_unknown_env_is_refused(sandbox, deployed) -> None:
    ci, _ = deployed
    _assert_refused(sandbox, ci, ["rollback", "--env", "../prod"], "unknown environment")


def test_promote_same_env_is_refused(sandbox, deployed) -> None:
    ci, _ = deployed
    args = ["promote", "--from", "staging", "--to", "staging"]
    _assert_refused(sandbox, ci, args, "same environment")


def test_promote_from_env_without_build_is_refused(sandbox, deployed) -> None:
    ci, _ = deployed
    args = ["promote", "--from", "prod", "--to", "staging"]
    _assert_refused(sandbox, ci, args, "pins no tag and digest")


def test_status_unknown_env_is_refused(sandbox, deployed) -> None:
    ci, _ = deployed
    _assert_refused(sandbox, ci, ["status", "--env", "qa"], "unknown environment")
