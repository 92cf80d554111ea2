"""`gitops promote --from staging --to prod`: propose running staging's build in prod.

Builds one commit on a fixed branch (`promote/<from>-to-<to>`) that copies the source
environment's image line and model card into the target overlay, and writes the PR title and
body: metric deltas from the two model cards, the data hash change, and the changelog between
the two source revisions. The branch name is fixed so re-running updates the same PR.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from classifier.comparison import promotion_evidence
from classifier.model_card import HEADLINE_METRICS, ModelCard
from gitops.core.cards import load_card, optional_card
from gitops.core.defaults import DEFAULT_IMAGE_NAME, DEFAULT_REMOTE
from gitops.core.deploys import (
    T_ENV,
    T_FROM,
    T_PREVIOUS,
    DeployState,
    check_not_older,
    deployed_source_revision,
    format_metrics,
    read_commits,
    render_message,
)
from gitops.core.errors import UsageError
from gitops.core.git import Git
from gitops.core.overlay import ImageEntry, Overlay, find_kustomize, set_image
from gitops.core.publish import (
    current_branch,
    find_gh,
    publish_pr_branch,
    restored_on_error,
    say,
    scratch_worktree,
    sync_with_remote,
    write_branch,
)
from gitops.core.registry import verify_deployable

CHANGELOG_LIMIT = 100


@dataclass(frozen=True)
class PromoteRequest:
    source_env: str
    target_env: str
    branch: str | None = None
    body_file: Path | None = None
    push: bool = False
    open_pr: bool = False
    remote: str = DEFAULT_REMOTE
    image_name: str = DEFAULT_IMAGE_NAME
    force: bool = False


@dataclass(frozen=True)
class Proposal:
    branch: str
    commit: str
    title: str
    body: str


def promote(git: Git, root: Path, req: PromoteRequest) -> Proposal | None:
    if req.source_env == req.target_env:
        raise UsageError("--from and --to name the same environment")
    if req.open_pr and not req.push:
        raise UsageError("--open-pr needs --push (the PR's branch must be on the remote)")
    gh = find_gh() if req.open_pr else None
    source, target = Overlay.open(root, req.source_env), Overlay.open(root, req.target_env)
    source.image_entry(req.image_name)  # fail early when an overlay has no image line
    target.image_entry(req.image_name)
    kustomize = find_kustomize(root)
    git.require_clean()
    base = current_branch(git, req.remote, req.push)
    with restored_on_error(git, []):
        sync_with_remote(git, base)  # then read both environments as the remote has them
        candidate_entry = source.image_entry(req.image_name)
        current_entry = target.image_entry(req.image_name)
        if not (candidate_entry.digest and candidate_entry.new_tag):
            raise UsageError(
                f"{source.rel_kustomization} pins no tag and digest yet: nothing to promote",
                f"deploy a build to {req.source_env} first (`gitops bump --env {req.source_env}`)",
            )
        candidate_card = load_card(source.model_card)
        current_card = optional_card(target.model_card)
        if current_entry.digest == candidate_entry.digest:
            print(f"{req.target_env} already runs {candidate_entry.reference}: nothing to promote")
            return None
        candidate_rev = deployed_source_revision(git, source, candidate_entry)
        if candidate_rev is None:
            raise UsageError(
                f"cannot tell which source revision {req.source_env} runs "
                f"(tag {candidate_entry.new_tag!r} is not a git SHA and no deploy trailer says)",
                "re-deploy it with `gitops bump --source-revision SHA`",
            )
        check_not_older(git, target, current_entry, candidate_rev, req.force)
        verify_deployable(
            root,
            candidate_entry.new_name or req.image_name,
            candidate_entry.new_tag,
            candidate_entry.digest,
        )
    current_rev = deployed_source_revision(git, target, current_entry)
    state = DeployState.of(
        candidate_entry.new_name or req.image_name,
        candidate_entry.new_tag,
        candidate_entry.digest,
        candidate_rev,
        candidate_card,
    )
    title = (
        f"promote({req.target_env}): {req.image_name} {candidate_rev[:12]} from {req.source_env}"
    )
    body = render_body(git, req, state, current_entry, current_rev, candidate_card, current_card)
    branch = req.branch or f"promote/{req.source_env}-to-{req.target_env}"

    with scratch_worktree(git, "HEAD") as tree:
        wt_git, wt_target = Git(tree), Overlay(tree, req.target_env)
        set_image(kustomize, wt_target, req.image_name, state.image, state.tag, state.digest)
        wt_target.model_card.write_text(candidate_card.to_json(), encoding="utf-8")
        trailers = [*state.trailers(req.target_env, "promote"), (T_FROM, req.source_env)]
        if current_entry.digest:
            trailers.append((T_PREVIOUS, current_entry.digest))
        message = render_message(
            title,
            f"Run {req.source_env}'s build in {req.target_env}:\n{state.reference}\n"
            f"(was {current_entry.reference}).\n\nModel: {format_metrics(state.metrics)}",
            trailers,
        )
        sha = wt_git.commit_paths(message, [wt_target.rel_kustomization, wt_target.rel_model_card])
    write_branch(git, branch, sha)
    say(f"branch {branch} -> {sha[:12]} (only {target.rel_dir} changes)")

    publish_pr_branch(
        git,
        cwd=root,
        gh=gh,
        remote=base.remote,
        push=req.push,
        head=branch,
        base=base.name,
        title=title,
        body=body,
        body_file=req.body_file,
    )
    where = f", body in {req.body_file}" if req.body_file else ""
    print(f"promotion {req.source_env} -> {req.target_env} ready on branch {branch}{where}")
    return Proposal(branch=branch, commit=sha, title=title, body=body)


def _delta(old: float | None, new: float) -> str:
    if old is None:
        return "new"
    diff = new - old
    arrow = "▲" if diff > 0 else "▼" if diff < 0 else "="
    return f"{diff:+.4f} {arrow}"


def render_body(
    git: Git,
    req: PromoteRequest,
    state: DeployState,
    current: ImageEntry,
    current_rev: str | None,
    candidate_card: ModelCard,
    current_card: ModelCard | None,
) -> str:
    src, dst = req.source_env, req.target_env
    lines = [
        f"## Promote `{src}` → `{dst}`",
        "",
        f"**Digest:** `{state.digest}`. Approving this PR approves this digest only: a new "
        f"`{src}` deploy re-pushes the branch, which dismisses approvals, and the required "
        f"`promotion check` turns green only while `{src}` runs this digest, Synced and Healthy.",
        "",
        f"| | {dst} (now) | {src} (candidate) |",
        "|---|---|---|",
        f"| image | `{(current.new_name or current.name)}:{current.new_tag or '-'}` "
        f"| `{state.image}:{state.tag}` |",
        f"| digest | `{current.digest or '-'}` | `{state.digest}` |",
        f"| source revision | `{(current_rev or 'unknown')[:12]}` "
        f"| `{state.source_revision[:12]}` |",
    ]
    old_hash = current_card.data_hash if current_card else None
    data_note = "unchanged" if old_hash == candidate_card.data_hash else "**changed**"
    lines.append(
        f"| data hash | `{old_hash or 'unknown'}` | `{candidate_card.data_hash}` ({data_note}) |"
    )
    lines.append(
        f"| model exported | {current_card.exported_at if current_card else 'unknown'} "
        f"| {candidate_card.exported_at} |"
    )
    lines += [
        "",
        "### Model metrics (test split)",
        "",
        f"| metric | {dst} | candidate | Δ |",
        "|---|---|---|---|",
    ]
    for metric in HEADLINE_METRICS:
        old = current_card.metrics.get(metric) if current_card else None
        new = candidate_card.metrics[metric]
        old_text = f"{old:.4f}" if old is not None else "—"
        lines.append(f"| {metric} | {old_text} | {new:.4f} | {_delta(old, new)} |")
    # The metric gate's comparison of the two cards (paired when on the same test split).
    lines += ["", promotion_evidence(candidate_card, current_card, git.toplevel() / "params.yaml")]
    lines += ["", *changelog(git, current_rev, state.source_revision)]
    lines += [
        "",
        "### After merge",
        f"Argo CD syncs `{dst}` to `{state.reference}`. To undo: `gitops rollback --env {dst}`"
        " (opens a revert PR), or revert this PR's commit.",
        "",
        f"<!-- gitops:promote {src}->{dst} -->",
    ]
    return "\n".join(lines) + "\n"


def changelog(git: Git, old: str | None, new: str) -> list[str]:
    if old is None or git.resolve_commit(old) is None:
        return ["### Changes", "", "The current revision is unknown here: no changelog."]
    if old == new:
        return ["### Changes", "", "Same source revision (a rebuild)."]
    commits = [
        c
        for c in read_commits(git, "--no-merges", f"-n{CHANGELOG_LIMIT}", f"{old}..{new}")
        if c.trailer(T_ENV) is None  # deploy commits are not changes to the product
    ]
    lines = [f"### Changes `{old[:12]}..{new[:12]}` ({len(commits)} commits)", ""]
    lines += [f"- `{c.sha[:12]}` {c.subject}" for c in commits] or ["- (none)"]
    if len(commits) >= CHANGELOG_LIMIT:
        lines.append(f"- … showing the newest {CHANGELOG_LIMIT}")
    return lines
