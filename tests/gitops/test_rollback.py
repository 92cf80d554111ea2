"""Rollback is `git revert` of deploy commits: by hand it restores the previous digest exactly;
`gitops rollback` finds the right commit from the trailers, pushes staging, branches prod."""

from __future__ import annotations

import yaml


def _deploy(sandbox, clone, env: str, revision: str, accuracy: float = 0.9) -> str:
    result = sandbox.gitops(clone, *sandbox.bump_args(env, revision, accuracy=accuracy))
    assert result.returncode == 0, result.stderr
    return sandbox.git(clone, "rev-parse", "HEAD")


def _digest(text: str) -> str:
    images = yaml.safe_load(text)["images"]
    return next(i["digest"] for i in images if i["name"] == "elpv-classifier")


def _staging_on_origin(sandbox) -> str:
    return _digest(sandbox.origin_file("overlays/staging/kustomization.yaml"))


def test_git_revert_of_deploy_commit_restores_previous_digest_exactly(sandbox) -> None:
    ci = sandbox.clone("ci")
    _deploy(sandbox, ci, "staging", sandbox.source_commit(ci, "one"))
    kustomization = ci / "overlays/staging/kustomization.yaml"
    card = ci / "overlays/staging/model-card.json"
    before = kustomization.read_bytes(), card.read_bytes()
    deploy = _deploy(sandbox, ci, "staging", sandbox.source_commit(ci, "two"), 0.95)
    assert kustomization.read_bytes() != before[0]

    sandbox.git(ci, "revert", "--no-edit", deploy)

    assert (kustomization.read_bytes(), card.read_bytes()) == before


def test_rollback_staging_reverts_latest_deploy_and_pushes(sandbox) -> None:
    ci = sandbox.clone("ci")
    revisions = [sandbox.source_commit(ci, f"change {i}") for i in range(3)]
    deploys = [_deploy(sandbox, ci, "staging", rev) for rev in revisions]

    # An empty --to is what the rollback workflow passes when its input is left blank.
    result = sandbox.gitops(ci, "rollback", "--env", "staging", "--to", "")

    assert result.returncode == 0, result.stderr
    assert _staging_on_origin(sandbox) == sandbox.digest_for(revisions[1])
    message = sandbox.git(sandbox.origin, "log", "-1", "--format=%B", "main")
    assert f"This reverts commit {deploys[2]}." in message
    assert "Deploy-Action: rollback" in message
    assert f"Source-Revision: {revisions[1]}" in message

    # A second rollback skips the reverted deploy and goes one further back.
    again = sandbox.gitops(ci, "rollback", "--env", "staging")
    assert again.returncode == 0, again.stderr
    assert _staging_on_origin(sandbox) == sandbox.digest_for(revisions[0])


def test_rollback_to_given_revision_reverts_everything_after_it(sandbox) -> None:
    ci = sandbox.clone("ci")
    revisions = [sandbox.source_commit(ci, f"change {i}") for i in range(3)]
    for rev in revisions:
        _deploy(sandbox, ci, "staging", rev)
    start = sandbox.git(sandbox.origin, "rev-parse", "main")

    result = sandbox.gitops(ci, "rollback", "--env", "staging", "--to", revisions[0][:10])

    assert result.returncode == 0, result.stderr
    assert _staging_on_origin(sandbox) == sandbox.digest_for(revisions[0])
    assert sandbox.git(sandbox.origin, "rev-list", "--count", f"{start}..main") == "1"


def test_rollback_recognises_a_manual_git_revert(sandbox) -> None:
    ci = sandbox.clone("ci")
    revisions = [sandbox.source_commit(ci, f"change {i}") for i in range(3)]
    deploys = [_deploy(sandbox, ci, "staging", rev) for rev in revisions]
    sandbox.git(ci, "revert", "--no-edit", deploys[2])
    sandbox.git(ci, "push", "--quiet", "origin", "main")

    result = sandbox.gitops(ci, "rollback", "--env", "staging")

    assert result.returncode == 0, result.stderr
    assert _staging_on_origin(sandbox) == sandbox.digest_for(revisions[0])


def test_rollback_prod_makes_a_branch_and_leaves_main_alone(sandbox) -> None:
    ci = sandbox.clone("ci")
    revisions = [sandbox.source_commit(ci, f"change {i}") for i in range(2)]
    deploys = [_deploy(sandbox, ci, "prod", rev) for rev in revisions]
    main_before = sandbox.git(sandbox.origin, "rev-parse", "main")
    body_file = sandbox.root / "rollback.md"

    result = sandbox.gitops(ci, "rollback", "--env", "prod", "--body-file", str(body_file))

    assert result.returncode == 0, result.stderr
    assert sandbox.git(sandbox.origin, "rev-parse", "main") == main_before
    branch = next(
        b
        for b in sandbox.git(sandbox.origin, "branch", "--format=%(refname:short)").split()
        if b.startswith("rollback/prod-")
    )
    assert _digest(
        sandbox.origin_file("overlays/prod/kustomization.yaml", branch)
    ) == sandbox.digest_for(revisions[0])
    assert deploys[1][:12] in body_file.read_text()


def test_bump_after_rollback_moves_forward_again(sandbox) -> None:
    ci = sandbox.clone("ci")
    revisions = [sandbox.source_commit(ci, f"change {i}") for i in range(2)]
    for rev in revisions:
        _deploy(sandbox, ci, "staging", rev)
    assert sandbox.gitops(ci, "rollback", "--env", "staging").returncode == 0
    fix = sandbox.source_commit(ci, "fix the regression")

    result = sandbox.gitops(ci, *sandbox.bump_args("staging", fix))

    assert result.returncode == 0, result.stderr
    assert _staging_on_origin(sandbox) == sandbox.digest_for(fix)
