"""The training Job's kustomizations (k8s-train/): how `gitops validate` renders and checks them.

They differ from the service's overlays in two ways, so they get their own rendering and
policies; schemas (kubeconform), kube-score and checkov run over them exactly as over the rest:

* the image is pinned per run (`make train-job`: `kustomize edit set image elpv-train=...` in a
  temporary copy), never in git, so validation renders them the same way with EXAMPLE_IMAGE;
* a Job is not a served Deployment: no HPA, PDB or Service, but a bounded run (no retry loop,
  a deadline, a TTL), and its data on a PersistentVolumeClaim that the same output declares.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gitops.commands.validate.manifests import (
    ALLOWED_VOLUME_TYPES,
    ROOT,
    ManifestError,
    Policy,
    Rules,
    _containers,
    _pod_templates,
    check_topology_spread,
    ref,
    render,
)

TRAIN_ROOT = ROOT / "k8s-train"
# The name the manifests use for the training image; `make train-job` replaces it.
IMAGE_PLACEHOLDER = "elpv-train"
# What validation pins in its place: the shape of a real pin (NAME:TAG@sha256:DIGEST).
EXAMPLE_IMAGE = f"registry.invalid/elpv-train:{'0' * 40}@sha256:{'0' * 64}"
# The Job keeps its data (the DVC cache) on a claim; nothing else changes from the service.
TRAIN_VOLUME_TYPES = ALLOWED_VOLUME_TYPES | {"persistentVolumeClaim"}

Resource = dict[str, Any]


def is_train_kustomization(directory: Path) -> bool:
    resolved = directory.resolve()
    return resolved == TRAIN_ROOT or TRAIN_ROOT in resolved.parents


def train_kustomizations() -> list[Path]:
    """k8s-train/base and every overlay under k8s-train/overlays (components are in them)."""
    found = [TRAIN_ROOT / "base"]
    found += sorted(
        p.parent for p in (TRAIN_ROOT / "overlays").glob("*/kustomization.yaml") if p.is_file()
    )
    return [p for p in found if (p / "kustomization.yaml").is_file()]


def render_train(kustomize: Path, directory: Path) -> str:
    """`kustomize build` of a copy of k8s-train with the image pinned as `make train-job` does."""
    resolved = directory.resolve()
    if not is_train_kustomization(resolved):
        raise ManifestError(f"{directory} is not inside {TRAIN_ROOT}")
    with tempfile.TemporaryDirectory(prefix="elpv-train-render-") as tmp:
        copy_root = Path(tmp) / "k8s-train"
        shutil.copytree(TRAIN_ROOT, copy_root)
        copy = copy_root / resolved.relative_to(TRAIN_ROOT)
        result = subprocess.run(
            [str(kustomize), "edit", "set", "image", f"{IMAGE_PLACEHOLDER}={EXAMPLE_IMAGE}"],
            cwd=copy,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ManifestError(
                f"kustomize edit set image in a copy of {directory} failed: {result.stderr.strip()}"
            )
        return render(kustomize, copy)


# --- policies --------------------------------------------------------------------------------


def check_job_image_is_set_per_run(resources: Sequence[Resource]) -> list[str]:
    """Every container runs the placeholder that `make train-job` pins, not an image from git."""
    problems: list[str] = []
    for workload, template in _pod_templates(resources):
        for container in _containers(template):
            image = str(container.get("image", ""))
            if image != EXAMPLE_IMAGE:
                problems.append(
                    f"{ref(workload)}: container {container.get('name')!r} image {image!r} is "
                    f"set in git; use the placeholder {IMAGE_PLACEHOLDER!r}, which `make "
                    "train-job` pins per run to the pushed training image (NAME:TAG@sha256:...)"
                )
    return problems


def check_job_is_bounded(resources: Sequence[Resource]) -> list[str]:
    """A training Job neither retries forever nor runs forever nor lingers forever."""
    problems: list[str] = []
    jobs = [r for r in resources if r.get("kind") == "Job"]
    if not jobs:
        problems.append("Job/?: no Job in the output; k8s-train/base/job.yaml defines it")
    for job in jobs:
        spec = job.get("spec", {})
        for key, why in (
            ("backoffLimit", "a failed training is reported, not retried on the same inputs"),
            ("activeDeadlineSeconds", "a hung run must end and release the node"),
            ("ttlSecondsAfterFinished", "finished Jobs and their pods must be cleaned up"),
        ):
            if not isinstance(spec.get(key), int):
                problems.append(f"{ref(job)}: spec.{key} is not set ({why})")
        restart = spec.get("template", {}).get("spec", {}).get("restartPolicy")
        if restart != "Never":
            problems.append(
                f"{ref(job)}: restartPolicy is {restart!r}; use Never (one attempt per run, "
                "whose log stays readable)"
            )
    return problems


def check_volumes_are_declared(resources: Sequence[Resource]) -> list[str]:
    """Only TRAIN_VOLUME_TYPES, and every claim a pod mounts is in the same output."""
    problems: list[str] = []
    claims = {
        (r.get("metadata", {}).get("namespace"), r["metadata"]["name"])
        for r in resources
        if r.get("kind") == "PersistentVolumeClaim"
    }
    for workload, template in _pod_templates(resources):
        namespace = workload.get("metadata", {}).get("namespace")
        for volume in template.get("spec", {}).get("volumes", []):
            types = set(volume) - {"name"}
            if not types <= TRAIN_VOLUME_TYPES:
                problems.append(
                    f"{ref(workload)}: volume {volume.get('name')!r} is of type "
                    f"{', '.join(sorted(types - TRAIN_VOLUME_TYPES))}; the training Job may use "
                    f"{', '.join(sorted(TRAIN_VOLUME_TYPES))} (its data lives on the claim)"
                )
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim is not None and (namespace, claim) not in claims:
                problems.append(
                    f"{ref(workload)}: volume {volume.get('name')!r} mounts the claim {claim!r}, "
                    "which this output does not declare (k8s-train/base/pvc.yaml)"
                )
    return problems


def check_namespace_is_restricted(resources: Sequence[Resource]) -> list[str]:
    """The Job's namespace is in the output and enforces the restricted Pod Security level."""
    problems: list[str] = []
    namespaces = {r["metadata"]["name"]: r for r in resources if r.get("kind") == "Namespace"}
    for workload, _ in _pod_templates(resources):
        name = workload.get("metadata", {}).get("namespace")
        labels = namespaces.get(name, {}).get("metadata", {}).get("labels", {})
        if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
            problems.append(
                f"{ref(workload)}: its namespace {name!r} is not in the output or does not "
                "enforce pod-security.kubernetes.io/enforce=restricted "
                "(k8s-train/base/namespace.yaml)"
            )
    return problems


TRAIN_POLICIES: Mapping[str, Policy] = {
    "train-image-per-run": check_job_image_is_set_per_run,
    "train-job-bounded": check_job_is_bounded,
    "train-volumes": check_volumes_are_declared,
    "train-namespace-restricted": check_namespace_is_restricted,
    "topology-spread": check_topology_spread,
}


def rules_for(directory: Path) -> Rules:
    """validate_all's `rules`: the training Job's for k8s-train/, the service's elsewhere."""
    if is_train_kustomization(directory):
        return Rules(render=render_train, policies=TRAIN_POLICIES)
    return Rules()
