"""The CUDA training image (`make train-image TRAIN_VARIANT=gpu`, k8s-train/overlays/gpu).

Run by `make test-train-gpu-image`, not by `make test`: it builds from several GB of NVIDIA's
wheels (docs/training-cluster.md, "GPU"). This machine has no GPU, so what is checked is what
can be without one: TensorFlow in the image is the CUDA 12 / cuDNN 9 build, it reports no GPU
here, and the image's own entrypoint trains the sandbox's tiny run on the CPU, as it would on a
node whose GPU is missing. A run on a GPU is not claimed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tests.pipeline.test_pipeline_e2e import generate_dataset

from .conftest import ROOT, docker

pytestmark = pytest.mark.train_gpu_image

IMAGE_JSON = Path(
    os.environ.get("ELPV_TRAIN_GPU_IMAGE_JSON", ROOT / "build" / "train-image-gpu.json")
)
OVERRIDE = ROOT / "k8s-train" / "overlays" / "sandbox" / "params-override.yaml"
TRAINER_UID = 10001
PROBE = """
import json, tensorflow as tf
info = tf.sysconfig.get_build_info()
print(json.dumps({
    "built_with_cuda": tf.test.is_built_with_cuda(),
    "cuda_version": info.get("cuda_version"),
    "cudnn_version": info.get("cudnn_version"),
    "gpus": len(tf.config.list_physical_devices("GPU")),
}))
"""


@pytest.fixture(scope="module")
def image() -> str:
    if not IMAGE_JSON.is_file():
        pytest.fail(f"{IMAGE_JSON} is missing: `make train-push TRAIN_VARIANT=gpu` first")
    pushed = json.loads(IMAGE_JSON.read_text(encoding="utf-8"))
    assert pushed["tag"].endswith("-gpu"), pushed
    return f"{pushed['image']}:{pushed['tag']}@{pushed['digest']}"


def test_tensorflow_is_the_cuda_build_and_sees_no_gpu_here(image: str) -> None:
    run = docker("run", "--rm", "--entrypoint", "/opt/venv/bin/python", image, "-c", PROBE)
    probe = json.loads(run.stdout.strip().splitlines()[-1])
    assert probe["built_with_cuda"] is True
    assert str(probe["cuda_version"]).startswith("12"), probe
    assert str(probe["cudnn_version"]).startswith("9"), probe
    # No GPU on this machine: the next test's training ran on the CPU, and says nothing of a GPU.
    assert probe["gpus"] == 0


def test_the_entrypoint_trains_the_tiny_run_without_a_gpu(image: str, tmp_path: Path) -> None:
    volume = tmp_path / "data"
    generate_dataset(volume / "datasets" / "tiny")
    shutil.chown(volume, TRAINER_UID, TRAINER_UID)
    for path in volume.rglob("*"):
        shutil.chown(path, TRAINER_UID, TRAINER_UID)
    run = docker(
        "run", "--rm", "--read-only", "--tmpfs", "/tmp:rw,size=512m",
        "--user", f"{TRAINER_UID}:{TRAINER_UID}", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "-e", "TRAIN_RUN=gpu-image-test",
        "-v", f"{volume}:/data",
        "-v", f"{OVERRIDE}:/etc/elpv-train/params-override.yaml:ro",
        image,
        check=False,
        timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    trained = json.loads(
        (volume / "runs" / "gpu-image-test" / "metrics" / "train.json").read_text(encoding="utf-8")
    )
    assert trained["members"] == 1
    assert (volume / "runs" / "gpu-image-test" / "models" / "model.keras").stat().st_size > 0
