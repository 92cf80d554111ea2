"""Serving benchmark: the exported model in-process vs the service over HTTP vs two baselines,
all in one run, on one machine. Rewrites the `serving` section of docs/benchmarks.md and writes
docs/img/serving-latency.png.

    make bench-serving            (~6 min on 2 cores; `make soak` runs only the 60 s soak)
    .venv/bin/python -m bench.serving --ab-only          # micro-batching on vs off only
    .venv/bin/python -m bench.serving --batch-sizes 1 4 8 16 --ab-rounds 3 --seconds 5
                                  # MAX_BATCH_SIZE against peak and tail only (~4 min)

What it measures (see /work/shared/design/BENCHMARKS.md):
- raw: LiteRT interpreter throughput in this process at batch 1 and the best batch size;
- served: requests/s and p50/p95/p99 latency at concurrency 1, 4, 16 (closed loop: vegeta with
  `-rate=0 -max-workers=C`, keep-alive, one real 300x300 ELPV PNG per request), for the service
  with micro-batching on, off, and on with a 2 ms wait: the micro-batching decision's numbers;
- served fraction = served img/s at saturation / raw img/s at the best batch;
- p99 vs p50 at half of peak load (open loop: vegeta at a fixed rate);
- start-to-ready (process spawn -> first 200 from /readyz) and resident memory (VmRSS, VmHWM);
- a soak at ~80 % of peak throughput: errors and RSS over time;
- baselines: Keras `predict()` per request (naive) and a TensorFlow `tf.function` service.

The load generator shares the 2 cores with the server (as does any other work on the machine):
numbers are for "server + client on one box"; the load average at each step is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import machine_line, write_section

ROOT = Path(__file__).resolve().parent.parent
PNG = ROOT / "docs" / "img" / "serving-latency.png"
VEGETA = os.environ.get("VEGETA", str(ROOT / ".tools" / "bin" / "vegeta"))
CONCURRENCY = (1, 4, 16)


def log(message: str) -> None:
    print(f">> {message}", flush=True)


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine_times() -> tuple[int, int]:
    """(all, idle + iowait) CPU ticks of the whole machine since boot, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]


# --------------------------------------------------------------------------------------------
# The model under test


def prepare_model(out: Path) -> tuple[Path, str]:
    """The pipeline's model (the train and export stages' outputs) if present, else one of the
    same architecture exported by the pipeline code (untrained: speed depends on the
    architecture, not the weights)."""
    from classifier.pipeline.stages import output

    dvc_file = ROOT / "dvc.yaml"
    real = [
        output("export", "model.tflite", dvc_file),
        output("export", "model_card.json", dvc_file),
        output("train", "model.keras", dvc_file),
    ]
    if all(path.is_file() for path in real):
        # A snapshot: `dvc repro` may rewrite the outputs while the benchmark runs.
        snapshot = out.parent / "bench-serving-pipeline-model"
        snapshot.mkdir(parents=True, exist_ok=True)
        for path in real:
            shutil.copy2(path, snapshot / path.name)
        version = json.loads((snapshot / "model_card.json").read_text())["version"]
        return snapshot, f"the pipeline's model (dvc repro output, version {version})"
    if not (out / "model.keras").is_file() or _architecture(out) != _architecture(None):
        log(f"no pipeline model: exporting a model of the pipeline's architecture into {out}")
        build_pipeline_architecture(out)
    return out, (
        f"no pipeline model: the pipeline's architecture ({_architecture(None)}, from "
        "params.yaml), built and exported by the pipeline's code, untrained (speed depends on "
        "the architecture only)"
    )


def _recipe() -> Any:
    """params.yaml's recipe (`classifier.pipeline.recipe.Recipe`)."""
    import yaml

    from classifier.pipeline.recipe import Recipe

    return Recipe.from_params(yaml.safe_load((ROOT / "params.yaml").read_text()))


def _architecture(model_dir: Path | None) -> dict[str, Any]:
    """image_size, filters, stem stride and ensemble size of a bench model (its card), or of
    params.yaml now (None)."""
    if model_dir is None:
        recipe = _recipe()
        return {
            "image_size": recipe.image_size,
            "filters": list(recipe.filters),
            "stem_stride": recipe.stem_stride,
            "ensemble": recipe.ensemble,
        }
    try:
        card = json.loads((model_dir / "model_card.json").read_text())
        return dict(card["params"]["bench"])
    except (OSError, KeyError, ValueError):
        return {}


