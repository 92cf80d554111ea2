"""Environments are Kustomize overlays: `overlays/<env>/kustomization.yaml` with an `images:`
entry for the service image, plus `overlays/<env>/model-card.json`, the card of the model that
environment runs (docs/architecture.md, "Delivery contract").

The image line is only ever changed by the real `kustomize edit set image`, never by editing YAML
here: this module reads overlays with PyYAML and writes them with kustomize.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gitops.core.defaults import DEFAULT_IMAGE_NAME
from gitops.core.errors import OperationError, UsageError

OVERLAYS_DIR = "overlays"
MODEL_CARD_FILE = "model-card.json"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# Docker's tag grammar: https://github.com/distribution/reference (tag := [\w][\w.-]{0,127}).
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# An image name without tag or digest: optional registry host[:port]/, then path components.
IMAGE_NAME_RE = re.compile(rf"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*$")
ENV_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def validate_digest(digest: str) -> str:
    if not DIGEST_RE.match(digest):
        raise UsageError(
            f"malformed digest {digest!r}: expected 'sha256:' followed by 64 lowercase hex digits",
            "use the digest the registry printed on push (build/image.json has it)",
        )
    return digest


def validate_tag(tag: str) -> str:
    if not TAG_RE.match(tag):
        raise UsageError(
            f"malformed tag {tag!r}: a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -",
            "the image tag is the full git SHA of the source commit",
        )
    return tag


def validate_image_name(image: str) -> str:
    if "@" in image or ":" in image.rsplit("/", 1)[-1]:
        raise UsageError(
            f"image {image!r} carries a tag or digest",
            "pass the bare name (e.g. ghcr.io/org/elpv-classifier) and use --tag/--digest",
        )
    if not IMAGE_NAME_RE.match(image):
        raise UsageError(
            f"malformed image name {image!r}",
            "expected [registry[:port]/]path/name in lowercase, "
            "e.g. 127.0.0.1:5000/elpv-classifier",
        )
    return image


@dataclass(frozen=True)
class ImageEntry:
    """One `images:` entry of a kustomization."""

    name: str
    new_name: str | None
    new_tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        ref = self.new_name or self.name
        if self.new_tag:
            ref += f":{self.new_tag}"
        if self.digest:
            ref += f"@{self.digest}"
        return ref


def environments(root: Path) -> list[str]:
    base = root / OVERLAYS_DIR
    if not base.is_dir():
        return []
    return sorted(
        p.name for p in base.iterdir() if any((p / f).is_file() for f in KUSTOMIZATION_FILES)
    )


@dataclass(frozen=True)
class Overlay:
    root: Path
    env: str

    @classmethod
    def open(cls, root: Path, env: str) -> Overlay:
        known = environments(root)
        if not ENV_NAME_RE.match(env) or env not in known:
            raise UsageError(
                f"unknown environment {env!r}",
                f"known environments (overlays/*/kustomization.yaml): {', '.join(known) or 'none'}",
            )
        return cls(root, env)

    @property
    def rel_dir(self) -> str:
        return f"{OVERLAYS_DIR}/{self.env}"

    @property
    def path(self) -> Path:
        return self.root / self.rel_dir

    @property
    def kustomization(self) -> Path:
        for name in KUSTOMIZATION_FILES:
            if (self.path / name).is_file():
                return self.path / name
        raise UsageError(f"{self.rel_dir} has no kustomization.yaml")

    @property
    def rel_kustomization(self) -> str:
        return f"{self.rel_dir}/{self.kustomization.name}"

    @property
    def model_card(self) -> Path:
        return self.path / MODEL_CARD_FILE

    @property
    def rel_model_card(self) -> str:
        return f"{self.rel_dir}/{MODEL_CARD_FILE}"

    def image_entry(self, name: str = DEFAULT_IMAGE_NAME) -> ImageEntry:
        return image_entry_from_text(
            self.kustomization.read_text(encoding="utf-8"), name, self.rel_kustomization
        )


def image_entry_from_text(text: str, name: str, where: str) -> ImageEntry:
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{where} is not valid YAML: {exc}") from exc
    images = doc.get("images") if isinstance(doc, dict) else None
    for item in images or []:
        if isinstance(item, dict) and item.get("name") == name:
            return ImageEntry(
                name=name,
                new_name=_opt_str(item.get("newName")),
                new_tag=_opt_str(item.get("newTag")),
                digest=_opt_str(item.get("digest")),
            )
    raise UsageError(
        f"{where} has no `images:` entry named {name!r}",
        f"add one (images: [{{name: {name}, newName: ..., newTag: ...}}]) so that gitops "
        "has an image line to move; kustomize would otherwise add an unused entry",
    )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def find_kustomize(root: Path) -> str:
    """$KUSTOMIZE, else `kustomize` on PATH, else the repo's pinned build in .tools/bin."""
    explicit = os.environ.get("KUSTOMIZE")
    candidates = [explicit] if explicit else []
    on_path = shutil.which("kustomize")
    if on_path:
        candidates.append(on_path)
    candidates.append(str(root / ".tools" / "bin" / "kustomize"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return candidate
    raise UsageError(
        "kustomize not found" + (f" at $KUSTOMIZE={explicit}" if explicit else ""),
        "run `make tools` (builds the pinned kustomize into .tools/bin) or set KUSTOMIZE",
    )


def set_image(
    kustomize: str, overlay: Overlay, name: str, new_name: str, tag: str, digest: str
) -> ImageEntry:
    """`kustomize edit set image name=new_name:tag@digest`, then check that it did just that."""
    spec = f"{name}={new_name}:{tag}@{digest}"
    proc = subprocess.run(
        [kustomize, "edit", "set", "image", spec],
        cwd=overlay.path,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise OperationError(f"`kustomize edit set image {spec}` failed: {proc.stderr.strip()}")
    entry = overlay.image_entry(name)
    if (entry.new_name, entry.new_tag, entry.digest) != (new_name, tag, digest):
        raise OperationError(
            f"kustomize wrote {entry.reference} to {overlay.rel_kustomization}, "
            f"expected {new_name}:{tag}@{digest}"
        )
    return entry
