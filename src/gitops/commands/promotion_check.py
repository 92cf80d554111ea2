"""The promotion PR's required check: what would merge is what staging runs, healthy.

    gitops promotion-check --env prod --from staging   (make promotion-check)

It reads the image the checked-out tree pins for `--env` (the PR's head: exactly what merging
would deploy), then asks Argo CD about the `--from` environment's Application and turns green
only when that Application is `Synced`, `Healthy` and not mid-sync
(`GET /api/v1/applications/<name>`) and each Deployment it manages runs that image pinned by that
digest, rolled out: the live Deployment, read by Argo CD from the cluster at the time of the
check (`GET /api/v1/applications/<name>/resource?kind=Deployment...`), has the digest in its pod
template and every replica updated and available, so every pod that serves runs the digest (a
reference with a digest is pulled by that digest). The Application's `status.summary.images`
and the Pod nodes of its resource tree are not used: both come from the controller's cache, and
the kwok sandbox leaves them empty. The verdict names the digest
(stdout, and the job summary in GitHub Actions), so the check a reviewer sees belongs to one
build: a re-push of the branch runs it again, and dismisses the approvals (docs/delivery.md,
"An approval covers what merges").

On a PR that leaves the environment's image as it is on the base (`--base`, in CI the merge
commit's first parent), there is nothing to check and it passes, so it can be required on every
PR.

Argo CD is reached at `ARGOCD_SERVER` (https://host[:port]) with `ARGOCD_AUTH_TOKEN`, the token of
an account that may only `get` the staging Application. Exit codes: 0 ready, 1 not ready (with
every reason), 2 invalid input or Argo CD unreachable.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gitops.core.errors import EXIT_FAILURE, UsageError
from gitops.core.git import Git
from gitops.core.overlay import Overlay

TIMEOUT_S = 20.0


def _split(reference: str) -> tuple[str, str]:
    """name[:tag]@digest -> (name, digest); the digest is "" when the reference has none."""
    named, _, digest = reference.partition("@")
    last = named.rsplit("/", 1)[-1]
    name = named.rsplit(":", 1)[0] if ":" in last else named
    return name, digest


def deployments(application: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(namespace, name) of every Deployment the Application manages (`status.resources`)."""
    found = []
    for resource in (application.get("status") or {}).get("resources") or []:
        if resource.get("group") == "apps" and resource.get("kind") == "Deployment":
            found.append((str(resource.get("namespace", "")), str(resource.get("name", ""))))
    return sorted(found)


def rollout_problems(deployment: Mapping[str, Any], image: str, digest: str) -> list[str]:
    """Why the live `deployment` does not serve image@digest from every replica."""
    meta = deployment.get("metadata") or {}
    name = f"Deployment {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    spec = deployment.get("spec") or {}
    template = (spec.get("template") or {}).get("spec") or {}
    containers = [*(template.get("initContainers") or []), *(template.get("containers") or [])]
    references = [str(c.get("image", "")) for c in containers]
    ours = [r for r in references if _split(r)[0] == image]
    if not ours or any(_split(r)[1] != digest for r in ours):
        return [
            f"{name} does not run {image}@{digest} (it runs {', '.join(references) or 'nothing'})"
        ]
    status = deployment.get("status") or {}
    want = spec.get("replicas", 1)
    found = []
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        found.append(f"{name}: the controller has not seen its latest change yet")
    for field in ("updatedReplicas", "availableReplicas", "replicas"):
        if status.get(field, 0) != want:
            found.append(
                f"{name}: {status.get(field, 0)} {field} of {want}: the rollout is not done"
            )
    return found


def problems(
    application: Mapping[str, Any],
    live: Mapping[tuple[str, str], Mapping[str, Any]],
    image: str,
    digest: str,
) -> list[str]:
    """Why `application` (Argo CD's JSON) and its `live` Deployments (by namespace and name)
    are not a healthy, synced, rolled-out run of image@digest."""
    name = application.get("metadata", {}).get("name", "?")
    status = application.get("status") or {}
    found: list[str] = []
    sync = (status.get("sync") or {}).get("status", "Unknown")
    if sync != "Synced":
        found.append(f"{name} is {sync}, not Synced")
    health = (status.get("health") or {}).get("status", "Unknown")
    if health != "Healthy":
        found.append(f"{name} is {health}, not Healthy")
    operation = (status.get("operationState") or {}).get("phase")
    if operation == "Running":
        found.append(f"{name} is still syncing")
    if not live:
        found.append(f"{name} does not run {image}@{digest} (it manages no Deployment)")
    for deployment in live.values():
        found += rollout_problems(deployment, image, digest)
    return found


