"""gitops' registry check against the real local registry (127.0.0.1:5000, `make
test-container` starts it): a digest that exists and matches its tag passes; a digest the
registry does not have, a tag that does not exist, and a tag that points at another manifest are
refused. The artefacts are tiny OCI images pushed here with the distribution API itself."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
import uuid

import pytest

from gitops.core.errors import UsageError
from gitops.core.registry import verify_in_registry

pytestmark = pytest.mark.container

REGISTRY = os.environ.get("ELPV_REGISTRY_ADDR", "127.0.0.1:5000")


def _send(method: str, url: str, body: bytes = b"", content_type: str = "") -> dict[str, str]:
    request = urllib.request.Request(url, data=body or None, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(response.headers)


def _blob(repository: str, data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location = _send("POST", f"http://{REGISTRY}/v2/{repository}/blobs/uploads/")["Location"]
    if location.startswith("/"):
        location = f"http://{REGISTRY}{location}"
    separator = "&" if "?" in location else "?"
    _send("PUT", f"{location}{separator}digest={digest}", data, "application/octet-stream")
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest,
            "size": len(data)}  # fmt: skip


def push_tiny_image(repository: str, tag: str, payload: str) -> str:
    """Push a one-layer OCI image under `tag`; returns the manifest digest."""
    config = _blob(repository, json.dumps({"architecture": "amd64", "os": "linux"}).encode())
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": [_blob(repository, payload.encode())],
        }
    ).encode()
    _send(
        "PUT",
        f"http://{REGISTRY}/v2/{repository}/manifests/{tag}",
        manifest,
        "application/vnd.oci.image.manifest.v1+json",
    )
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


@pytest.fixture(scope="module")
def pushed() -> tuple[str, str, str, str]:
    """(image, tag, digest, other digest): two tiny images in a fresh repository."""
    try:
        _send("GET", f"http://{REGISTRY}/v2/")
    except OSError as exc:
        pytest.fail(f"no registry at {REGISTRY} ({exc}): run with `make test-container`")
    repository = f"gitops-registry-check/{uuid.uuid4().hex[:12]}"
    tag = "a" * 40
    other = push_tiny_image(repository, "other", "another build")
    digest = push_tiny_image(repository, tag, "the build")
    return f"{REGISTRY}/{repository}", tag, digest, other


def test_a_pushed_tag_and_digest_pass(pushed: tuple[str, str, str, str]) -> None:
    image, tag, digest, _ = pushed
    verify_in_registry(image, tag, digest, env={})


def test_a_digest_the_registry_does_not_have_is_refused(
    pushed: tuple[str, str, str, str],
) -> None:
    image, tag, _, _ = pushed
    missing = "sha256:" + hashlib.sha256(b"never pushed").hexdigest()
    with pytest.raises(UsageError, match="does not exist in the registry"):
        verify_in_registry(image, tag, missing, env={})


def test_a_tag_that_names_another_manifest_is_refused(pushed: tuple[str, str, str, str]) -> None:
    image, tag, _, other = pushed
    with pytest.raises(UsageError, match=f"{image}:{tag} is sha256:[0-9a-f]{{64}} in the registry"):
        verify_in_registry(image, tag, other, env={})


def test_a_tag_that_does_not_exist_is_refused(pushed: tuple[str, str, str, str]) -> None:
    image, _, digest, _ = pushed
    with pytest.raises(UsageError, match=f"{image}:{'b' * 40} does not exist"):
        verify_in_registry(image, "b" * 40, digest, env={})
