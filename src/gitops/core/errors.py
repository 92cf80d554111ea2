"""The two ways a command fails, each with its own exit code.

`UsageError` (exit 2) is raised before anything changed: bad input, a dirty tree, a refused
downgrade. `OperationError` (exit 1) is a failure while doing the work (a push that never got
through, a revert conflict); the command restores what it can and says what is left.
"""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_FAILURE = 1


class GitopsError(Exception):
    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class UsageError(GitopsError):
    """Invalid input or state; nothing was changed."""

    exit_code = EXIT_USAGE


class OperationError(GitopsError):
    """The work failed part-way; the message says what state the repository is in."""

    exit_code = EXIT_FAILURE
