"""`gitops bump` against a real bare origin: trailers, idempotence, the downgrade guard, push
races (one forced deterministically, five real concurrent processes)."""

from __future__ import annotations

import json
import subprocess
import time

import yaml

from classifier.model_card import ModelCard


def _trailers(sandbox, ref: str = "main") -> dict[str, str]:
    message = sandbox.git(sandbox.origin, "log", "-1", "--format=%B", ref)
    parsed = subprocess.run(
        ["git", "interpret-trailers", "--parse"],
        input=message,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(": ", 1) for line in parsed.splitlines())


def _staging_image(sandbox, ref: str = "main") -> dict[str, str]:
    doc = yaml.safe_load(sandbox.origin_file("overlays/staging/kustomization.yaml", ref))
    return next(i for i in doc["images"] if i["name"] == "elpv-classifier")


def test_bump_after_push_lands_with_trailers(sandbox) -> None:
    person, ci = sandbox.clone("person"), sandbox.clone("ci")
    revision = sandbox.source_commit(person, "train: wider first conv layer")
    sandbox.git(ci, "pull", "--quiet")

    result = sandbox.gitops(ci, *sandbox.bump_args("staging", revision, accuracy=0.91))

    assert result.returncode == 0, result.stderr
    assert "deployed" in result.stdout
    trailers = _trailers(sandbox)
    assert trailers["Deploy-Environment"] == "staging"
    assert trailers["Deploy-Action"] == "bump"
    assert trailers["Deploy-Digest"] == sandbox.digest_for(revision)
    assert trailers["Deploy-Tag"] == revision
    assert trailers["Source-Revision"] == revision
    assert trailers["Data-Hash"] == "d" * 32 + ".dir"
    assert trailers["Metric-Accuracy"] == "0.9100"
    assert trailers["Metric-Roc-Auc"] == "0.9400"
    assert _staging_image(sandbox) == {
        "name": "elpv-classifier",
        "newName": sandbox.IMAGE,
        "newTag": revision,
        "digest": sandbox.digest_for(revision),
    }
    card = ModelCard.from_dict(json.loads(sandbox.origin_file("overlays/staging/model-card.json")))
    assert card.git_revision == revision
    # Only the staging overlay changed in the deploy commit.
    changed = sandbox.git(sandbox.origin, "show", "--name-only", "--format=", "main").split()
    assert sorted(changed) == [
        "overlays/staging/kustomization.yaml",
        "overlays/staging/model-card.json",
    ]


