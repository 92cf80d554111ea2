"""`gitops promote`: a branch whose only change is prod's image line and model card, and a PR
body with the metric deltas, the data hash change and the changelog."""

from __future__ import annotations

import json
import sys

import yaml

from classifier.model_card import ModelCard


def _deploy(sandbox, clone, env: str, revision: str, accuracy: float) -> None:
    result = sandbox.gitops(clone, *sandbox.bump_args(env, revision, accuracy=accuracy))
    assert result.returncode == 0, result.stderr


def _promotion_body(sandbox, clone) -> str:
    body_file = sandbox.root / "pr" / "body.md"
    result = sandbox.gitops(
        clone, "promote", "--from", "staging", "--to", "prod", "--body-file", str(body_file)
    )
    assert result.returncode == 0, result.stderr
    return body_file.read_text()


def test_promote_branch_changes_only_prod_image_and_card(sandbox) -> None:
    ci = sandbox.clone("ci")
    first = sandbox.source_commit(ci, "first model")
    _deploy(sandbox, ci, "prod", first, 0.90)
    candidate = sandbox.source_commit(ci, "train: augment with flips")
    _deploy(sandbox, ci, "staging", candidate, 0.92)
    head_before = sandbox.state(ci)

    result = sandbox.gitops(ci, "promote", "--from", "staging", "--to", "prod")

    assert result.returncode == 0, result.stderr
    assert sandbox.state(ci) == head_before  # the caller's checkout is untouched
    branch = "promote/staging-to-prod"
    changed = sandbox.git(ci, "diff", "--name-only", "main", branch).split()
    assert sorted(changed) == ["overlays/prod/kustomization.yaml", "overlays/prod/model-card.json"]
    assert sandbox.git(ci, "rev-list", "--count", f"main..{branch}") == "1"
    diff = sandbox.git(ci, "diff", "-U0", "main", branch, "--", "overlays/prod/kustomization.yaml")
    changed_lines = sorted(
        line[1:].strip().removeprefix("- ")
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )
    assert changed_lines == sorted(
        [
            f"digest: {sandbox.digest_for(first)}",
            f"digest: {sandbox.digest_for(candidate)}",
            f"newTag: {first}",
            f"newTag: {candidate}",
        ]
    )
    prod = yaml.safe_load(sandbox.git(ci, "show", f"{branch}:overlays/prod/kustomization.yaml"))
    staging = yaml.safe_load((ci / "overlays/staging/kustomization.yaml").read_text())
    assert prod["images"] == staging["images"]
    card = json.loads(sandbox.git(ci, "show", f"{branch}:overlays/prod/model-card.json"))
    assert ModelCard.from_dict(card).git_revision == candidate


def test_promote_body_has_metric_deltas_data_hash_and_changelog(sandbox) -> None:
    ci = sandbox.clone("ci")
    first = sandbox.source_commit(ci, "first model")
    _deploy(sandbox, ci, "prod", first, 0.90)
    sandbox.source_commit(ci, "prepare: stratify by cell type")
    candidate = sandbox.source_commit(ci, "train: augment with flips")
    _deploy(sandbox, ci, "staging", candidate, 0.92)

    body = _promotion_body(sandbox, ci)
    assert "| accuracy | 0.9000 | 0.9200 | +0.0200 ▲ |" in body
    assert "| roc_auc | 0.9300 | 0.9500 | +0.0200 ▲ |" in body
    assert "(unchanged)" in body  # same data hash in both cards
    assert "prepare: stratify by cell type" in body
    assert "train: augment with flips" in body
    assert "first model" not in body  # already in prod
    assert "deploy(" not in body  # deploy commits are not product changes
    assert f"{first[:12]}..{candidate[:12]}" in body


def test_promote_body_has_the_metric_gate_comparison(sandbox) -> None:
    ci = sandbox.clone("ci")
    first = sandbox.source_commit(ci, "first model")
    _deploy(sandbox, ci, "prod", first, 0.90)
    (ci / "params.yaml").write_text(
        "gate:\n  min_accuracy: 0.85\n  max_drop_vs_baseline: 0.0\n  confidence: 0.95\n"
    )
    sandbox.git(ci, "add", "params.yaml")
    candidate = sandbox.source_commit(ci, "gate: the rule")
    _deploy(sandbox, ci, "staging", candidate, 0.92)

    body = _promotion_body(sandbox, ci)
    # These cards record neither per-image outcomes nor their image count: the point rule.
    assert "### Metric gate: **pass**" in body
    assert "Comparison: **point**" in body
    assert "difference candidate - prod: **+0.0200** (no interval)" in body


