"""`gitops status`: what each environment runs, read from git alone (overlay + model card +
the last commit that changed the overlay's image line)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from gitops.core.cards import optional_card
from gitops.core.defaults import DEFAULT_IMAGE_NAME
from gitops.core.deploys import T_ACTION, deployed_source_revision, read_commits
from gitops.core.git import Git
from gitops.core.overlay import Overlay, environments


@dataclass(frozen=True)
class EnvironmentStatus:
    env: str
    image: str
    tag: str | None
    digest: str | None
    source_revision: str | None
    data_hash: str | None
    metrics: dict[str, float]
    model_exported_at: str | None
    deployed_at: str | None  # commit date of the last change to the image line
    deploy_commit: str | None
    deploy_action: str | None  # bump | promote | rollback | None (a hand-made change)


def environment_status(git: Git, root: Path, env: str, image_name: str) -> EnvironmentStatus:
    overlay = Overlay.open(root, env)
    entry = overlay.image_entry(image_name)
    card = optional_card(overlay.model_card)
    last = git.last_commit_touching(overlay.rel_kustomization)
    commit = read_commits(git, "-1", last)[0] if last else None
    return EnvironmentStatus(
        env=env,
        image=entry.new_name or entry.name,
        tag=entry.new_tag,
        digest=entry.digest,
        source_revision=deployed_source_revision(git, overlay, entry),
        data_hash=card.data_hash if card else None,
        metrics=dict(card.metrics) if card else {},
        model_exported_at=card.exported_at if card else None,
        deployed_at=commit.committed_at if commit else None,
        deploy_commit=commit.sha if commit else None,
        deploy_action=commit.trailer(T_ACTION) if commit else None,
    )


def status(
    git: Git,
    root: Path,
    envs: list[str] | None,
    as_json: bool,
    image_name: str = DEFAULT_IMAGE_NAME,
) -> list[EnvironmentStatus]:
    selected = envs or environments(root)
    result = [environment_status(git, root, env, image_name) for env in selected]
    if as_json:
        print(json.dumps({s.env: asdict(s) for s in result}, indent=2, sort_keys=True))
        return result
    for s in result:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(s.metrics.items())) or "no model card"
        print(f"{s.env}:")
        print(f"  image            {s.image}:{s.tag or '-'}")
        print(f"  digest           {s.digest or '- (not pinned)'}")
        print(f"  source revision  {s.source_revision or 'unknown'}")
        print(f"  metrics          {metrics}")
        print(f"  data hash        {s.data_hash or 'unknown'}")
        deployed = f"{s.deployed_at} by {s.deploy_action or 'a manual commit'}"
        print(
            f"  deployed at      {deployed if s.deployed_at else 'never'}"
            + (f" ({s.deploy_commit[:12]})" if s.deploy_commit else "")
        )
    return result
