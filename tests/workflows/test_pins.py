"""Pins outside the `uses:` lines: the image's base by digest (kept fresh by Dependabot), and the
Go toolchain of the workflows by an exact version (docs/delivery.md, "Pins")."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
EXACT_GO = re.compile(r"^\d+\.\d+\.\d+$")


def dockerfile_default_base(text: str) -> tuple[str, bool]:
    """The image the Dockerfile builds from when no BASE_IMAGE is passed (as on GitHub), and
    whether it is a literal `FROM` line that Dependabot can read and update."""
    args: dict[str, str] = {}
    stages: dict[str, str] = {}
    first_stage_base: str | None = None
    for line in text.splitlines():
        if match := re.match(r"^ARG\s+(\w+)=(\S+)\s*$", line):
            args.setdefault(match[1], match[2])
        elif match := re.match(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$", line, re.IGNORECASE):
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), match[1])
            if match[2]:
                stages[match[2]] = match[1]
            if first_stage_base is None and "$" in match[1]:
                first_stage_base = image
    assert first_stage_base is not None, "no FROM ${BASE_IMAGE} line"
    literal = first_stage_base in stages
    base = stages.get(first_stage_base, first_stage_base)
    return base, literal and "$" not in base


def test_dockerfile_default_base_is_pinned_by_digest_in_a_from_line() -> None:
    base, literal = dockerfile_default_base((ROOT / "Dockerfile").read_text())
    assert base.startswith("python:3.11-slim@"), base
    assert DIGEST.search(base), f"the default base {base} is not pinned by digest"
    assert literal, "Dependabot reads FROM lines only: pin the base in a `FROM ... AS` stage"


def test_base_pin_checker_rejects_a_tag_or_an_arg_default() -> None:
    tag_only = "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE} AS build\n"
    base, _ = dockerfile_default_base(tag_only)
    assert not DIGEST.search(base)
    in_arg = "ARG BASE_IMAGE=python:3.11-slim@sha256:" + "a" * 64 + "\nFROM ${BASE_IMAGE}\n"
    base, literal = dockerfile_default_base(in_arg)
    assert DIGEST.search(base)
    assert not literal


def test_dependabot_updates_the_dockerfile_base_within_python_3_11() -> None:
    config: dict[str, Any] = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    docker = [u for u in config["updates"] if u["package-ecosystem"] == "docker"]
    assert [u["directory"] for u in docker] == ["/"], "the Dockerfile is at the root"
    ignored = {
        kind
        for rule in docker[0].get("ignore", [])
        if rule["dependency-name"] == "python"
        for kind in rule["update-types"]
    }
    assert "version-update:semver-minor" in ignored, "a new CPython minor breaks the venv path"
    assert "version-update:semver-patch" not in ignored


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_setup_go_is_pinned_to_one_exact_version_new_enough_for_every_go_mod() -> None:
    versions = set()
    for path in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            for step in job.get("steps", []):
                if step.get("uses", "").startswith("actions/setup-go@"):
                    version = str(step.get("with", {}).get("go-version", ""))
                    assert EXACT_GO.match(version), (
                        f"{path.name}: setup-go go-version {version!r} is not an exact version "
                        "(stable/1.x float with every Go release)"
                    )
                    versions.add(version)
    assert len(versions) == 1, f"the workflows disagree on the Go version: {sorted(versions)}"
    pinned = versions.pop()
    go_mods = sorted(p for p in ROOT.glob("**/go.mod") if ".tools" not in p.parts)
    assert go_mods, "no go.mod found"
    for go_mod in go_mods:
        directive = re.search(r"^go (\S+)$", go_mod.read_text(), re.MULTILINE)
        assert directive, f"{go_mod} has no go directive"
        assert _version(pinned) >= _version(directive[1]), (
            f"setup-go {pinned} is older than {go_mod.relative_to(ROOT)} (go {directive[1]}): "
            "the toolchain would be downloaded again at build time"
        )
