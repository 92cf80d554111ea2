"""Committing to a shared branch when others push to it too.

The recipe (docs/delivery.md): start from the remote's tip, make the change, commit, push; if the
push lost a race, fetch, reset to the remote, make the change again from scratch, and retry a
bounded number of times. Re-applying (instead of rebasing) means every check (idempotence, the
downgrade guard) is re-run against what the remote holds now.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gitops.core.defaults import DEFAULT_ATTEMPTS
from gitops.core.errors import GitopsError, OperationError, UsageError
from gitops.core.git import Git


def say(message: str) -> None:
    """Progress goes to stderr so stdout carries only results (a PR body, JSON)."""
    print(f">> {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Branch:
    name: str
    remote: str | None  # None: commit locally only (no remote, or --no-push)

    @property
    def remote_ref(self) -> str:
        return f"{self.remote}/{self.name}"


def current_branch(git: Git, remote: str, push: bool) -> Branch:
    name = git.current_branch()
    if name is None:
        raise UsageError(
            "HEAD is detached: gitops commits to a branch",
            "check out the branch to deploy to, e.g. `git switch main`",
        )
    if not push:
        return Branch(name, None)
    if not git.has_remote(remote):
        raise UsageError(
            f"no remote named {remote!r} to push to",
            "pass --remote NAME, or --no-push to commit locally only",
        )
    return Branch(name, remote)


def sync_with_remote(git: Git, branch: Branch) -> None:
    """Fast-forward the local branch to the remote's tip; refuse if it has unpushed commits."""
    if branch.remote is None:
        return
    git.fetch(branch.remote, branch.name)
    remote_head = git.resolve_commit(branch.remote_ref)
    if remote_head is None:
        raise UsageError(f"branch {branch.name!r} does not exist on {branch.remote!r}")
    local = git.head()
    if local == remote_head:
        return
    if git.is_ancestor(local, remote_head):
        git.reset_hard(remote_head)  # a fast-forward: the tree is clean (checked before)
        return
    raise UsageError(
        f"local {branch.name} has commits that are not on {branch.remote_ref}",
        f"push or drop them first (`git log {branch.remote_ref}..{branch.name}`): a deploy "
        "commit must sit on top of what everyone else sees",
    )


@contextmanager
def restored_on_error(git: Git, created: list[Path]) -> Iterator[None]:
    """On any failure put HEAD, index and tree back where they were when we started."""
    start = git.head()
    try:
        yield
    except (GitopsError, KeyboardInterrupt):
        git.run("revert", "--abort", check=False)
        git.reset_hard(start)
        for path in created:
            path.unlink(missing_ok=True)
        raise


def commit_and_push(
    git: Git,
    branch: Branch,
    apply: Callable[[], str | None],
    attempts: int = DEFAULT_ATTEMPTS,
) -> str | None:
    """Run `apply` (makes one commit and returns its sha, or None when there is nothing to do)
    and push it, re-applying on top of the remote's new tip when the push loses a race."""
    for attempt in range(1, attempts + 1):
        sha = apply()
        if sha is None or branch.remote is None:
            return sha
        result = git.push(branch.remote, f"HEAD:refs/heads/{branch.name}")
        if result.ok:
            say(f"pushed {sha[:12]} to {branch.remote_ref}")
            return sha
        if not result.lost_race:
            raise OperationError(f"push to {branch.remote_ref} failed:\n{result.output}")
        say(f"push lost a race ({attempt}/{attempts}): {branch.remote_ref} moved; re-applying")
        # Jittered back-off so that racing writers do not collide again in lock step.
        time.sleep(random.uniform(0.05, 0.25) * attempt)  # noqa: S311 - not cryptographic
        git.fetch(branch.remote, branch.name)
        git.reset_hard(branch.remote_ref)
    raise OperationError(
        f"gave up after {attempts} attempts: {branch.remote_ref} kept moving; nothing was pushed",
        "run the command again (or raise --attempts)",
    )


@contextmanager
def scratch_worktree(git: Git, rev: str) -> Iterator[Path]:
    """A throwaway checkout of `rev`, so a branch for a PR can be built without touching the
    caller's working tree or current branch."""
    holder = Path(tempfile.mkdtemp(prefix="gitops-worktree-"))
    path = holder / "tree"
    git.run("worktree", "add", "--quiet", "--detach", str(path), rev)
    try:
        yield path
    finally:
        git.run("worktree", "remove", "--force", str(path), check=False)
        git.run("worktree", "prune", check=False)
        shutil.rmtree(holder, ignore_errors=True)


def write_branch(git: Git, name: str, sha: str) -> None:
    if git.current_branch() == name:
        raise UsageError(
            f"branch {name!r} is checked out here, so gitops cannot rewrite it",
            "switch to the base branch (e.g. `git switch main`) and run the command again",
        )
    git.run("branch", "--force", name, sha)


def push_branch(git: Git, remote: str, name: str) -> None:
    """Force-push a bot-owned PR branch: it is regenerated from scratch on every run, so the
    PR always shows exactly one commit on top of the current base."""
    result = git.push(remote, f"refs/heads/{name}:refs/heads/{name}", force=True)
    if not result.ok:
        raise OperationError(f"push of {name} to {remote} failed:\n{result.output}")
    say(f"pushed branch {name} to {remote}")


def find_gh() -> str:
    gh = shutil.which("gh")
    if gh is None:
        raise UsageError(
            "--open-pr needs the GitHub CLI `gh` on PATH",
            "install gh (GitHub runners have it) or drop --open-pr and open the PR by hand",
        )
    return gh


def open_or_update_pr(gh: str, cwd: Path, head: str, base: str, title: str, body: Path) -> str:
    """Exactly one open PR per head branch: edit it when it exists, create it otherwise."""

    def run(*args: str) -> str:
        proc = subprocess.run([gh, *args], cwd=cwd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise OperationError(f"`gh {' '.join(args)}` failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    listed = run(
        "pr", "list", "--head", head, "--base", base, "--state", "open",
        "--json", "number,url", "--limit", "1",
    )  # fmt: skip
    existing = json.loads(listed or "[]")
    if existing:
        number, url = str(existing[0]["number"]), str(existing[0]["url"])
        run("pr", "edit", number, "--title", title, "--body-file", str(body))
        say(f"updated PR #{number}")
        return url
    url = run(
        "pr", "create", "--head", head, "--base", base, "--title", title, "--body-file", str(body)
    )
    say(f"opened {url}")
    return url


def publish_pr_branch(
    git: Git,
    *,
    cwd: Path,
    gh: str | None,
    remote: str | None,
    push: bool,
    head: str,
    base: str,
    title: str,
    body: str,
    body_file: Path | None,
) -> None:
    """The common tail of promote and prod rollback: write (or print) the PR body, push the
    branch when asked, and open or update the one PR for it when `gh` is given."""
    if body_file is not None:
        body_file.parent.mkdir(parents=True, exist_ok=True)
        body_file.write_text(body, encoding="utf-8")
    else:
        print(f"# {title}\n\n{body}")
    if push and remote:
        push_branch(git, remote, head)
    if gh is None:
        return
    if body_file is not None:
        open_or_update_pr(gh, cwd, head, base, title, body_file)
        return
    # gh reads the body from a file; a scratch one must not outlive the call (CI runners and
    # dev machines would collect one per promotion).
    with tempfile.TemporaryDirectory(prefix="gitops-pr-") as scratch:
        scratch_body = Path(scratch) / "body.md"
        scratch_body.write_text(body, encoding="utf-8")
        open_or_update_pr(gh, cwd, head, base, title, scratch_body)
