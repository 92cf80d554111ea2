"""`gitops rollback --env ENV [--to REVISION]`: undo deploys with `git revert`.

The deploy history comes from the trailers (`gitops.core.deploys.active_deploys`). Without --to the
latest deploy still in effect is reverted; with --to, every deploy after the given one. Reverting
(instead of bumping to an old digest) keeps the history honest and restores the previous image
line and model card byte for byte. Environments that need review (prod) get a branch and a PR;
the others are pushed straight away.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gitops.core.defaults import DEFAULT_ATTEMPTS, DEFAULT_IMAGE_NAME, DEFAULT_REMOTE
from gitops.core.deploys import (
    T_DIGEST,
    T_REVERTS,
    T_SOURCE,
    Commit,
    active_deploys,
    render_message,
)
from gitops.core.errors import OperationError, UsageError
from gitops.core.git import Git
from gitops.core.overlay import Overlay
from gitops.core.publish import (
    commit_and_push,
    current_branch,
    find_gh,
    publish_pr_branch,
    restored_on_error,
    say,
    scratch_worktree,
    sync_with_remote,
    write_branch,
)

# Environments whose changes go through a reviewed PR (CODEOWNERS + branch protection).
REVIEWED_ENVIRONMENTS = frozenset({"prod"})


@dataclass(frozen=True)
class RollbackRequest:
    env: str
    to: str | None = None
    via_pr: bool | None = None  # None: a PR for REVIEWED_ENVIRONMENTS, a direct push otherwise
    push: bool = True
    open_pr: bool = False
    body_file: Path | None = None
    remote: str = DEFAULT_REMOTE
    image_name: str = DEFAULT_IMAGE_NAME
    attempts: int = DEFAULT_ATTEMPTS


@dataclass(frozen=True)
class Plan:
    revert: list[Commit]  # newest first
    restore: Commit  # the deploy the environment runs afterwards


def plan_rollback(git: Git, overlay: Overlay, to: str | None) -> Plan | None:
    active = active_deploys(git, overlay)
    if to is None:
        if len(active) < 2:
            raise UsageError(
                f"no deploy commit to roll back to: {overlay.env} has "
                f"{len(active)} deploy(s) in effect" + (f" ({active[0].short})" if active else ""),
                "a rollback reverts the latest deploy and needs an earlier one to return to; "
                "to run a specific build use `gitops bump --force`",
            )
        return Plan(revert=active[:1], restore=active[1])
    for index, commit in enumerate(active):
        if _matches(git, commit, to):
            if index == 0:
                return None
            return Plan(revert=active[:index], restore=commit)
    listing = "\n    ".join(
        f"{c.short} source {(c.trailer(T_SOURCE) or '?')[:12]} {c.trailer(T_DIGEST)}"
        for c in active[:10]
    )
    raise UsageError(
        f"no deploy commit of {overlay.env} in effect matches {to!r}",
        f"--to takes a deploy commit, a source revision or a digest; candidates:\n    {listing}"
        if active
        else "the environment has no deploy commits",
    )


def _matches(git: Git, commit: Commit, wanted: str) -> bool:
    if len(wanted) >= 7 and commit.sha.startswith(wanted.lower()):
        return True
    resolved = git.resolve_commit(wanted)
    if resolved == commit.sha:
        return True
    source = commit.trailer(T_SOURCE) or ""
    digest = commit.trailer(T_DIGEST) or ""
    return (
        (len(wanted) >= 7 and source.startswith(wanted))
        or (wanted.startswith("sha256:") and digest.startswith(wanted))
        or (resolved is not None and resolved == source)
    )


def _message(overlay: Overlay, plan: Plan) -> str:
    restore = plan.restore
    source = restore.trailer(T_SOURCE) or "unknown"
    digest = restore.trailer(T_DIGEST) or "unknown"
    reverted = ", ".join(c.short for c in plan.revert)
    subject = f"rollback({overlay.env}): back to {source[:12]} @ {digest[:19]}"
    body = "\n".join(f"This reverts commit {c.sha}." for c in plan.revert)
    body += f"\n\nRestores {overlay.env} to the deploy {restore.short} (reverting {reverted})."
    trailers = [
        (key, value)
        for key, value in (
            ("Deploy-Environment", overlay.env),
            ("Deploy-Action", "rollback"),
            ("Deploy-Image", restore.trailer("Deploy-Image")),
            ("Deploy-Tag", restore.trailer("Deploy-Tag")),
            (T_DIGEST, restore.trailer(T_DIGEST)),
            (T_SOURCE, restore.trailer(T_SOURCE)),
            ("Data-Hash", restore.trailer("Data-Hash")),
        )
        if value
    ]
    trailers += [(T_REVERTS, c.sha) for c in plan.revert]
    return render_message(subject, body, trailers)


def _apply_revert(git: Git, overlay: Overlay, plan: Plan, image_name: str) -> str:
    proc = git.run("revert", "--no-commit", *[c.sha for c in plan.revert], check=False)
    if proc.returncode != 0:
        git.run("revert", "--abort", check=False)
        raise OperationError(
            f"`git revert` of {', '.join(c.short for c in plan.revert)} conflicts: "
            f"{(proc.stderr or proc.stdout).strip()}",
            f"something else changed {overlay.rel_dir} since; resolve by hand or bump instead",
        )
    expected = plan.restore.trailer(T_DIGEST)
    entry = overlay.image_entry(image_name)
    if expected and entry.digest != expected:
        raise OperationError(
            f"after reverting, {overlay.rel_kustomization} pins {entry.digest}, "
            f"not {expected} as deploy {plan.restore.short} did"
        )
    git.run("commit", "--quiet", f"--message={_message(overlay, plan)}")
    return git.head()


def rollback(git: Git, root: Path, req: RollbackRequest) -> str | None:
    overlay = Overlay.open(root, req.env)
    overlay.image_entry(req.image_name)
    via_pr = req.via_pr if req.via_pr is not None else req.env in REVIEWED_ENVIRONMENTS
    if req.open_pr and not (via_pr and req.push):
        raise UsageError("--open-pr needs a PR rollback that is pushed (drop --no-push)")
    gh = find_gh() if req.open_pr else None
    git.require_clean()
    branch = current_branch(git, req.remote, req.push)
    plan = plan_rollback(git, overlay, req.to)  # validate against local history first
    with restored_on_error(git, []):
        sync_with_remote(git, branch)
        plan = plan_rollback(git, overlay, req.to)
    if plan is None:
        print(f"{req.env} already runs the deploy {req.to}: nothing to roll back")
        return None
    restore_digest = plan.restore.trailer(T_DIGEST) or "?"
    say(
        f"{req.env}: reverting {', '.join(c.short for c in plan.revert)} "
        f"to return to {plan.restore.short} ({restore_digest})"
    )

    if not via_pr:

        def apply() -> str:
            current = plan_rollback(git, overlay, req.to)  # re-plan after a lost push race
            if current is None:
                raise UsageError(f"{req.env} already runs {req.to} (someone rolled back first)")
            return _apply_revert(git, overlay, current, req.image_name)

        with restored_on_error(git, []):
            sha = commit_and_push(git, branch, apply, req.attempts)
        if sha is None:  # apply() commits or raises; this keeps the type checker honest
            raise OperationError("rollback made no commit")
        where = f"pushed to {branch.remote_ref}" if branch.remote else f"on {branch.name} (local)"
        print(f"rolled back {req.env} to {restore_digest}: commit {sha[:12]} {where}")
        return sha

    pr_branch = f"rollback/{req.env}-{plan.restore.short}"
    with scratch_worktree(git, "HEAD") as tree:
        sha = _apply_revert(Git(tree), Overlay(tree, req.env), plan, req.image_name)
    write_branch(git, pr_branch, sha)
    title = _message(overlay, plan).splitlines()[0]
    body = (
        f"## Roll back `{req.env}`\n\nReverts {', '.join(f'`{c.short}`' for c in plan.revert)}; "
        f"`{req.env}` returns to the deploy `{plan.restore.short}`:\n\n"
        f"- digest `{restore_digest}`\n- source revision "
        f"`{(plan.restore.trailer(T_SOURCE) or 'unknown')[:12]}`\n\n"
        f"Merging lets Argo CD sync `{req.env}` back. Nothing retrains.\n\n"
        f"<!-- gitops:rollback {req.env} -->\n"
    )
    publish_pr_branch(
        git,
        cwd=root,
        gh=gh,
        remote=branch.remote,
        push=req.push,
        head=pr_branch,
        base=branch.name,
        title=title,
        body=body,
        body_file=req.body_file,
    )
    print(f"rollback of {req.env} ready on branch {pr_branch} (commit {sha[:12]})")
    return sha
