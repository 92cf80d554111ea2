"""Is the build real? Ask its registry before an environment is pointed at it.

`gitops bump` and `gitops promote` call `verify_deployable` before they commit. It refuses, with
nothing changed (exit 2):

* an image outside the registries the repository allows (`gitops.toml`, `[registry] allowed`,
  repository prefixes such as `ghcr.io/elpv-gitops/`): a typo or a hostile `IMAGE` variable
  cannot deploy from elsewhere, and widening the list is a reviewed change to the repository;
* a digest the registry does not have (HEAD of the manifest by digest), and a tag that does not
  point at that digest (the registry's `Docker-Content-Digest` for the tag, or the SHA-256 of the
  manifest it returns): the commit names what the registry serves, not what a caller claims.

It speaks the OCI distribution API (`/v2/<name>/manifests/<reference>`), with the registry token
flow (401 + `WWW-Authenticate: Bearer realm=...`) when the registry asks for it; credentials for
that flow come from `REGISTRY_USERNAME` / `REGISTRY_PASSWORD` (in GitHub Actions: the actor and
the job's token with `packages: read`), anonymous otherwise. Registries on a loopback address (the
local `127.0.0.1:5000`) are spoken to over plain HTTP, every other one over HTTPS.

A repository without `gitops.toml` (the throwaway repositories of tests/gitops) has no policy:
the check is skipped with a notice on stderr.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gitops.core.errors import UsageError
from gitops.core.publish import say

CONFIG_FILE = "gitops.toml"
TIMEOUT_S = 15.0
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
# host[:port]/ followed by any number of path segments, each ending in '/'
_PREFIX = re.compile(r"[a-z0-9.-]+(:\d+)?/([a-z0-9._-]+/)*")


@dataclass(frozen=True)
class RegistryPolicy:
    """The registries (repository prefixes) a deploy may name, from the repository's config."""

    allowed: tuple[str, ...]
    source: Path

    @classmethod
    def load(cls, root: Path) -> RegistryPolicy | None:
        path = root / CONFIG_FILE
        if not path.is_file():
            return None
        try:
            config = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{CONFIG_FILE} is not valid TOML: {exc}") from exc
        allowed = config.get("registry", {}).get("allowed")
        if not isinstance(allowed, list) or not allowed:
            raise UsageError(
                f"{CONFIG_FILE} has no [registry] allowed list",
                'add e.g. `[registry]\\nallowed = ["ghcr.io/<owner>/"]`',
            )
        for prefix in allowed:
            if not (isinstance(prefix, str) and _PREFIX.fullmatch(prefix)):
                raise UsageError(
                    f"{CONFIG_FILE}: allowed entry {prefix!r} is not a registry or repository "
                    "prefix ending in '/'",
                    "write `ghcr.io/<owner>/` (one owner) or `127.0.0.1:5000/` (a registry)",
                )
        return cls(tuple(allowed), path)

    def check(self, image: str) -> None:
        if not any(image.startswith(prefix) for prefix in self.allowed):
            raise UsageError(
                f"image {image} is not in a registry this repository deploys from "
                f"({', '.join(self.allowed)})",
                f"push it to one of those, or widen [registry] allowed in {CONFIG_FILE} "
                "(a reviewed change)",
            )


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port]
    repository: str  # path inside the registry

    @classmethod
    def parse(cls, image: str) -> Reference:
        host, _, repository = image.partition("/")
        if not repository or not ("." in host or ":" in host or host == "localhost"):
            raise UsageError(
                f"image {image} names no registry host",
                "use a full name such as ghcr.io/<owner>/elpv-classifier",
            )
        return cls(host, repository)

    @property
    def base_url(self) -> str:
        hostname = self.registry.rsplit(":", 1)[0] if ":" in self.registry else self.registry
        return f"{'http' if _is_loopback(hostname) else 'https'}://{self.registry}"

    def manifest_url(self, reference: str) -> str:
        return f"{self.base_url}/v2/{self.repository}/manifests/{reference}"


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


