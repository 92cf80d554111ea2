"""A thin, typed wrapper over the `git` command line.

Every delivery action is a git operation, so this module is the only place that runs git; the
commands read like the shell session a person would type.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gitops.core.errors import OperationError, UsageError

FULL_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
# Messages git prints when a push lost a race against another push (remote moved under us).
# "cannot lock ref" / "failed to update ref" come from two pushes hitting a bare repo at once.
_RACE_MARKERS = (
    "[rejected]",
    "fetch first",
    "non-fast-forward",
    "cannot lock ref",
    "failed to update ref",
    "stale info",
    "[remote rejected]",
)


@dataclass(frozen=True)
class PushResult:
    ok: bool
    lost_race: bool
    output: str


class Git:
    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        # Parsing git's messages needs the C locale; never block on a credential prompt in CI.
        self._env = {**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}

    def run(
        self, *args: str, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd or self.cwd,
            env=self._env,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise OperationError(
                f"`git {' '.join(args)}` failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()}"
            )
        return proc

    def out(self, *args: str, cwd: Path | None = None) -> str:
        return self.run(*args, cwd=cwd).stdout.strip()

    def ok(self, *args: str, cwd: Path | None = None) -> bool:
        return self.run(*args, check=False, cwd=cwd).returncode == 0

    # --- where we are -------------------------------------------------------------------
    def toplevel(self) -> Path:
        proc = self.run("rev-parse", "--show-toplevel", check=False)
        if proc.returncode != 0:
            raise UsageError(
                f"{self.cwd} is not inside a git repository",
                "run gitops from a clone of the deployment repository, or pass --repo PATH",
            )
        return Path(proc.stdout.strip())

    def head(self) -> str:
        return self.out("rev-parse", "HEAD")

    def current_branch(self) -> str | None:
        proc = self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return proc.stdout.strip() or None

    def porcelain_status(self) -> str:
        return self.out("status", "--porcelain")

    def require_clean(self) -> None:
        status = self.porcelain_status()
        if status:
            first = "\n    ".join(status.splitlines()[:10])
            raise UsageError(
                f"the working tree has uncommitted changes:\n    {first}",
                "commit or stash them first: gitops commits only its own changes",
            )

    def resolve_commit(self, rev: str) -> str | None:
        proc = self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def is_ancestor(self, older: str, newer: str) -> bool:
        return self.ok("merge-base", "--is-ancestor", older, newer)

    def has_remote(self, remote: str) -> bool:
        return remote in self.out("remote").split()

    def last_commit_touching(self, path: str) -> str | None:
        sha = self.out("log", "-1", "--format=%H", "--", path)
        return sha or None

    # --- changing things ----------------------------------------------------------------
    def fetch(self, remote: str, branch: str) -> None:
        self.run("fetch", "--quiet", remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}")

    def reset_hard(self, rev: str) -> None:
        self.run("reset", "--quiet", "--hard", rev)

    def commit_paths(self, message: str, paths: list[str]) -> str:
        self.run("add", "--", *paths)
        self.run("commit", "--quiet", f"--message={message}", "--", *paths)
        return self.head()

    def push(self, remote: str, refspec: str, *, force: bool = False) -> PushResult:
        args = ["push", "--porcelain", remote, refspec]
        if force:
            args.insert(1, "--force")
        proc = self.run(*args, check=False)
        output = (proc.stdout + proc.stderr).strip()
        lost_race = proc.returncode != 0 and any(m in output for m in _RACE_MARKERS)
        return PushResult(ok=proc.returncode == 0, lost_race=lost_race, output=output)