def test_bump_renders_with_kustomize(sandbox) -> None:
    ci = sandbox.clone("ci")
    revision = sandbox.source_commit(ci, "serving: faster decode")
    assert sandbox.gitops(ci, *sandbox.bump_args("staging", revision)).returncode == 0

    rendered = subprocess.run(
        [sandbox.env["KUSTOMIZE"], "build", "overlays/staging"],
        cwd=ci,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"image: {sandbox.IMAGE}:{revision}@{sandbox.digest_for(revision)}" in rendered


def test_bump_from_build_file_reads_image_tag_and_digest(sandbox) -> None:
    ci = sandbox.clone("ci")
    revision = sandbox.source_commit(ci, "data: more cells")
    build = sandbox.root / "image.json"
    build.write_text(
        json.dumps(
            {"image": sandbox.IMAGE, "tag": revision, "digest": sandbox.digest_for(revision)}
        )
    )
    card = sandbox.write_card(revision, 0.9)

    result = sandbox.gitops(
        ci, "bump", "--env", "staging", "--from-build", str(build), "--model-card", str(card)
    )

    assert result.returncode == 0, result.stderr
    assert _staging_image(sandbox)["digest"] == sandbox.digest_for(revision)


def test_bump_same_digest_twice_makes_no_commit(sandbox) -> None:
    ci = sandbox.clone("ci")
    revision = sandbox.source_commit(ci, "train: dropout")
    assert sandbox.gitops(ci, *sandbox.bump_args("staging", revision)).returncode == 0
    before = sandbox.git(sandbox.origin, "rev-parse", "main")

    again = sandbox.gitops(ci, *sandbox.bump_args("staging", revision))

    assert again.returncode == 0, again.stderr
    assert "already runs" in again.stdout
    assert sandbox.git(sandbox.origin, "rev-parse", "main") == before
    assert sandbox.git(ci, "status", "--porcelain") == ""


def test_bump_older_build_is_refused_and_changes_nothing(sandbox) -> None:
    ci = sandbox.clone("ci")
    older = sandbox.source_commit(ci, "older")
    newer = sandbox.source_commit(ci, "newer")
    assert sandbox.gitops(ci, *sandbox.bump_args("staging", newer)).returncode == 0
    before, origin_before = sandbox.state(ci), sandbox.git(sandbox.origin, "rev-parse", "main")

    refused = sandbox.gitops(ci, *sandbox.bump_args("staging", older))

    assert refused.returncode == 2
    assert "refusing to downgrade staging" in refused.stderr
    assert "gitops rollback" in refused.stderr  # says how to go back on purpose
    assert sandbox.state(ci) == before
    assert sandbox.git(sandbox.origin, "rev-parse", "main") == origin_before


def test_bump_older_build_with_force_is_deployed(sandbox) -> None:
    ci = sandbox.clone("ci")
    older = sandbox.source_commit(ci, "older")
    newer = sandbox.source_commit(ci, "newer")
    assert sandbox.gitops(ci, *sandbox.bump_args("staging", newer)).returncode == 0

    forced = sandbox.gitops(ci, *sandbox.bump_args("staging", older), "--force")

    assert forced.returncode == 0, forced.stderr
    assert _staging_image(sandbox)["digest"] == sandbox.digest_for(older)


def test_bump_diverged_build_is_refused(sandbox) -> None:
    ci = sandbox.clone("ci")
    base = sandbox.source_commit(ci, "base")
    main_rev = sandbox.source_commit(ci, "on main")
    sandbox.git(ci, "switch", "--quiet", "-c", "side", base)
    side_rev = sandbox.source_commit(ci, "on a side branch", branch="side")
    sandbox.git(ci, "switch", "--quiet", "main")
    assert sandbox.gitops(ci, *sandbox.bump_args("staging", main_rev)).returncode == 0

    refused = sandbox.gitops(ci, *sandbox.bump_args("staging", side_rev))

    assert refused.returncode == 2
    assert "diverged" in refused.stderr


def test_bump_retries_when_remote_moved_during_push(sandbox) -> None:
    """A pre-push hook lets another writer push first, once: the bump must fetch, reset,
    re-apply and land on top, keeping the other writer's commit."""
    ci, other = sandbox.clone("ci"), sandbox.clone("other")
    revision = sandbox.source_commit(ci, "train: new schedule")
    sandbox.git(other, "pull", "--quiet")
    hook = ci / ".git" / "hooks" / "pre-push"
    marker = sandbox.root / "raced"
    hook.write_text(
        "#!/bin/sh\n"
        f'[ -e "{marker}" ] && exit 0\n'
        f'touch "{marker}"\n'
        f'cd "{other}" && echo "# docs" >> src/app.py && '
        'git commit --quiet -am "someone else pushes first" && '
        "git push --quiet origin HEAD:main\n"
    )
    hook.chmod(0o755)

    result = sandbox.gitops(ci, *sandbox.bump_args("staging", revision))

    assert result.returncode == 0, result.stderr
    assert "lost a race" in result.stderr
    subjects = sandbox.git(sandbox.origin, "log", "--format=%s", "-2", "main").splitlines()
    assert subjects[0].startswith("deploy(staging)")
    assert subjects[1] == "someone else pushes first"


def test_bump_five_concurrent_processes_end_at_newest_build(sandbox) -> None:
    person = sandbox.clone("person")
    revisions = [sandbox.source_commit(person, f"change {i}") for i in range(5)]
    clones = [sandbox.clone(f"ci-{i}") for i in range(5)]
    start = sandbox.git(sandbox.origin, "rev-parse", "main")

    processes = [
        sandbox.gitops_popen(clone, *sandbox.bump_args("staging", rev), "--attempts", "10")
        for clone, rev in zip(clones, revisions, strict=True)
    ]
    deadline = time.monotonic() + 120
    results = []
    for proc in processes:
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        results.append((proc.returncode, out, err))

    # Every process finished: deployed, or refused because a newer build had landed first.
    for code, _out, err in results:
        assert code in (0, 2), err
        if code == 2:
            assert "refusing to downgrade" in err
    assert results[-1][0] == 0, results[-1][2]  # the newest build can never be refused
    assert _staging_image(sandbox)["digest"] == sandbox.digest_for(revisions[-1])
    # No lost commits: one deploy commit per successful process, each built on the one before.
    deploys = sandbox.git(
        sandbox.origin, "log", "--reverse", "--format=%H", f"{start}..main"
    ).splitlines()
    assert len(deploys) == sum(1 for code, _, _ in results if code == 0)
    previous = None
    for sha in deploys:
        trailers = _trailers(sandbox, sha)
        assert trailers.get("Previous-Digest") == previous
        previous = trailers["Deploy-Digest"]
    for code, out, _ in results:
        if code == 0:
            sha = out.split("commit ")[1].split()[0]
            assert any(d.startswith(sha) for d in deploys)