class _Client:
    """HEAD/GET against one registry, fetching a bearer token once when challenged."""

    def __init__(self, ref: Reference, env: Mapping[str, str]) -> None:
        self.ref = ref
        self.env = env
        self.token: str | None = None

    def _open(self, method: str, url: str) -> tuple[int, Mapping[str, str], bytes]:
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # url is always http(s): built from Reference.base_url
        request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), b""
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UsageError(
                f"cannot reach the registry {self.ref.registry} ({reason})",
                "check the network and the registry name; nothing was committed",
            ) from exc

    def request(self, method: str, url: str) -> tuple[int, Mapping[str, str], bytes]:
        status, headers, body = self._open(method, url)
        challenge = _header(headers, "WWW-Authenticate")
        if status == 401 and self.token is None and challenge.lower().startswith("bearer "):
            self.token = self._fetch_token(challenge)
            status, headers, body = self._open(method, url)
        if status in (401, 403):
            raise UsageError(
                f"the registry {self.ref.registry} refused to show {self.ref.repository} "
                f"(HTTP {status})",
                "set REGISTRY_USERNAME and REGISTRY_PASSWORD to a read-only credential "
                "(in GitHub Actions: github.actor and GITHUB_TOKEN with packages: read)",
            )
        return status, headers, body

    def _fetch_token(self, challenge: str) -> str:
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.pop("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise UsageError(f"the registry {self.ref.registry} sent no usable token realm")
        params.setdefault("scope", f"repository:{self.ref.repository}:pull")
        query = urllib.parse.urlencode(params)
        request = urllib.request.Request(f"{realm}?{query}")  # noqa: S310 (http(s), checked)
        user, password = self.env.get("REGISTRY_USERNAME"), self.env.get("REGISTRY_PASSWORD")
        if user and password:
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
                answer = json.loads(response.read())
        except (urllib.error.URLError, TimeoutError, OSError, json.JSONDecodeError) as exc:
            raise UsageError(
                f"cannot get a pull token from {realm} for {self.ref.repository} ({exc})",
                "set REGISTRY_USERNAME and REGISTRY_PASSWORD to a read-only credential",
            ) from exc
        token = answer.get("token") or answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise UsageError(f"{realm} answered without a token")
        return token


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return ""


def _head_manifest(
    client: _Client, ref: Reference, reference: str, shown: str, hint: str
) -> Mapping[str, str]:
    """HEAD the manifest `reference` (a digest or a tag); its headers, or the reason it is not
    there."""
    status, headers, _ = client.request("HEAD", ref.manifest_url(reference))
    if status == 404:
        raise UsageError(f"{shown} does not exist in the registry (HTTP 404)", hint)
    if status != 200:
        raise UsageError(f"{ref.registry} answered HTTP {status} for {shown}")
    return headers


def verify_in_registry(
    image: str, tag: str, digest: str, env: Mapping[str, str] | None = None
) -> None:
    """The registry has `image@digest`, and `image:tag` is that same manifest."""
    ref = Reference.parse(image)
    client = _Client(ref, os.environ if env is None else env)
    _head_manifest(
        client, ref, digest, f"{image}@{digest}",
        "pass the digest the push returned (build/image.json, or the build step's output)",
    )  # fmt: skip
    headers = _head_manifest(
        client, ref, tag, f"{image}:{tag}",
        "pass the tag the build was pushed with (the source commit's SHA)",
    )  # fmt: skip
    tagged = _header(headers, "Docker-Content-Digest")
    if not tagged:  # the header is optional: hash what the registry serves for the tag
        _, _, body = client.request("GET", ref.manifest_url(tag))
        tagged = "sha256:" + hashlib.sha256(body).hexdigest()
    if tagged != digest:
        raise UsageError(
            f"{image}:{tag} is {tagged} in the registry, not {digest}",
            "the tag was pushed again or the digest belongs to another build; "
            "deploy the pair the push reported",
        )


def verify_deployable(root: Path, image: str, tag: str, digest: str) -> None:
    """The call site of bump and promote: policy first, then the registry itself."""
    policy = RegistryPolicy.load(root)
    if policy is None:
        say(f"no {CONFIG_FILE} in {root}: registry allow-list and digest check skipped")
        return
    policy.check(image)
    verify_in_registry(image, tag, digest)
    say(f"registry: {image}:{tag} is {digest}")
