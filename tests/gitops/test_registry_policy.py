"""`gitops bump` and `gitops promote` deploy only from the registries the repository allows
(gitops.toml) and only what the registry confirms; refused deploys change nothing (exit 2).
The registry itself is exercised in tests/container/test_registry_check.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitops.core.errors import UsageError
from gitops.core.registry import RegistryPolicy

REPO_ROOT = Path(__file__).resolve().parents[2]


def _with_config(sandbox, clone: Path, allowed: str) -> None:
    (clone / "gitops.toml").write_text(f"[registry]\nallowed = [{allowed}]\n")
    sandbox.git(clone, "add", "gitops.toml")
    sandbox.git(clone, "commit", "--quiet", "-m", "registry policy")
    sandbox.git(clone, "push", "--quiet", "origin", "HEAD:main")


def _refused(sandbox, clone: Path, args: list[str], expected: str) -> None:
    before = sandbox.state(clone)
    origin_before = sandbox.git(sandbox.origin, "for-each-ref")
    result = sandbox.gitops(clone, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in result.stderr, result.stderr
    assert sandbox.state(clone) == before
    assert sandbox.git(sandbox.origin, "for-each-ref") == origin_before


def test_bump_refuses_a_registry_outside_the_allow_list(sandbox) -> None:
    ci = sandbox.clone("ci")
    _with_config(sandbox, ci, '"ghcr.io/elpv-gitops/"')
    revision = sandbox.source_commit(ci, "one")
    _refused(
        sandbox,
        ci,
        sandbox.bump_args("staging", revision),
        "is not in a registry this repository deploys from (ghcr.io/elpv-gitops/)",
    )


def test_bump_asks_the_registry_before_committing(sandbox) -> None:
    """Allowed, but the registry cannot confirm the digest (nothing listens on port 1)."""
    ci = sandbox.clone("ci")
    _with_config(sandbox, ci, '"127.0.0.1:1/"')
    revision = sandbox.source_commit(ci, "one")
    args = sandbox.bump_args("staging", revision)
    args[args.index("--image") + 1] = "127.0.0.1:1/elpv-classifier"
    _refused(sandbox, ci, args, "cannot reach the registry 127.0.0.1:1")


def test_promote_refuses_a_build_from_a_registry_no_longer_allowed(sandbox) -> None:
    ci = sandbox.clone("ci")
    revision = sandbox.source_commit(ci, "one")
    assert sandbox.gitops(ci, *sandbox.bump_args("staging", revision)).returncode == 0
    _with_config(sandbox, ci, '"ghcr.io/elpv-gitops/"')
    _refused(
        sandbox,
        ci,
        ["promote", "--from", "staging", "--to", "prod"],
        f"image {sandbox.IMAGE} is not in a registry this repository deploys from",
    )


def test_without_config_the_check_is_skipped_and_says_so(sandbox) -> None:
    ci = sandbox.clone("ci")
    revision = sandbox.source_commit(ci, "one")
    result = sandbox.gitops(ci, *sandbox.bump_args("staging", revision))
    assert result.returncode == 0, result.stderr
    assert "no gitops.toml" in result.stderr
    assert "digest check skipped" in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[registry\n", "not valid TOML"),
        ("[registry]\n", "no [registry] allowed list"),
        ('[registry]\nallowed = ["ghcr.io"]\n', "is not a registry or repository prefix"),
        ('[registry]\nallowed = ["ghcr.io/org"]\n', "is not a registry or repository prefix"),
    ],
)
def test_a_bad_config_is_refused_with_the_fix(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "gitops.toml").write_text(text)
    with pytest.raises(UsageError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        RegistryPolicy.load(tmp_path)


def test_this_repository_allows_its_own_registry_and_the_local_one_only() -> None:
    policy = RegistryPolicy.load(REPO_ROOT)
    assert policy is not None, "gitops.toml is missing: bump and promote would check nothing"
    assert policy.allowed == ("ghcr.io/elpv-gitops/", "127.0.0.1:5000/")
    policy.check("ghcr.io/elpv-gitops/elpv-classifier")
    for image in ("ghcr.io/elpv-gitops-evil/elpv-classifier", "docker.io/elpv-gitops/x"):
        with pytest.raises(UsageError):
            policy.check(image)
