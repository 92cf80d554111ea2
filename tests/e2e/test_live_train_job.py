"""The train stage as a Kubernetes Job on the sandbox's real node (docs/pipeline.md, "Training
in the cluster").

`make e2e-live` pushes the training image (`make train-push`) and the serving image, then this
module starts the sandbox with `--live`, writes a few generated images onto the training
volume (the static PersistentVolume `up --live` makes, sandbox/train_volume.py), and runs
`make train-job TRAIN_OVERLAY=k8s-train/overlays/sandbox`, the workflow's own entry point: the
Job runs `dvc repro train` (prepare + train, one epoch) in the training image under restricted
Pod Security, and the test reads the outputs from the volume's directory on the host. The Job
pushes its outputs to a DVC remote on a second, shared claim (components/shared-dvc-remote), and
`k8s-train/pull-model.sh` (`make train-pull`) brings the model back into a fresh workspace on
the host by the hashes of the run's dvc.lock. A second run shows that the DVC cache on the claim
outlives the pod. The last test stops the sandbox and checks that the host is left as it was.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from tests.pipeline.test_pipeline_e2e import generate_dataset  # the same tiny ELPV-like cells

from .conftest import ENV_FILE, ROOT, SANDBOX_PY, Sandbox, live_sandbox
from .test_live_node import load_sandbox_module, processes

pytestmark = pytest.mark.live

TRAIN_IMAGE_JSON = Path(
    os.environ.get("ELPV_TRAIN_IMAGE_JSON", ROOT / "build" / "train-image.json")
)
OVERLAY = "k8s-train/overlays/sandbox"
NAMESPACE = "elpv-train"
JOB = "elpv-train"
# A cold pull of the ~1.6 GB training image, then TensorFlow's import and one tiny epoch on
# 2 shared cores.
JOB_TIMEOUT_S = int(os.environ.get("E2E_TRAIN_TIMEOUT", "600"))
TIMINGS_FILE = ROOT / "build" / "sandbox-live-train.json"
TRAINER_UID = 10001
# Where `make train-job` saves the run's dvc.lock and metrics/train.json (the hand-back).
HANDBACK = ROOT / "build" / "sandbox-train-job"


@pytest.fixture(scope="module")
def module() -> ModuleType:
    return load_sandbox_module()


@pytest.fixture(scope="module")
def host_before(module: ModuleType) -> dict[str, Any]:
    if ENV_FILE.exists():
        pytest.fail(f"a sandbox is already up ({ENV_FILE}): `make sandbox-down` first")
    if not TRAIN_IMAGE_JSON.exists():
        pytest.fail(f"{TRAIN_IMAGE_JSON} is missing: `make train-push` first (make e2e-live does)")
    snapshot: dict[str, Any] = module.host_snapshot()
    return snapshot


@pytest.fixture(scope="module")
def live(host_before: dict[str, Any]) -> Iterator[Sandbox]:
    with live_sandbox() as box:
        try:
            yield box
        finally:
            TIMINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
            TIMINGS_FILE.write_text(json.dumps(box.timings, indent=2))


def volume(box: Sandbox) -> Path:
    return Path(box.env["state_dir"]) / "node" / "train-volume"


def remote(box: Sandbox) -> Path:
    """The DVC remote's claim, as the host sees it (a runner mounting the share would)."""
    return Path(box.env["state_dir"]) / "node" / "dvc-remote"


def cached(root: Path, md5: str) -> Path:
    return root / "files" / "md5" / md5[:2] / md5[2:]


def train_job(box: Sandbox) -> tuple[subprocess.CompletedProcess[str], float]:
    """`make train-job` against the sandbox, as the workflow runs it against a real cluster."""
    started = time.monotonic()
    proc = subprocess.run(
        [
            "make",
            "-s",
            "train-job",
            f"TRAIN_OVERLAY={OVERLAY}",
            f"TRAIN_IMAGE_JSON={TRAIN_IMAGE_JSON}",
            f"TRAIN_TIMEOUT={JOB_TIMEOUT_S}",
            f"TRAIN_HANDBACK={HANDBACK}",
            f"KUBECTL={box.env['kubectl']}",
        ],
        cwd=ROOT,
        env={**os.environ, "KUBECONFIG": box.env["kubeconfig"]},
        capture_output=True,
        text=True,
        check=False,
        timeout=JOB_TIMEOUT_S + 180,
    )
    return proc, time.monotonic() - started


def job_uid(box: Sandbox) -> str:
    job = box.get("job", JOB, NAMESPACE)
    assert job is not None
    uid: str = job["metadata"]["uid"]
    return uid


def test_the_claim_binds_to_the_sandbox_volume(live: Sandbox) -> None:
    pv = json.loads(live.kubectl("get", "pv", "elpv-train-data-sandbox", "-o", "json").stdout)
    assert pv["spec"]["local"]["path"] == str(volume(live))
    claim = pv["spec"]["claimRef"]
    assert (claim["namespace"], claim["name"]) == (NAMESPACE, "elpv-train-data")
    assert volume(live).stat().st_uid == TRAINER_UID


