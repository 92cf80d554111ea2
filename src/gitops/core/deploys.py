"""Deploy commits: their message format (git trailers) and how to find them again.

Every commit gitops makes carries trailers (`Key: value` lines at the end of the message, the
format `git interpret-trailers --parse` reads), so the deploy history of an environment is
`git log` of its overlay filtered by `Deploy-Environment`. Nothing else stores state. What
an environment runs now, read from that history, also guards bump and promote against moving
an environment to an older build (`check_not_older`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from classifier.model_card import HEADLINE_METRICS, ModelCard
from gitops.core.errors import UsageError
from gitops.core.git import FULL_SHA_RE, Git
from gitops.core.overlay import ImageEntry, Overlay

T_ENV = "Deploy-Environment"
T_ACTION = "Deploy-Action"  # bump | promote | rollback
T_IMAGE = "Deploy-Image"
T_TAG = "Deploy-Tag"
T_DIGEST = "Deploy-Digest"
T_SOURCE = "Source-Revision"
T_DATA = "Data-Hash"
T_PREVIOUS = "Previous-Digest"
T_FROM = "Promoted-From"
T_REVERTS = "Reverts"

DEPLOY_ACTIONS = ("bump", "promote")
_REVERT_LINE = re.compile(r"^This reverts commit ([0-9a-f]{40})", re.MULTILINE)
_FIELD, _RECORD = "\x1f", "\x1e"
_LOG_FORMAT = f"%H{_FIELD}%cI{_FIELD}%s{_FIELD}%(trailers:only=true,unfold=true){_FIELD}%B{_RECORD}"


def metric_trailer_key(metric: str) -> str:
    """`balanced_accuracy` -> `Metric-Balanced-Accuracy` (trailer keys are words and dashes)."""
    return "Metric-" + "-".join(part.capitalize() for part in metric.split("_"))


@dataclass(frozen=True)
class DeployState:
    """What an environment is moved to: the image and the model inside it."""

    image: str
    tag: str
    digest: str
    source_revision: str
    data_hash: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(
        cls, image: str, tag: str, digest: str, source_revision: str, card: ModelCard | None
    ) -> DeployState:
        return cls(
            image=image,
            tag=tag,
            digest=digest,
            source_revision=source_revision,
            data_hash=card.data_hash if card else None,
            metrics={m: card.metrics[m] for m in HEADLINE_METRICS} if card else {},
        )

    @property
    def reference(self) -> str:
        return f"{self.image}:{self.tag}@{self.digest}"

    def trailers(self, env: str, action: str) -> list[tuple[str, str]]:
        pairs = [
            (T_ENV, env),
            (T_ACTION, action),
            (T_IMAGE, self.image),
            (T_TAG, self.tag),
            (T_DIGEST, self.digest),
            (T_SOURCE, self.source_revision),
        ]
        if self.data_hash:
            pairs.append((T_DATA, self.data_hash))
        pairs += [(metric_trailer_key(k), f"{v:.4f}") for k, v in self.metrics.items()]
        return pairs


def render_message(subject: str, body: str, trailers: list[tuple[str, str]]) -> str:
    block = "\n".join(f"{key}: {value}" for key, value in trailers)
    return f"{subject}\n\n{body.strip()}\n\n{block}\n"


def format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) or "no model card"


@dataclass(frozen=True)
class Commit:
    sha: str
    committed_at: str
    subject: str
    trailers: dict[str, list[str]]
    body: str

    def trailer(self, key: str) -> str | None:
        values = self.trailers.get(key)
        return values[-1] if values else None

    @property
    def reverts(self) -> list[str]:
        """Commits this one reverts: git's own "This reverts commit X." lines and our trailer."""
        found = _REVERT_LINE.findall(self.body) + self.trailers.get(T_REVERTS, [])
        return list(dict.fromkeys(found))

    def is_deploy_of(self, env: str) -> bool:
        return self.trailer(T_ENV) == env and self.trailer(T_ACTION) in DEPLOY_ACTIONS

    @property
    def short(self) -> str:
        return self.sha[:12]


def read_commits(git: Git, *args: str) -> list[Commit]:
    raw = git.out("log", f"--format={_LOG_FORMAT}", *args)
    commits = []
    for record in raw.split(_RECORD):
        record = record.strip("\n")
        if not record:
            continue
        sha, date, subject, trailer_text, body = record.split(_FIELD, 4)
        trailers: dict[str, list[str]] = {}
        for line in trailer_text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                trailers.setdefault(key.strip(), []).append(value.strip())
        commits.append(Commit(sha, date, subject, trailers, body))
    return commits


def active_deploys(git: Git, overlay: Overlay, rev: str = "HEAD") -> list[Commit]:
    """The environment's deploy commits that are still in effect (not reverted), newest first.

    Walks the overlay's history oldest to newest: a deploy commit becomes active, a revert of
    it (by `gitops rollback`, `git revert` or GitHub's revert button) deactivates it, and a
    revert of that revert activates it again.
    """
    history = list(reversed(read_commits(git, rev, "--", overlay.rel_dir)))
    deploys = {c.sha: c for c in history if c.is_deploy_of(overlay.env)}
    reverted_by: dict[str, list[str]] = {}  # revert commit -> what it reverted
    active: dict[str, bool] = {}
    for commit in history:
        if commit.sha in deploys:
            active[commit.sha] = True
        reverted = commit.reverts
        if reverted:
            reverted_by[commit.sha] = reverted
        for target in reverted:
            if target in deploys:
                active[target] = False
            for original in reverted_by.get(target, []):  # a revert of a revert
                if original in deploys:
                    active[original] = True
    return [deploys[sha] for sha in reversed(list(active)) if active[sha]]


def deployed_source_revision(git: Git, overlay: Overlay, entry: ImageEntry) -> str | None:
    """The source revision the environment runs now.

    The `Source-Revision` trailer of the last commit that changed the kustomization (gitops
    writes it on bump, promote and rollback); for a commit without one (a hand-made revert),
    the image tag, which is the full git SHA of the source commit (image contract).
    """
    last = git.last_commit_touching(overlay.rel_kustomization)
    if last:
        commits = read_commits(git, "-1", last)
        if commits and commits[0].trailer(T_ENV) == overlay.env:
            revision = commits[0].trailer(T_SOURCE)
            if revision and FULL_SHA_RE.match(revision):
                return revision
    if entry.new_tag and FULL_SHA_RE.match(entry.new_tag):
        return entry.new_tag
    return None


def check_not_older(
    git: Git, overlay: Overlay, entry: ImageEntry, candidate: str, force: bool
) -> None:
    """Refuse to move an environment to a build older than (or beside) the one it runs."""
    deployed = deployed_source_revision(git, overlay, entry)
    if force or deployed is None or deployed == candidate:
        return
    if git.resolve_commit(deployed) is None:
        raise UsageError(
            f"{overlay.env} runs source revision {deployed[:12]}, which is not in this clone, "
            "so gitops cannot tell whether the new build is newer",
            "fetch the full history (fetch-depth: 0), or pass --force if you are sure",
        )
    if git.is_ancestor(candidate, deployed):
        raise UsageError(
            f"refusing to downgrade {overlay.env}: build source {candidate[:12]} is older than "
            f"the deployed {deployed[:12]} (it is an ancestor of it)",
            "to go back on purpose use `gitops rollback`, or pass --force",
        )
    if not git.is_ancestor(deployed, candidate):
        raise UsageError(
            f"refusing to move {overlay.env}: build source {candidate[:12]} does not descend "
            f"from the deployed {deployed[:12]} (the histories diverged)",
            "build from a commit that contains the deployed one, or pass --force",
        )