def build_pipeline_architecture(out: Path) -> None:
    """Build the pipeline's model from params.yaml and export it with the pipeline's code.

    Untrained: inference speed depends on the architecture only, and the card says so."""
    sys.path.insert(0, str(ROOT / "tests"))
    from classifier.pipeline.export import export_bundle
    from classifier.pipeline.model import average_members, build_model
    from classifier.pipeline.train import make_deterministic
    from conftest import tiny_training_images  # type: ignore[import-not-found]  # shared sampler

    recipe = _recipe()
    make_deterministic(0)
    model = average_members(
        [
            build_model(recipe, channels=1, name=f"elpv_cnn_member{i + 1}")
            for i in range(recipe.ensemble)
        ]
    )
    x, _y, _types = tiny_training_images(recipe.image_size)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    export_bundle(
        model,
        out,
        name="elpv-defect-cnn-bench",
        metrics={"accuracy": 0.0, "balanced_accuracy": 0.0, "roc_auc": 0.0, "f1": 0.0},
        params={"bench": _architecture(None)},
        data_hash="bench",
        threshold=0.5,
        parity_images=x,
        parity_tolerance=1e-4,
        extra={"purpose": "benchmark: the pipeline's architecture, untrained"},
    )


def sample_png() -> bytes:
    """One real ELPV cell (300x300 8-bit PNG) from the installed dataset package."""
    from classifier.pipeline.ingest import package_data_dir

    source = package_data_dir()
    first = (source / "labels.csv").read_text().splitlines()[0].split()[0]
    return (source / first).read_bytes()


# --------------------------------------------------------------------------------------------
# Raw in-process throughput


def raw_throughput(
    model_dir: Path,
    threads: int,
    seconds: float = 2.0,
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
) -> dict[int, float]:
    """Images per second of `model_dir`'s model.tflite by batch size (input shape from its card)."""
    from classifier.model_card import ModelCard

    card = ModelCard.load(model_dir / "model_card.json")
    shape = (card.input.height, card.input.width, 1)
    return tflite_throughput(model_dir / "model.tflite", shape, threads, seconds, batches)


def tflite_throughput(
    tflite: Path,
    shape: tuple[int, int, int],
    threads: int,
    seconds: float = 2.0,
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
    clock: Callable[[], float] = time.perf_counter,
) -> dict[int, float]:
    """Images per second of one .tflite file by batch size, after a short warm-up. With
    `clock=time.process_time` the seconds are this process's CPU seconds (all its threads), so
    1000 / the result is the model's CPU ms per image."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tflite), num_threads=threads)
    index = it.get_input_details()[0]["index"]
    out_index = it.get_output_details()[0]["index"]
    rng = np.random.default_rng(0)
    results = {}
    for batch in batches:
        it.resize_tensor_input(index, [batch, *shape])
        it.allocate_tensors()
        x = rng.random((batch, *shape), dtype=np.float32)
        for _ in range(3):
            it.set_tensor(index, x)
            it.invoke()
        done, started = 0, clock()
        while clock() - started < seconds:
            it.set_tensor(index, x)
            it.invoke()
            it.get_tensor(out_index)
            done += batch
        results[batch] = done / (clock() - started)
    return results


# --------------------------------------------------------------------------------------------
# Servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, key: str) -> float:
    """VmRSS / VmHWM of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    ready_s: float
    rss_ready_mib: float
    log_path: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def compile_bytecode(python: str) -> None:
    """Byte-compile what a server runs (its Python's site-packages, and our `src`), once.

    A deployed server starts from compiled bytecode: pip compiles packages at install and the
    image build compiles the service (Dockerfile). A dev venv made by uv has no bytecode, and
    with PYTHONDONTWRITEBYTECODE set every start compiles every module it imports again, which
    took most of a start here. Without this, start-to-ready measures the compiler. Cheap after
    the first run (compileall skips files whose bytecode is current).
    """
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    log(f"byte-compiling {purelib} and src/ (once; later runs only check)")
    # Not checked: a few packages ship files that do not compile (Python 2 examples, templates).
    subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", purelib, str(ROOT / "src")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


def start(
    name: str,
    argv: list[str],
    env: dict[str, str],
    port: int,
    workdir: Path,
    ready_path: str = "/readyz",
) -> Server:
    log_path = workdir / f"{name}.log"
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited {process.returncode}: {log_path.read_text()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}{ready_path}", timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.perf_counter() - started > 120:
            process.kill()
            raise RuntimeError(f"{name} not ready in 120 s")
        time.sleep(0.01)
    ready = time.perf_counter() - started
    return Server(name, process, url, ready, proc_status(process.pid, "VmRSS"), log_path)