def test_promote_twice_reuses_the_branch(sandbox) -> None:
    ci = sandbox.clone("ci")
    _deploy(sandbox, ci, "staging", sandbox.source_commit(ci, "one"), 0.9)
    assert sandbox.gitops(ci, "promote", "--from", "staging", "--to", "prod").returncode == 0
    newer = sandbox.source_commit(ci, "two")
    _deploy(sandbox, ci, "staging", newer, 0.91)

    result = sandbox.gitops(ci, "promote", "--from", "staging", "--to", "prod", "--push")

    assert result.returncode == 0, result.stderr
    branches = sandbox.git(sandbox.origin, "branch", "--format=%(refname:short)").split()
    assert sorted(branches) == ["main", "promote/staging-to-prod"]
    tip = sandbox.git(sandbox.origin, "log", "-1", "--format=%B", "promote/staging-to-prod")
    assert f"Source-Revision: {newer}" in tip
    assert "Promoted-From: staging" in tip


def test_promote_when_prod_already_runs_staging_build_does_nothing(sandbox) -> None:
    ci = sandbox.clone("ci")
    revision = sandbox.source_commit(ci, "one")
    _deploy(sandbox, ci, "staging", revision, 0.9)
    _deploy(sandbox, ci, "prod", revision, 0.9)

    result = sandbox.gitops(ci, "promote", "--from", "staging", "--to", "prod")

    assert result.returncode == 0, result.stderr
    assert "nothing to promote" in result.stdout
    assert "promote/" not in sandbox.git(ci, "branch")


def test_promote_older_staging_build_is_refused(sandbox) -> None:
    ci = sandbox.clone("ci")
    older = sandbox.source_commit(ci, "older")
    newer = sandbox.source_commit(ci, "newer")
    _deploy(sandbox, ci, "prod", newer, 0.9)
    _deploy(sandbox, ci, "staging", older, 0.9)

    result = sandbox.gitops(ci, "promote", "--from", "staging", "--to", "prod")

    assert result.returncode == 2
    assert "refusing to downgrade prod" in result.stderr
    assert "promote/" not in sandbox.git(ci, "branch")


FAKE_GH = """#!{python}
# Stand-in for the GitHub CLI (GitHub is not reachable from tests): keeps open PRs in a JSON
# file and logs every call, so the test sees whether gitops creates or edits.
import json, sys, pathlib
state = pathlib.Path({state!r})
prs = json.loads(state.read_text()) if state.exists() else []
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(" ".join(args[:2]) + "\\n")
def opt(name):
    return args[args.index(name) + 1]
if args[:2] == ["pr", "list"]:
    print(json.dumps([p for p in prs if p["head"] == opt("--head")][:1]))
elif args[:2] == ["pr", "create"]:
    prs.append({{"number": len(prs) + 1, "url": "https://example.test/pr/1", "head": opt("--head"),
                "title": opt("--title"), "body": open(opt("--body-file")).read()}})
    print(prs[-1]["url"])
elif args[:2] == ["pr", "edit"]:
    pr = next(p for p in prs if str(p["number"]) == args[2])
    pr["title"], pr["body"] = opt("--title"), open(opt("--body-file")).read()
state.write_text(json.dumps(prs))
"""


def test_promote_open_pr_creates_one_pr_then_updates_it(sandbox) -> None:
    bin_dir = sandbox.root / "bin"
    bin_dir.mkdir()
    state, log = sandbox.root / "prs.json", sandbox.root / "gh.log"
    gh = bin_dir / "gh"
    gh.write_text(FAKE_GH.format(python=sys.executable, state=str(state), log=str(log)))
    gh.chmod(0o755)
    sandbox.env["PATH"] = f"{bin_dir}:{sandbox.env['PATH']}"
    scratch = sandbox.root / "tmp"  # gitops' own TMPDIR: its PR-body file must not outlive it
    scratch.mkdir()
    sandbox.env["TMPDIR"] = str(scratch)
    ci = sandbox.clone("ci")
    _deploy(sandbox, ci, "staging", sandbox.source_commit(ci, "one"), 0.9)
    promote = ["promote", "--from", "staging", "--to", "prod", "--push", "--open-pr"]

    first = sandbox.gitops(ci, *promote)
    newer = sandbox.source_commit(ci, "two")
    _deploy(sandbox, ci, "staging", newer, 0.93)
    second = sandbox.gitops(ci, *promote)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert log.read_text().split("\n")[:-1] == ["pr list", "pr create", "pr list", "pr edit"]
    prs = json.loads(state.read_text())
    assert len(prs) == 1
    assert newer[:12] in prs[0]["title"]
    assert "| accuracy | — | 0.9300 | new |" in prs[0]["body"]
    assert list(scratch.iterdir()) == []