def test_the_job_trains_on_the_claim_and_leaves_model_and_metrics_there(live: Sandbox) -> None:
    data = volume(live) / "datasets" / "tiny"
    generate_dataset(data)
    proc, seconds = train_job(live)
    live.timings["first run (cold image pull + prepare + train)"] = round(seconds, 1)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert f"Job {NAMESPACE}/{JOB} completed" in out
    assert "Running stage 'train'" in out

    job = live.get("job", JOB, NAMESPACE)
    assert job is not None
    assert job["status"]["succeeded"] == 1
    # The claim the Job mounted is bound to the sandbox's static volume.
    pvc = live.get("pvc", "elpv-train-data", NAMESPACE)
    assert pvc is not None
    assert pvc["status"]["phase"] == "Bound"
    assert pvc["spec"]["volumeName"] == "elpv-train-data-sandbox"
    # The namespace enforces restricted Pod Security, and the pod was admitted to it.
    ns = live.get("namespace", NAMESPACE, "")
    assert ns is not None
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    run = volume(live) / "runs" / job_uid(live)
    trained = json.loads((run / "metrics" / "train.json").read_text(encoding="utf-8"))
    # The sandbox overlay's params override reached the stage: one member, one epoch.
    assert trained["members"] == 1
    assert [m["best_epoch"] for m in trained["per_member"].values()] == [1]
    params = yaml.safe_load((run / "params.yaml").read_text(encoding="utf-8"))
    assert params["base"]["data_dir"] == "/data/datasets/tiny"
    assert params["train"]["epochs"] == 1
    # The model is in the workspace and in the DVC cache on the claim, under dvc.lock's hash.
    lock = yaml.safe_load((run / "dvc.lock").read_text(encoding="utf-8"))
    outs = {o["path"]: o for o in lock["stages"]["train"]["outs"]}
    md5 = outs["models/model.keras"]["md5"]
    in_cache = cached(volume(live) / "dvc-cache", md5)
    assert in_cache.is_file()
    assert in_cache.stat().st_size == (run / "models" / "model.keras").stat().st_size > 0
    # Pushed to the shared remote, and the run's lock handed back to the caller.
    assert cached(remote(live), md5).read_bytes() == (run / "models" / "model.keras").read_bytes()
    assert (HANDBACK / "dvc.lock").read_bytes() == (run / "dvc.lock").read_bytes()
    assert (HANDBACK / "metrics" / "train.json").read_bytes() == (
        run / "metrics" / "train.json"
    ).read_bytes()
    assert "the run's dvc.lock metrics/train.json ->" in out
    # Written by the image's non-root user.
    assert (run / "metrics" / "train.json").stat().st_uid == TRAINER_UID
    # The prepared splits were made from the 48 generated images on the claim.
    with (run / "data" / "prepared" / "splits.csv").open(encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 48


def test_the_model_comes_back_through_the_dvc_remote(live: Sandbox, tmp_path: Path) -> None:
    """`make train-pull`'s script in a fresh workspace: the model, by the run's lock, from the
    remote alone (the claim with the DVC cache is not looked at)."""
    run = volume(live) / "runs" / job_uid(live)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    shutil.copy(ROOT / "dvc.yaml", workspace)
    # The run's params (the sandbox overlay overrides some), so `dvc status` can compare.
    shutil.copy(run / "params.yaml", workspace)
    dvc = str(ROOT / ".venv" / "bin" / "dvc")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=workspace, check=True)
    proc = subprocess.run(
        [str(ROOT / "k8s-train" / "pull-model.sh"), str(HANDBACK), str(workspace)],
        env={**os.environ, "DVC": dvc, "TRAIN_REMOTE": str(remote(live))},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for out in ("models/model.keras", "metrics/train.json"):
        assert (workspace / out).read_bytes() == (run / out).read_bytes(), out
    assert (workspace / "dvc.lock").read_bytes() == (HANDBACK / "dvc.lock").read_bytes()


def test_a_second_run_reuses_the_cache_on_the_claim(live: Sandbox) -> None:
    """A new Job (new pod, same claim) finds both stages in DVC's run cache: nothing retrains."""
    first = job_uid(live)
    proc, seconds = train_job(live)
    live.timings["second run (cached stages)"] = round(seconds, 1)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert job_uid(live) != first
    assert "Stage 'train' is cached - skipping run" in out
    assert "Running stage 'train'" not in out
    second = volume(live) / "runs" / job_uid(live)
    a = yaml.safe_load((volume(live) / "runs" / first / "dvc.lock").read_text(encoding="utf-8"))
    b = yaml.safe_load((second / "dvc.lock").read_text(encoding="utf-8"))
    assert a["stages"]["train"]["outs"] == b["stages"]["train"]["outs"]


def test_down_leaves_nothing_on_the_host(
    live: Sandbox, module: ModuleType, host_before: dict[str, Any]
) -> None:
    """The Job's volume mounts and the files its non-root user wrote go with `down`."""
    state = Path(live.env["state_dir"])
    subprocess.run([*SANDBOX_PY, "down"], check=True)
    after = module.host_snapshot()
    assert module.host_leftovers(host_before, after) == []
    assert not state.exists(), f"{state} left after down"
    leftover = [pid for pid, cmdline in processes() if str(state) in cmdline]
    assert leftover == [], f"processes still referring to {state}: {leftover}"
