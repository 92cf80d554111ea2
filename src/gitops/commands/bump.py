"""`gitops bump`: point one environment at a new image build, in one commit.

The commit sets the overlay's image (tag + digest) with `kustomize edit set image`, copies the
build's model card to `overlays/<env>/model-card.json`, and records the build in trailers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gitops.core.cards import load_card
from gitops.core.defaults import DEFAULT_ATTEMPTS, DEFAULT_IMAGE_NAME, DEFAULT_REMOTE
from gitops.core.deploys import (
    T_PREVIOUS,
    DeployState,
    check_not_older,
    format_metrics,
    render_message,
)
from gitops.core.errors import UsageError
from gitops.core.git import FULL_SHA_RE, Git
from gitops.core.overlay import (
    Overlay,
    find_kustomize,
    set_image,
    validate_digest,
    validate_image_name,
    validate_tag,
)
from gitops.core.publish import (
    Branch,
    commit_and_push,
    current_branch,
    restored_on_error,
    say,
    sync_with_remote,
)
from gitops.core.registry import verify_deployable


@dataclass(frozen=True)
class Build:
    image: str
    tag: str
    digest: str

    @classmethod
    def from_file(cls, path: Path) -> Build:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise UsageError(
                f"build file {path} not found", "`make push` writes build/image.json"
            ) from exc
        except json.JSONDecodeError as exc:
            raise UsageError(f"build file {path} is not JSON: {exc}") from exc
        if not isinstance(raw, dict) or not all(
            isinstance(raw.get(k), str) for k in ("image", "tag", "digest")
        ):
            raise UsageError(
                f"build file {path} must be an object with string fields image, tag, digest"
            )
        image, tag = str(raw["image"]), str(raw["tag"])
        if image.endswith(f":{tag}"):  # tolerate a full reference in "image"
            image = image[: -len(tag) - 1]
        return cls(image=image, tag=tag, digest=str(raw["digest"]))

    def validated(self) -> Build:
        validate_image_name(self.image)
        validate_tag(self.tag)
        validate_digest(self.digest)
        return self


@dataclass(frozen=True)
class BumpRequest:
    env: str
    build: Build
    model_card: Path
    source_revision: str | None = None  # default: the tag (the tag is the source commit's SHA)
    image_name: str = DEFAULT_IMAGE_NAME
    force: bool = False
    push: bool = True
    remote: str = DEFAULT_REMOTE
    attempts: int = DEFAULT_ATTEMPTS


def resolve_source_revision(git: Git, requested: str | None, tag: str) -> str:
    revision = requested or tag
    if requested is None and not FULL_SHA_RE.match(tag):
        raise UsageError(
            f"tag {tag!r} is not a full git SHA, so it cannot stand for the source revision",
            "pass --source-revision SHA (the commit the image was built from)",
        )
    sha = git.resolve_commit(revision)
    if sha is None:
        raise UsageError(
            f"source revision {revision!r} is not a commit in this repository",
            "fetch the full history (actions/checkout with fetch-depth: 0) or fix the revision",
        )
    return sha


def bump(git: Git, root: Path, req: BumpRequest) -> str | None:
    """Returns the deploy commit's sha, or None when the environment already runs the build."""
    build = req.build.validated()
    overlay = Overlay.open(root, req.env)
    overlay.image_entry(req.image_name)  # fail early when the overlay has no image line
    card = load_card(req.model_card)
    verify_deployable(root, build.image, build.tag, build.digest)  # allowed, and in the registry
    kustomize = find_kustomize(root)
    git.require_clean()
    source = resolve_source_revision(git, req.source_revision, build.tag)
    branch: Branch = current_branch(git, req.remote, req.push)
    state = DeployState.of(build.image, build.tag, build.digest, source, card)
    created: list[Path] = []

    def apply() -> str | None:
        entry = overlay.image_entry(req.image_name)
        if entry.digest == build.digest and entry.new_name == build.image:
            say(f"{req.env} already runs {entry.reference}: nothing to do")
            return None
        check_not_older(git, overlay, entry, source, req.force)
        if not overlay.model_card.exists():
            created.append(overlay.model_card)
        set_image(kustomize, overlay, req.image_name, build.image, build.tag, build.digest)
        overlay.model_card.write_text(card.to_json(), encoding="utf-8")
        subject = f"deploy({req.env}): {req.image_name} {source[:12]} @ {build.digest[:19]}"
        body = (
            f"Set {overlay.rel_dir} image {req.image_name} to\n{state.reference}\n"
            f"(was {entry.reference}).\n\n"
            f"Model: {format_metrics(state.metrics)}\nData: {state.data_hash}"
        )
        trailers = state.trailers(req.env, "bump")
        if entry.digest:
            trailers.append((T_PREVIOUS, entry.digest))
        message = render_message(subject, body, trailers)
        return git.commit_paths(message, [overlay.rel_kustomization, overlay.rel_model_card])

    with restored_on_error(git, created):
        sync_with_remote(git, branch)
        sha = commit_and_push(git, branch, apply, req.attempts)
    if sha:
        where = f"pushed to {branch.remote_ref}" if branch.remote else f"on {branch.name} (local)"
        print(f"deployed {state.reference} to {req.env}: commit {sha[:12]} {where}")
    else:
        print(f"{req.env} already runs {build.digest}: no commit")
    return sha