def start_service(model_dir: Path, workdir: Path, name: str, **settings: str) -> Server:
    port = free_port()
    env = {
        "CLASSIFIER_MODEL_DIR": str(model_dir),
        "CLASSIFIER_HOST": "127.0.0.1",
        "CLASSIFIER_PORT": str(port),
        "CLASSIFIER_LOG_LEVEL": "warning",
        "CLASSIFIER_ALLOW_UNAUTHENTICATED": "true",  # a benchmark, on loopback only
        **{f"CLASSIFIER_{k.upper()}": v for k, v in settings.items()},
    }
    return start(name, [sys.executable, "-m", "classifier.serving"], env, port, workdir)


def start_baseline(module: str, model_dir: Path, workdir: Path, name: str) -> Server:
    port = free_port()
    env = {"BASELINE_MODEL_DIR": str(model_dir), "BASELINE_PORT": str(port)}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return start(name, [sys.executable, "-m", module], env, port, workdir)


# --------------------------------------------------------------------------------------------
# Load (vegeta)


@dataclass
class Load:
    requests: int
    rps: float
    success: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    status_codes: dict[str, int]
    load_avg: float
    # Server CPU per request: unlike req/s it hardly moves when other work takes the cores.
    server_cpu_ms: float = float("nan")
    # vegeta's own CPU, in cores: the client shares the machine with the server.
    client_cores: float = float("nan")
    # The whole machine's busy share of its CPUs (server, vegeta, anything else): the rest is CPU
    # nobody could use.
    machine_busy: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)


class Body:
    """A multipart body file with one image, as vegeta sends it."""

    def __init__(self, png: bytes, workdir: Path) -> None:
        boundary = "benchboundary7MA4YWxkTrZu0gW"
        self.path = workdir / "body.bin"
        self.path.write_bytes(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="cell.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
            + png
            + f"\r\n--{boundary}--\r\n".encode()
        )
        self.content_type = f"multipart/form-data; boundary={boundary}"


def attack(
    url: str,
    body: Body,
    seconds: float,
    *,
    concurrency: int | None = None,
    rate: float | None = None,
    pid: int | None = None,
    path: str = "/v1/predict",
) -> Load:
    """Closed loop (`concurrency`: that many requests always in flight) or open loop (`rate`)."""
    argv = [
        VEGETA,
        "attack",
        f"-duration={seconds}s",
        "-timeout=30s",
        f"-body={body.path}",
        f"-header=Content-Type: {body.content_type}",
    ]
    if concurrency is not None:
        argv += ["-rate=0", f"-workers={concurrency}", f"-max-workers={concurrency}"]
    else:
        argv += [f"-rate={round(rate or 1)}/1s", "-workers=8", "-max-workers=256"]
    load_avg = load_average()
    server_cpu = cpu_seconds(pid) if pid is not None else None
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    all_ticks, idle_ticks = machine_times()
    wall = time.perf_counter()
    attack_proc = subprocess.run(
        argv, input=f"POST {url}{path}\n".encode(), capture_output=True, check=True
    )
    wall = time.perf_counter() - wall
    all_after, idle_after = machine_times()
    machine_busy = 1 - (idle_after - idle_ticks) / max(all_after - all_ticks, 1)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cores = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime) / wall
    server_cpu_s = (
        cpu_seconds(pid) - server_cpu if pid is not None and server_cpu is not None else None
    )
    report = subprocess.run(
        [VEGETA, "report", "-type=json"], input=attack_proc.stdout, capture_output=True, check=True
    )
    data = json.loads(report.stdout)
    lat = data["latencies"]
    return Load(
        requests=int(data["requests"]),
        rps=float(data["throughput"]),  # successful requests per second
        success=float(data["success"]),
        p50_ms=lat["50th"] / 1e6,
        p95_ms=lat["95th"] / 1e6,
        p99_ms=lat["99th"] / 1e6,
        max_ms=lat["max"] / 1e6,
        status_codes={str(k): int(v) for k, v in (data.get("status_codes") or {}).items()},
        load_avg=load_avg,
        server_cpu_ms=(
            1000 * server_cpu_s / max(int(data["requests"]), 1)
            if server_cpu_s is not None
            else float("nan")
        ),
        client_cores=client_cores,
        machine_busy=machine_busy,
    )


def sweep(server: Server, body: Body, seconds: float) -> dict[int, Load]:
    attack(server.url, body, 2, concurrency=4)  # warm-up, not recorded
    results = {}
    for c in CONCURRENCY:
        results[c] = attack(server.url, body, seconds, concurrency=c, pid=server.process.pid)
        r = results[c]
        log(
            f"  {server.name} c={c}: {r.rps:.0f} req/s  "
            f"p50 {r.p50_ms:.1f} ms  p99 {r.p99_ms:.1f} ms  "
            f"server CPU {r.server_cpu_ms:.2f} ms/req  vegeta {r.client_cores:.2f} cores"
        )
    return results


