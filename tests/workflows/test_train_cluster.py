"""train-cluster.yml (docs/pipeline.md, "Training in the cluster"): manual only, one run at a
time, the Job pinned to the digest its own image job pushed, the cluster credential only in the
job that needs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "train-cluster.yml"


def _load() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True)  # PyYAML reads the bare key `on` as True
    return doc


def test_manual_only_and_serialised() -> None:
    doc = _load()
    assert set(doc["on"]) == {"workflow_dispatch"}
    overlays = doc["on"]["workflow_dispatch"]["inputs"]["overlay"]["options"]
    assert overlays, "at least one kustomization to choose"
    for overlay in overlays:
        assert (ROOT / overlay / "kustomization.yaml").is_file(), overlay
    assert "k8s-train/overlays/sandbox" not in overlays, "the sandbox overlay is for tests"
    assert doc["concurrency"]["cancel-in-progress"] is False


def test_the_job_runs_the_image_its_image_job_pushed_by_digest() -> None:
    jobs = _load()["jobs"]
    build = next(s for s in jobs["image"]["steps"] if s.get("id") == "build")
    assert build["with"]["file"] == "docker/train.Dockerfile"
    assert build["with"]["context"].startswith("build/train-image")
    runs = [s.get("run") for s in jobs["image"]["steps"]]
    assert 'make train-context TRAIN_VARIANT="$TRAIN_VARIANT"' in runs
    assert jobs["job"]["needs"] == "image"
    (step,) = [s for s in jobs["job"]["steps"] if "run" in s]
    assert step["run"].startswith("make train-job ")
    # What make train-job saves of a run that pushed to a DVC remote is kept for train-pull.
    (upload,) = [s for s in jobs["job"]["steps"] if "upload-artifact" in s.get("uses", "")]
    assert upload["with"]["path"].rstrip("/") == "build/train-job"
    assert jobs["job"]["steps"].index(upload) > jobs["job"]["steps"].index(step)
    assert "needs.image.outputs.digest" in step["env"]["TRAIN_IMAGE"]
    assert "@" in step["env"]["TRAIN_IMAGE"]


def test_the_cluster_credential_reaches_only_the_job_step() -> None:
    jobs = _load()["jobs"]
    assert jobs["job"]["environment"] == "training"
    assert jobs["job"]["permissions"] == {"contents": "read"}
    with_secret = [
        (name, s.get("name", s.get("run", s.get("uses"))))
        for name, job in jobs.items()
        for s in job["steps"]
        if "TRAIN_KUBECONFIG" in str(s)
    ]
    (make_step,) = [s for s in jobs["job"]["steps"] if "run" in s]
    assert with_secret == [("job", make_step["run"])]


def test_the_gpu_overlay_gets_the_cuda_image_and_the_others_the_cpu_one() -> None:
    """TRAIN_VARIANT follows the overlay; context, tag and the Job's image follow the variant."""
    doc = _load()
    variant = doc["env"]["TRAIN_VARIANT"]
    assert variant == "${{ inputs.overlay == 'k8s-train/overlays/gpu' && 'gpu' || 'cpu' }}"
    jobs = doc["jobs"]
    build = next(s for s in jobs["image"]["steps"] if s.get("id") == "build")
    suffix = "${{ env.TRAIN_VARIANT == 'gpu' && '-gpu' || '' }}"
    assert build["with"]["context"] == f"build/train-image{suffix}"
    assert build["with"]["tags"].endswith(suffix)
    (step,) = [s for s in jobs["job"]["steps"] if "run" in s]
    assert f"{suffix}@" in step["env"]["TRAIN_IMAGE"]
    # The disk is freed for the CUDA image only, on GitHub's runners only (mk/train.mk).
    (free,) = [s for s in jobs["image"]["steps"] if s.get("run") == "make runner-disk-space"]
    assert free["if"] == "env.TRAIN_VARIANT == 'gpu'"
