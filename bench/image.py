"""Image benchmark: size (with a breakdown), container start-to-ready and resident memory of the
serving image, next to the size of the same image with TensorFlow added (the runtime a naive
service would carry). Rewrites the `image` section of docs/benchmarks.md.

    make bench-image        (starts and stops dockerd and the registry itself)

Start-to-ready is measured twice per run: from `docker run` (what an orchestrator pays,
including container creation) and from the process start Docker records (what the service
itself pays). RSS is PID 1's VmRSS after readiness and after a burst of real predictions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

from bench.report import machine_line, write_section

ROOT = Path(__file__).resolve().parent.parent
DOCKER = shutil.which("/usr/bin/docker") or shutil.which("docker") or "docker"
# /tmp here is the container's tmpfs mount point, not a host temp file.
LOCKED_DOWN = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"]  # noqa: S108
LOCKED_DOWN += ["--security-opt", "no-new-privileges"]
TF_IMAGE = "elpv-classifier-tf-bench:local"
# Everything in the train group except TensorFlow's own closure.
TF_PRUNE = ["dvc", "matplotlib", "scikit-learn", "pyyaml", "elpv-dataset"]


def docker(*args: str, timeout: float = 900) -> str:
    result = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"bench/image.py: docker {' '.join(args[:3])} failed: {result.stderr}")
    return result.stdout


def mb(size: float) -> str:
    return f"{size / 1e6:,.0f} MB"


def layer_sizes(image: str) -> list[tuple[int, str]]:
    rows = docker(
        "history", "--human=false", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", image
    )
    out = []
    for line in rows.splitlines():
        size, _, created_by = line.partition("\t")
        if int(size) > 0:
            out.append((int(size), created_by))
    return out


def elpv_image() -> bytes:
    import elpv_dataset  # the dev venv has it (train group)

    return (Path(elpv_dataset.__file__).parent / "data" / "images" / "cell0001.png").read_bytes()


def predict(base_url: str, png: bytes) -> None:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="c.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(  # noqa: S310 (loopback http URL built here)
        f"{base_url}/v1/predict",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (http://127.0.0.1)
        response.read()


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise SystemExit(f"bench/image.py: no {field} for pid {pid}")


def one_start(image: str, png: bytes) -> dict[str, float]:
    """docker run -> /readyz 200; then RSS before and after 50 predictions."""
    started = time.monotonic()
    cid = docker(
        "run",
        "--detach",
        *LOCKED_DOWN,
        "--env",
        "CLASSIFIER_ALLOW_UNAUTHENTICATED=true",  # a benchmark, on loopback only
        "--publish",
        "127.0.0.1::8080",
        image,
    ).strip()
    try:
        port = docker("port", cid, "8080/tcp").split()[0].rsplit(":", 1)[1]
        base_url = f"http://127.0.0.1:{port}"
        deadline = started + 60
        while True:
            try:
                url = f"{base_url}/readyz"
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"bench/image.py: {image} not ready in 60 s")
            time.sleep(0.01)
        ready_wall = time.time()
        ready_after_run = time.monotonic() - started
        state = json.loads(docker("inspect", "--format", "{{json .State}}", cid))
        # Docker's StartedAt has nanoseconds; Python parses up to microseconds.
        started_at = state["StartedAt"]
        head, _, frac = started_at.rstrip("Z").partition(".")
        process_start = datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")
        ready_after_process = ready_wall - process_start.timestamp()
        pid = int(state["Pid"])
        rss_ready = vm_kib(pid, "VmRSS")
        for _ in range(50):
            predict(base_url, png)
        return {
            "ready_after_run_s": ready_after_run,
            "ready_after_process_s": ready_after_process,
            "rss_ready_mib": rss_ready / 1024,
            "rss_after_load_mib": vm_kib(pid, "VmRSS") / 1024,
            "hwm_mib": vm_kib(pid, "VmHWM") / 1024,
        }
    finally:
        subprocess.run([DOCKER, "rm", "--force", cid], capture_output=True, check=False)


def build_tensorflow_variant(base: str, model_dir: Path) -> float:
    """The same Dockerfile and code with tensorflow-cpu (and its closure) added to the
    wheelhouse, in a context of its own so the TF wheels never enter the real build's context."""
    context = ROOT / "build" / "bench-tf"
    if context.exists():
        shutil.rmtree(context)
    (context / "src").mkdir(parents=True)
    shutil.copytree(ROOT / "src" / "classifier", context / "src" / "classifier")
    shutil.rmtree(context / "src" / "classifier" / "pipeline")
    shutil.copytree(model_dir, context / "build" / "test-model")
    shutil.copy(ROOT / "Dockerfile", context / "Dockerfile")
    prune = " ".join(f"--prune {name}" for name in TF_PRUNE)
    wheel_cache = ROOT / "build" / "bench-tf-wheels"
    env = {**os.environ, "UV_EXPORT_EXTRA": f"--group train {prune}"}
    print(">> bench: TensorFlow wheelhouse (cached in build/bench-tf-wheels)", file=sys.stderr)
    subprocess.run([str(ROOT / "docker" / "wheelhouse.sh"), str(wheel_cache)], env=env, check=True)
    shutil.copytree(wheel_cache, context / "build" / "image")
    print(f">> bench: building {TF_IMAGE} (TensorFlow added; bench only)", file=sys.stderr)
    subprocess.run(
        [
            DOCKER,
            "build",
            "--quiet",
            "--tag",
            TF_IMAGE,
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--build-arg",
            "MODEL_DIR=build/test-model",
            str(context),
        ],
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    shutil.rmtree(context)
    return float(docker("image", "inspect", "--format", "{{.Size}}", TF_IMAGE))


def tf_import_seconds() -> float:
    started = time.monotonic()
    docker(
        "run",
        "--rm",
        *LOCKED_DOWN,
        "--entrypoint",
        "/opt/venv/bin/python",
        TF_IMAGE,
        "-c",
        "import tensorflow",
    )
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-json", type=Path, default=ROOT / "build" / "image.json")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "build" / "test-model")
    parser.add_argument("--base", required=True, help="the base image the image was built on")
    parser.add_argument(
        "--runs", type=int, default=5, help="container starts to take the median of"
    )
    parser.add_argument("--skip-tensorflow", action="store_true", help="no TensorFlow variant")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not args.image_json.is_file():
        parser.error(f"{args.image_json} is missing: `make push` writes it")

    pushed = json.loads(args.image_json.read_text(encoding="utf-8"))
    image = f"{pushed['image']}@{pushed['digest']}"
    size = float(docker("image", "inspect", "--format", "{{.Size}}", image))
    base_size = float(docker("image", "inspect", "--format", "{{.Size}}", args.base))
    layers = layer_sizes(image)
    png = elpv_image()

    print(f">> bench: {args.runs} cold starts of {image}", file=sys.stderr)
    runs = [one_start(image, png) for _ in range(args.runs)]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    tf_size = None if args.skip_tensorflow else build_tensorflow_variant(args.base, args.model_dir)
    tf_import = None if tf_size is None else tf_import_seconds()

    layer_rows = "\n".join(
        f"| {s / 1e6:,.1f} MB | {'`' + c.replace('|', '/')[:90] + '`' if c else '(the base)'} |"
        for s, c in layers
        if s > 100_000
    )
    tf_rows = (
        "| same Dockerfile + tensorflow-cpu 2.21 closure | n/a (`--skip-tensorflow`) | |"
        if tf_size is None
        else f"| same Dockerfile + tensorflow-cpu 2.21 closure | {mb(tf_size)} | "
        f"{tf_size / size:.1f}x; `import tensorflow` alone takes {tf_import:.1f} s in it |"
    )

    def timing_row(label: str, key: str) -> str:
        values = [r[key] for r in runs]
        return f"| {label} | {med(key):.2f} s | {min(values):.2f} s | {max(values):.2f} s |"

    tag = str(pushed["tag"])[:12]
    load = os.getloadavg()[0]
    markdown = f"""
## image

`make bench-image` (bench/image.py), {machine_line()}, load average {load:.1f} at the end.
Image `{pushed["image"]}:{tag}` built here on the local debootstrap base `{args.base}`.

| image | size | note |
|---|---|---|
| serving image (LiteRT, no TensorFlow) | {mb(size)} | budget 400 MB, aim 250 MB |
| of which the base (debootstrap, trimmed) | {mb(base_size)} | GitHub builds use python:3.11-slim |
{tf_rows}

Layers over 0.1 MB:

| size | created by |
|---|---|
{layer_rows}

Container start, median of {args.runs} (locked down: read-only root, tmpfs /tmp, no capabilities):

| measure | median | min | max |
|---|---|---|---|
{timing_row("`docker run` -> `/readyz` 200", "ready_after_run_s")}
{timing_row("process start -> `/readyz` 200", "ready_after_process_s")}
| RSS when ready | {med("rss_ready_mib"):.0f} MiB | | |
| RSS after 50 predictions | {med("rss_after_load_mib"):.0f} MiB | | peak {med("hwm_mib"):.0f} MiB |

Target: ready <= 1.5 s. The model is `{args.model_dir}`; a trained model adds its .tflite
size to the image and a little to load time and RSS.
"""
    write_section("image", markdown)
    print(
        f"bench-image: {mb(size)} image, ready in {med('ready_after_run_s'):.2f} s, "
        f"{med('rss_after_load_mib'):.0f} MiB RSS -> docs/benchmarks.md (section image)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