def soak(server: Server, body: Body, rate: float, seconds: float) -> tuple[Load, list[float]]:
    """`seconds` at a fixed rate while sampling the server's RSS every second."""
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            samples.append(proc_status(server.process.pid, "VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = attack(server.url, body, seconds, rate=rate)
    finally:
        stop.set()
        sampler.join()
    return result, samples


AB_OFF, AB_ON = "off (max batch 1)", "on (max batch 16, wait 0)"
AB_CONCURRENCY = (1, 4, 16, 64)


def interleaved(
    model_dir: Path,
    workdir: Path,
    body: Body,
    configs: dict[str, dict[str, str]],
    rounds: int,
    seconds: float,
    concurrency: tuple[int, ...],
) -> dict[str, dict[int, list[Load]]]:
    """One service per config (settings as `start_service` takes them), all up at once (an idle
    one costs no CPU), the load alternating between them step by step (the order flips every
    round), so all see the same background noise."""
    servers = {
        name: start_service(model_dir, workdir, f"ab-{i}", **settings)
        for i, (name, settings) in enumerate(configs.items())
    }
    results: dict[str, dict[int, list[Load]]] = {n: {c: [] for c in concurrency} for n in servers}
    try:
        for server in servers.values():
            attack(server.url, body, 2, concurrency=4)  # warm-up
        for round_ in range(rounds):
            order = list(servers.items())
            if round_ % 2:
                order.reverse()
            for c in concurrency:
                for name, server in order:
                    load = attack(server.url, body, seconds, concurrency=c, pid=server.process.pid)
                    results[name][c].append(load)
            log(
                f"  round {round_ + 1}: "
                + "; ".join(
                    f"{n} " + " ".join(f"c={c} {r[c][-1].rps:.0f}" for c in concurrency)
                    for n, r in results.items()
                )
            )
    finally:
        for server in servers.values():
            server.stop()
    return results


def batching_ab(
    model_dir: Path,
    workdir: Path,
    body: Body,
    rounds: int,
    seconds: float,
    concurrency: tuple[int, ...] = AB_CONCURRENCY,
) -> dict[str, dict[int, list[Load]]]:
    """Micro-batching on vs off, interleaved."""
    configs = {
        AB_OFF: {"max_batch_size": "1"},
        AB_ON: {"max_batch_size": "16", "max_batch_wait_ms": "0"},
    }
    return interleaved(model_dir, workdir, body, configs, rounds, seconds, concurrency)


SWEEP_CONCURRENCY = (4, 16)


def batch_size_sweep(
    model_dir: Path, workdir: Path, body: Body, sizes: list[int], rounds: int, seconds: float
) -> dict[str, dict[int, list[Load]]]:
    """`MAX_BATCH_SIZE` at each of `sizes` (wait 0), interleaved: what a batch size trades
    between peak req/s and the tail."""
    configs = {
        f"max batch {b}": {"max_batch_size": str(b), "max_batch_wait_ms": "0"} for b in sizes
    }
    return interleaved(model_dir, workdir, body, configs, rounds, seconds, SWEEP_CONCURRENCY)


def sweep_rows(results: dict[str, dict[int, list[Load]]]) -> list[str]:
    """Markdown: per config and concurrency, median req/s (each round), p50, p99, server CPU
    per request, and req/s against the last config as the median of per-round ratios."""
    import statistics

    last = list(results.values())[-1]
    rows = [
        "| config | concurrency | req/s (rounds) | p50 ms | p99 ms | server CPU ms per request "
        f"| req/s / {list(results)[-1]}'s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_c in results.items():
        for c, loads in by_c.items():
            ratios = [x.rps / y.rps for x, y in zip(loads, last[c], strict=True) if y.rps > 0]
            rounds = ", ".join(f"{x.rps:.0f}" for x in loads)
            rows.append(
                f"| {name} | {c} | {statistics.median(x.rps for x in loads):.0f} ({rounds}) "
                f"| {statistics.median(x.p50_ms for x in loads):.1f} "
                f"| {statistics.median(x.p99_ms for x in loads):.1f} "
                f"| {statistics.median(x.server_cpu_ms for x in loads):.2f} "
                f"| {statistics.median(ratios):.2f} |"
            )
    return rows


# --------------------------------------------------------------------------------------------
# Report


def fmt_row(name: str, loads: dict[int, Load]) -> str:
    cells = [
        f"{loads[c].rps:.0f} / {loads[c].p50_ms:.1f} / "
        f"{loads[c].p95_ms:.1f} / {loads[c].p99_ms:.1f}"
        for c in CONCURRENCY
    ]
    return f"| {name} | " + " | ".join(cells) + " |"


def plot(variants: dict[str, dict[int, Load]], soak_rss: list[float], soak_rate: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, loads) in enumerate(variants.items()):
        color = colors[i % len(colors)]
        xs = [loads[c].rps for c in CONCURRENCY]
        ax1.plot(xs, [loads[c].p50_ms for c in CONCURRENCY], "o-", color=color, label=name)
        ax1.plot(xs, [loads[c].p99_ms for c in CONCURRENCY], "x--", color=color)
    ax1.set_xlabel("throughput (req/s; points = concurrency 1, 4, 16)")
    ax1.set_ylabel("latency (ms): p50 solid, p99 dashed")
    ax1.set_yscale("log")
    ax1.set_title("latency under load")
    ax1.legend(fontsize=7)
    names = list(variants)
    ax2.barh(
        names,
        [max(v[c].rps for c in CONCURRENCY) for v in variants.values()],
        color=[colors[i % len(colors)] for i in range(len(names))],
    )
    ax2.invert_yaxis()
    ax2.set_xlabel("peak req/s (1 image each)")
    ax2.set_title("peak throughput")
    ax2.tick_params(axis="y", labelsize=7)
    ax3.plot(range(1, len(soak_rss) + 1), soak_rss)
    ax3.set_ylim(0, max([*soak_rss, 1]) * 1.3)
    ax3.set_xlabel("seconds")
    ax3.set_ylabel("RSS (MiB)")
    ax3.set_title(f"soak at {soak_rate:.0f} req/s: resident memory")
    fig.tight_layout()
    PNG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PNG, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="per load step")
    parser.add_argument("--soak-seconds", type=float, default=60)
    parser.add_argument("--soak-only", action="store_true", help="only the soak (make soak)")
    parser.add_argument("--ab-rounds", type=int, default=4, help="micro-batching A/B rounds")
    parser.add_argument(
        "--ab-only",
        action="store_true",
        help="only the micro-batching A/B (--seconds per step), printed as Markdown",
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        metavar="N",
        help="only a MAX_BATCH_SIZE sweep at these sizes (--ab-rounds rounds), printed as Markdown",
    )
    parser.add_argument("--model-dir", type=Path, default=ROOT / "build" / "bench-serving-model")
    args = parser.parse_args(argv)
    if args.batch_sizes and min(args.batch_sizes) < 1:
        parser.error("--batch-sizes: every size must be >= 1")
    if not Path(VEGETA).is_file():
        sys.exit(f"vegeta not found at {VEGETA}: run `make vegeta` (or set VEGETA=)")

    from classifier.serving.cpu import available_cpus
    from classifier.serving.settings import Settings

    threads = available_cpus()
    defaults = Settings(allow_unauthenticated=True)  # the defaults; servers get their own env
    model_dir, model_source = prepare_model(args.model_dir)
    compile_bytecode(sys.executable)
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    body = Body(sample_png(), workdir)
    servers: list[Server] = []
    try:
        if args.soak_only:
            server = start_service(model_dir, workdir, "service")
            servers.append(server)
            peak = attack(server.url, body, args.seconds, concurrency=16).rps
            rate = 0.8 * peak
            log(f"soak: {args.soak_seconds:.0f} s at {rate:.0f} req/s (80 % of {peak:.0f})")
            result, rss = soak(server, body, rate, args.soak_seconds)
            settled = rss[15:] or rss
            ok = result.success == 1.0 and max(settled) - min(settled) < 5.0
            log(
                f"soak: {result.requests} requests, success {result.success:.4f}, "
                f"RSS {min(rss):.1f}..{max(rss):.1f} MiB: {'PASS' if ok else 'FAIL'}"
            )
            sys.exit(0 if ok else 1)
        if args.batch_sizes or args.ab_only:
            # Only an interleaved comparison, printed as Markdown under what it ran on.
            loads = [load_average()]
            if args.batch_sizes:
                log(f"max batch sizes {args.batch_sizes}, interleaved, {args.ab_rounds} rounds")
                rows = sweep_rows(
                    batch_size_sweep(
                        model_dir, workdir, body, args.batch_sizes, args.ab_rounds, args.seconds
                    )
                )
            else:
                log(f"micro-batching A/B, interleaved, {args.ab_rounds} rounds")
                ab = batching_ab(model_dir, workdir, body, args.ab_rounds, args.seconds)
                rows = [*AB_HEADER, *ab_rows(ab)]
            loads.append(load_average())
            print(
                f"Model: {model_source}. {args.ab_rounds} rounds x {args.seconds:g} s per step; "
                f"load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end.\n"
            )
            print("\n".join(rows))
            return

        log(f"model: {model_source}; CPUs {threads}, interpreter threads {defaults.model_threads}")
        # Raw at the service's interpreter thread count and at all the CPUs: the served
        # fraction divides by the best of them, whichever the service uses.
        raws = {
            t: raw_throughput(model_dir, t) for t in sorted({1, defaults.model_threads, threads})
        }
        best_threads, best_batch = max(
            ((t, b) for t, r in raws.items() for b in r), key=lambda tb: raws[tb[0]][tb[1]]
        )
        raw = raws[best_threads]
        for t, r in raws.items():
            best_t = max(r, key=lambda b: r[b])
            log(
                f"raw, {t} thread(s): batch 1 {r[1]:.0f} img/s, "
                f"best batch {best_t}: {r[best_t]:.0f} img/s"
            )

        variants: dict[str, dict[int, Load]] = {}
        starts: dict[str, tuple[float, float, float]] = {}

        def measure_server(name: str, server: Server) -> None:
            """Sweep the concurrency levels, record start-up and memory, stop the server."""
            servers.append(server)
            variants[name] = sweep(server, body, args.seconds)
            starts[name] = (
                server.ready_s,
                server.rss_ready_mib,
                proc_status(server.process.pid, "VmHWM"),
            )
            server.stop()

        product = (
            f"service (defaults: max batch {defaults.max_batch_size}, "
            f"wait {defaults.max_batch_wait_ms:g} ms)"
        )
        # The micro-batching decision: the defaults next to batching off and other settings.
        configs: dict[str, dict[str, str]] = {product: {}}
        for size, wait in ((1, 0), (8, 0), (16, 0), (16, 2)):
            if (size, wait) == (defaults.max_batch_size, defaults.max_batch_wait_ms):
                continue
            label = "no batching" if size == 1 else f"max batch {size}, wait {wait} ms"
            configs[f"service, {label}"] = {
                "max_batch_size": str(size),
                "max_batch_wait_ms": str(wait),
            }
        if threads > 1:  # the interpreter-threads decision: the other end of the range
            other = 1 if defaults.model_threads != 1 else threads
            configs[f"service, interpreter threads {other}"] = {"interpreter_threads": str(other)}
        raw_near: dict[int, float] = {}
        for name, settings in configs.items():
            if name == product:
                # The machine is shared: measure raw again right before the served run it is
                # divided into, so the served fraction compares like with like.
                raw_near = raw_throughput(model_dir, best_threads, batches=(1, best_batch))
            log(f"served: {name}")
            measure_server(name, start_service(model_dir, workdir, "service", **settings))
        for name, module in {
            "baseline: Keras predict() per request": "bench.baselines.keras_predict_server",
            "baseline: TensorFlow tf.function": "bench.baselines.tf_runtime_server",
        }.items():
            log(f"served: {name}")
            measure_server(
                name, start_baseline(module, model_dir, workdir, name.split(":")[1].strip())
            )

        log(f"micro-batching A/B, interleaved, {args.ab_rounds} rounds")
        ab = batching_ab(model_dir, workdir, body, args.ab_rounds, min(args.seconds, 6))
        log(f"half load, then soak, on: {product}")
        server = start_service(model_dir, workdir, "service")
        servers.append(server)
        ready_s = server.ready_s
        peak = max(variants[product][c].rps for c in CONCURRENCY)
        # Other work on the machine changes what "peak" is minute to minute: half of a peak
        # measured minutes ago may be more than the server can do now, and the p99 then
        # measures a queue. So the peak is measured again right before the half-load step.
        peak_now = attack(server.url, body, 5, concurrency=16).rps
        half = attack(server.url, body, max(args.seconds, 15), rate=peak_now / 2)
        log(
            f"  half load {peak_now / 2:.0f} req/s (peak now {peak_now:.0f}): "
            f"p50 {half.p50_ms:.1f} ms p99 {half.p99_ms:.1f} ms"
        )
        soak_rate = 0.8 * peak
        soak_result, soak_rss = soak(server, body, soak_rate, args.soak_seconds)
        log(
            f"  soak {soak_rate:.0f} req/s: {soak_result.requests} requests, success "
            f"{soak_result.success:.4f}, RSS {min(soak_rss):.1f}..{max(soak_rss):.1f} MiB"
        )
        exit_code = server.stop()

        plot(variants, soak_rss, soak_rate)
        write_report(
            model_source=model_source,
            threads=threads,
            model_threads=defaults.model_threads,
            raws=raws,
            best_threads=best_threads,
            raw=raw,
            raw_near=raw_near,
            ab=ab,
            best_batch=best_batch,
            variants=variants,
            starts=starts,
            product=product,
            ready_s=ready_s,
            half=half,
            peak=peak,
            peak_now=peak_now,
            soak_result=soak_result,
            soak_rss=soak_rss,
            soak_rate=soak_rate,
            soak_seconds=args.soak_seconds,
            seconds=args.seconds,
            exit_code=exit_code,
        )
        log(f"wrote docs/benchmarks.md section 'serving' and {PNG.relative_to(ROOT)}")
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def ab_rows(ab: dict[str, dict[int, list[Load]]]) -> list[str]:
    """Markdown rows: per concurrency, req/s (each round), p99 and server CPU per request of
    both, and on / off as the median of per-round ratios."""
    import statistics

    off, on = ab[AB_OFF], ab[AB_ON]

    def med(loads: list[Load], key: str) -> float:
        return float(statistics.median(float(getattr(x, key)) for x in loads))

    rows = []
    for c in off:
        ratios = [b.rps / a.rps for a, b in zip(off[c], on[c], strict=True) if a.rps > 0]
        cells = []
        for loads in (off[c], on[c]):
            rounds = ", ".join(f"{x.rps:.0f}" for x in loads)
            cells.append(
                f"{med(loads, 'rps'):.0f} ({rounds}) / {med(loads, 'p99_ms'):.1f} / "
                f"{med(loads, 'server_cpu_ms'):.2f}"
            )
        rows.append(f"| {c} | {cells[0]} | {cells[1]} | {statistics.median(ratios):.2f} |")
    return rows


AB_HEADER = [
    "| concurrency | off (max batch 1): req/s (rounds) / p99 ms / server CPU ms per request "
    "| on (max batch 16, wait 0): same | on / off req/s, median of per-round ratios |",
    "|---|---|---|---|",
]


def write_report(**r: Any) -> None:
    raw, best, raw_near = r["raw"], r["best_batch"], r["raw_near"]
    # Denominator: the better of the two raw measurements (a conservative fraction).
    raw_best = max(raw[best], raw_near.get(best, 0.0))
    variants: dict[str, dict[int, Load]] = r["variants"]
    product = r["product"]
    keras_name = "baseline: Keras predict() per request"
    tf_name = "baseline: TensorFlow tf.function"
    sat = max(variants[product][c].rps for c in CONCURRENCY)
    frac4 = variants[product][4].rps / raw_best
    frac_sat = sat / raw_best
    # What the cores allow: CPU per request (server + load generator) against all the CPUs.
    top = variants[product][16]
    client_ms = 1000 * top.client_cores / top.rps if top.rps else float("nan")
    ceiling = 1000 * r["threads"] / (top.server_cpu_ms + client_ms)
    half: Load = r["half"]
    soak_result: Load = r["soak_result"]
    rss: list[float] = r["soak_rss"]
    ready_s, rss_ready, hwm = r["starts"][product]
    lines = [
        "## Serving",
        "",
        f"Command: `make bench-serving` (bench/serving.py). Machine: {machine_line()}. "
        f"Model: {r['model_source']}. CPUs: {r['threads']} (the quota; decode pool size), "
        f"interpreter threads: {r['model_threads']} (`INTERPRETER_THREADS` default). "
        f"Load: vegeta on the same machine (client and server share the cores), one 300x300 "
        f"ELPV PNG per request, keep-alive, {r['seconds']:.0f} s per step after a warm-up. "
        "Other work on the machine at the time shows in the load-average column.",
        "",
        "### Raw model throughput (LiteRT, in-process, no HTTP, no decoding)",
        "",
        "| interpreter threads \\ batch | " + " | ".join(str(b) for b in raw) + " |",
        "|---|" + "---|" * len(raw),
        *(
            f"| {t} | " + " | ".join(f"{v:.0f}" for v in rt.values()) + " |"
            for t, rt in r["raws"].items()
        ),
        "",
        f"Best: {r['best_threads']} thread(s), batch {best} ({raw[best]:.0f} img/s); batch 1: "
        f"{raw[1]:.0f} img/s. Measured "
        f"again right before the product configuration's served run: batch {best} "
        f"{raw_near.get(best, float('nan')):.0f} img/s. The served fraction divides by the "
        f"higher of the two ({raw_best:.0f} img/s).",
        "",
        "### Served (HTTP): req/s / p50 / p95 / p99 ms, by concurrency",
        "",
        "| server | c=1 | c=4 | c=16 | server CPU ms/req at c=4 / vegeta cores | start-to-ready "
        "| RSS ready / peak (MiB) | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, loads in variants.items():
        ready, rss_r, peak_rss = r["starts"][name]
        load_avg = max(loads[c].load_avg for c in CONCURRENCY)
        lines.append(
            fmt_row(name, loads)
            + f" {loads[4].server_cpu_ms:.2f} / {loads[4].client_cores:.2f} |"
            + f" {ready:.2f} s | {rss_r:.0f} / {peak_rss:.0f} | {load_avg:.1f} |"
        )
    ratio = {
        name: sat / max(variants[name][c].rps for c in CONCURRENCY)
        for name in (keras_name, tf_name)
    }
    p99_ratio = half.p99_ms / half.p50_ms
    soak_ok = soak_result.success == 1.0
    # Allocator arenas and caches fill during the first seconds; "flat" is judged after that.
    settled = rss[15:] or rss
    rss_growth = settled[-1] - settled[0]
    flat = max(settled) - min(settled) < 5.0
    lines += [
        "",
        f"### Against the targets (product configuration: {product})",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| served fraction at c=4 (img/s / raw best-batch img/s) | {frac4:.2f} "
        "| >= 0.7 (aim 0.85) |",
        f"| served fraction at saturation | {frac_sat:.2f} | |",
        f"| server CPU per request at c=16 / CPU it got | {top.server_cpu_ms:.2f} ms / "
        f"{top.rps * top.server_cpu_ms / 1000:.2f} cores of {r['threads']} | |",
        f"| ceiling if the server had all {r['threads']} cores: {r['threads']} / (server + "
        f"vegeta CPU per request) | {ceiling:.0f} req/s = fraction {ceiling / raw_best:.2f} | |",
        f"| p99 / p50 at half of peak ({r['peak_now'] / 2:.0f} req/s, open loop, half of "
        f"{r['peak_now']:.0f} req/s at c=16 measured just before; load avg "
        f"{half.load_avg:.1f}) | {half.p99_ms:.1f} / {half.p50_ms:.1f} ms = {p99_ratio:.2f} "
        "| <= 3 |",
        f"| start-to-ready (spawn -> /readyz 200) | {ready_s:.2f} s | <= 2 s |",
        f"| resident memory ready / peak under load | {rss_ready:.0f} / {hwm:.0f} MiB "
        "| <= 150 MB |",
        f"| soak {r['soak_seconds']:.0f} s at {r['soak_rate']:.0f} req/s (80 % of peak; load "
        f"avg {soak_result.load_avg:.1f}) | "
        f"{soak_result.requests} requests, {100 * (1 - soak_result.success):.2f} % errors, "
        f"RSS {rss[0]:.1f} at start, {settled[0]:.1f} -> {settled[-1]:.1f} MiB from 15 s to "
        f"the end ({rss_growth:+.1f}, spread {max(settled) - min(settled):.1f}), "
        f"p99 {soak_result.p99_ms:.1f} ms "
        f"| 0 errors, flat memory: {'yes' if soak_ok and flat else 'NO'} |",
        f"| exit status after SIGTERM | {r['exit_code']} | 0 |",
        "",
        "### Micro-batching on vs off, interleaved (medians of rounds)",
        "",
        *AB_HEADER,
        *ab_rows(r["ab"]),
        "",
        "### Gains (peak req/s, side by side in this run)",
        "",
        f"- vs the naive Keras `predict()` service: **{ratio[keras_name]:.1f}x**",
        f"- vs the TensorFlow `tf.function` service: **{ratio[tf_name]:.1f}x**",
        f"- server CPU per request at c=4 (hardly moved by other work on the machine, unlike "
        f"req/s): {variants[product][4].server_cpu_ms:.2f} ms vs "
        f"{variants[keras_name][4].server_cpu_ms:.2f} (Keras) and "
        f"{variants[tf_name][4].server_cpu_ms:.2f} (TF)",
        f"- start-to-ready: {ready_s:.2f} s vs {r['starts'][keras_name][0]:.2f} s (Keras) and "
        f"{r['starts'][tf_name][0]:.2f} s (TF); RSS {rss_ready:.0f} MiB vs "
        f"{r['starts'][keras_name][1]:.0f} and {r['starts'][tf_name][1]:.0f} MiB",
        "",
        "![latency under load](img/serving-latency.png)",
    ]
    write_section("serving", "\n".join(lines))


if __name__ == "__main__":
    main()