def fetch_json(server: str, token: str, path: str, what: str) -> dict[str, Any]:
    """GET `path` from Argo CD's API; `what` names the object in errors."""
    parsed = urllib.parse.urlparse(server)
    if parsed.scheme not in {"https", "http"} or not parsed.netloc:
        raise UsageError(
            f"ARGOCD_SERVER {server!r} is not an http(s) URL", "e.g. https://argocd.example.com"
        )
    url = f"{server.rstrip('/')}{path}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise UsageError(
            f"Argo CD answered HTTP {exc.code} for {what}",
            "check ARGOCD_AUTH_TOKEN (an account allowed to `get` the application) and the name",
        ) from exc
    except (urllib.error.URLError, TimeoutError, OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {what} from {server} ({exc})") from exc
    if not isinstance(answer, dict):
        raise UsageError(f"Argo CD sent no JSON object for {what}")
    return answer


def fetch_application(server: str, token: str, name: str) -> dict[str, Any]:
    """The Application object (sync, health, operation state)."""
    path = f"/api/v1/applications/{urllib.parse.quote(name)}"
    return fetch_json(server, token, path, f"application {name}")


def fetch_deployment(
    server: str, token: str, application: str, namespace: str, name: str
) -> dict[str, Any]:
    """The live Deployment, as Argo CD reads it from the cluster now (the same `get`
    permission as the application)."""
    query = urllib.parse.urlencode(
        {"namespace": namespace, "resourceName": name, "group": "apps", "version": "v1",
         "kind": "Deployment"}
    )  # fmt: skip
    path = f"/api/v1/applications/{urllib.parse.quote(application)}/resource?{query}"
    what = f"Deployment {namespace}/{name} of application {application}"
    answer = fetch_json(server, token, path, what)
    try:
        manifest = json.loads(answer["manifest"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise UsageError(f"Argo CD sent no manifest for {what}") from exc
    if not isinstance(manifest, dict):
        raise UsageError(f"Argo CD sent no manifest for {what}")
    return manifest


def digest_at(git: Git, revision: str, env: str, name: str) -> str | None:
    """The digest `overlays/<env>` pins for image `name` at `revision` (None: none pinned)."""
    text = git.run("show", f"{revision}:overlays/{env}/kustomization.yaml", check=False)
    if text.returncode != 0:
        raise UsageError(
            f"cannot read overlays/{env}/kustomization.yaml at {revision}: {text.stderr.strip()}",
            "check out with enough history for the base (fetch-depth: 2 on a PR's merge commit)",
        )
    config = yaml.safe_load(text.stdout) or {}
    for image in config.get("images") or []:
        if image.get("name") == name:
            digest = image.get("digest")
            return str(digest) if digest else None
    return None


@dataclass(frozen=True)
class PromotionCheckRequest:
    env: str  # the environment the PR changes
    source: str  # where that image must already run
    application: str | None  # Argo CD application (default elpv-classifier-<source>)
    name: str  # the image name in `images:`
    base: str | None  # the PR's base revision: the image unchanged there means nothing to check


def promotion_check(
    args: PromotionCheckRequest, root: Path, env: Mapping[str, str] | None = None
) -> int:
    """0 when staging runs what the PR would deploy, Synced and Healthy; 1 with the reasons."""
    env = os.environ if env is None else env
    entry = Overlay.open(root, args.env).image_entry(args.name)
    if not (entry.digest and entry.new_name):
        raise UsageError(f"overlays/{args.env} pins no image name and digest: nothing to check")
    if args.base and digest_at(Git(root), args.base, args.env, args.name) == entry.digest:
        print(f"overlays/{args.env} keeps {entry.digest}: no promotion in this change")
        return 0
    application = args.application or f"elpv-classifier-{args.source}"
    server, token = env.get("ARGOCD_SERVER", ""), env.get("ARGOCD_AUTH_TOKEN", "")
    if not server or not token:
        raise UsageError(
            "ARGOCD_SERVER and ARGOCD_AUTH_TOKEN must be set",
            "repository variable ARGOCD_SERVER, secret ARGOCD_AUTH_TOKEN (docs/delivery.md)",
        )
    app = fetch_application(server, token, application)
    live = {
        (namespace, name): fetch_deployment(server, token, application, namespace, name)
        for namespace, name in deployments(app)
    }
    found = problems(app, live, entry.new_name, entry.digest)
    verdict = (
        f"{args.env} would run {entry.reference}; {args.source} ({application}) runs "
        f"{entry.digest}, Synced and Healthy"
        if not found
        else f"{args.env} would run {entry.reference}; NOT ready: " + "; ".join(found)
    )
    print(verdict)
    summary = env.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(f"### Promotion check: `{entry.digest}`\n\n{verdict}\n")
    return 0 if not found else EXIT_FAILURE
