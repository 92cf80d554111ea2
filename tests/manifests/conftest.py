"""Shared fixtures: the pinned tools (built by `make manifest-tools`) and the rendered overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gitops.commands.validate import manifests

ROOT = manifests.ROOT
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def tools() -> manifests.Toolchain:
    toolchain = manifests.Toolchain.from_env()
    missing = toolchain.missing()
    if missing:
        # A failure, not a skip: the default suite must run these checks (`make unit` builds them).
        pytest.fail("; ".join(missing) + ". Run `make manifest-tools` first.")
    return toolchain


@pytest.fixture(scope="session")
def rendered(tools: manifests.Toolchain) -> dict[str, list[dict[str, Any]]]:
    """environment -> the objects `kustomize build overlays/<env>` renders."""
    return {
        env: manifests.parse(manifests.render(tools.kustomize, ROOT / "overlays" / env))
        for env in manifests.ENVIRONMENTS
    }


@pytest.fixture(scope="session")
def argocd_rendered(tools: manifests.Toolchain) -> list[dict[str, Any]]:
    return manifests.parse(manifests.render(tools.kustomize, ROOT / "argocd"))


def only(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single object of `kind` (the tests assume exactly one)."""
    found = [r for r in resources if r["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[manifests.ref(r) for r in found]}"
    return found[0]
