"""Our service against the model servers a user would pick instead, side by side in one run.

    make bench-peers      (run it under the benchmark lock; ~10 min on 2 cores)

Servers, each serving the same model.tflite with the same preprocessing (bench/peers/model.py):
our service (multipart, and the same request as base64 JSON), KServe, LitServe, BentoML and
MLServer, the peers each from its own venv (.tools/peers/<name>, `make peer-venvs`) and each
taking the request its own docs show. Interleaved rounds: every round starts each server in
turn, measures it and stops it, so load changes on the shared machine hit all alike; the
figures are medians over rounds, the comparisons medians of per-round ratios.

Per server and round: start-to-ready (spawn -> first 200 from its readiness route), resident
memory of the whole process tree (ready, and peak sampled under load), idle CPU, then vegeta
(bench.serving's load functions) closed-loop at concurrency 1, 4, 16, 64 with one 300x300 ELPV
PNG per request, and the tree's CPU per request from /proc. In this process, per round: the
model's own CPU per image (LiteRT, batch 1, the service's interpreter threads) and the
service's decode + preprocess CPU per image, and how busy the whole machine was (/proc/stat).
Writes the `serving-peers` section of docs/benchmarks.md and docs/img/serving-peers.png.

`--variant LABEL=CLASSIFIER_X=V[,CLASSIFIER_Y=W]` adds our service again with those settings, in
the same interleaved rounds (with `--only ours kserve --no-report`: which setting moves the peak,
against the same reference); the summary table at the end shows every server.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import machine_line, write_section
from bench.serving import (
    VEGETA,
    Body,
    Load,
    Server,
    attack,
    compile_bytecode,
    free_port,
    load_average,
    log,
    prepare_model,
    sample_png,
    start,
    tflite_throughput,
)

ROOT = Path(__file__).resolve().parents[2]
PEERS_DIR = Path(os.environ.get("PEERS_DIR", str(ROOT / ".tools" / "peers")))
REQUIREMENTS = Path(__file__).resolve().parent / "requirements"
PNG = ROOT / "docs" / "img" / "serving-peers.png"
CONCURRENCY = (1, 4, 16, 64)
OURS = "ours"


# --------------------------------------------------------------------------------------------
# Process trees: the peers run several processes (LitServe, BentoML, MLServer spawn workers).


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    """`pid`'s live descendants (all generations), from the parent field of /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its descendants, including their reaped children."""
    ticks = 0
    for p in [pid, *descendants(pid)]:
        if (fields := _stat(p)) is not None:
            ticks += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_memory_mib(pid: int, key: str = "Rss") -> float:
    """Summed Rss (or Pss: shared pages split between the processes) of the tree in MiB."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(key + ":"):
                total += int(line.split()[1])
    return total / 1024


def stop_tree(server: Server) -> None:
    """SIGTERM the server, then whatever it left behind (LitServe's workers outlive their
    parent): descendants are listed before the signal, while they are still its children."""
    left = [(p, fields[18]) for p in descendants(server.process.pid) if (fields := _stat(p))]
    server.stop()
    deadline = time.monotonic() + 10
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p, started in left:
            fields = _stat(p)
            if fields is not None and fields[18] == started:  # same process, not a reused pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, sig)
        while time.monotonic() < deadline and any(
            (f := _stat(p)) is not None and f[18] == s for p, s in left
        ):
            time.sleep(0.1)
        deadline = time.monotonic() + 5


class PeakSampler:
    """Samples the tree's summed RSS every 0.25 s in a thread; `peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak = max(self.peak, tree_memory_mib(self.pid))

    def close(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


# --------------------------------------------------------------------------------------------
# The servers and their requests


class FileBody(Body):
    """A request body file and its content type, in the form a server's docs show."""

    def __init__(self, path: Path, content: bytes, content_type: str) -> None:
        path.write_bytes(content)
        self.path, self.content_type = path, content_type


def multipart(png: bytes, field_name: str, path: Path) -> FileBody:
    boundary = "benchboundary7MA4YWxkTrZu0gW"
    content = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; '
        f'filename="cell.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return FileBody(path, content, f"multipart/form-data; boundary={boundary}")


def json_body(document: dict[str, Any], path: Path) -> FileBody:
    return FileBody(path, json.dumps(document).encode(), "application/json")


@dataclass
class Spec:
    key: str
    label: str
    request: str  # how the image travels, for the report
    ready_path: str
    predict_path: str
    body: FileBody
    probability: Callable[[Any], float]  # the probability in the server's JSON answer
    launch: Callable[[int, Path], tuple[list[str], dict[str, str]]]


def pinned(name: str) -> str:
    for line in (REQUIREMENTS / f"{name}.in").read_text().splitlines():
        if line.startswith(f"{name}=="):
            return line.split("==")[1].split()[0]
    raise SystemExit(f"{REQUIREMENTS / name}.in pins no {name}")


def peer_python(name: str, executable: str = "python") -> str:
    path = PEERS_DIR / name / "bin" / executable
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `make peer-venvs` first")
    return str(path)


def specs(png: bytes, model_dir: Path, threads: int, workdir: Path) -> list[Spec]:
    b64 = base64.b64encode(png).decode()
    peer_env = {
        "PEER_MODEL_DIR": str(model_dir),
        "PEER_THREADS": str(threads),
        "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",
        "PYTHONDONTWRITEBYTECODE": "1",
    }

    def ours(port: int, _work: Path) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-m", "classifier.serving"], {
            "CLASSIFIER_MODEL_DIR": str(model_dir),
            "CLASSIFIER_ALLOW_UNAUTHENTICATED": "true",
            "CLASSIFIER_HOST": "127.0.0.1",
            "CLASSIFIER_PORT": str(port),
            # LOG_LEVEL stays at its default (info: a JSON access line per request), as the
            # peers keep theirs: the targets are for the defaults.
        }

    def kserve(port: int, _work: Path) -> tuple[list[str], dict[str, str]]:
        argv = [peer_python("kserve"), "-m", "bench.peers.kserve_server"]
        return [*argv, "--http_port", str(port), "--grpc_port", str(free_port())], peer_env

    def litserve(port: int, _work: Path) -> tuple[list[str], dict[str, str]]:
        argv = [peer_python("litserve"), "-m", "bench.peers.litserve_server"]
        return argv, {**peer_env, "PEER_PORT": str(port)}

    def bentoml(port: int, work: Path) -> tuple[list[str], dict[str, str]]:
        argv = [peer_python("bentoml", "bentoml"), "serve"]
        argv += ["bench.peers.bentoml_service:ELPVClassifier", "--host", "127.0.0.1"]
        env = {"BENTOML_HOME": str(work / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
        return [*argv, "--port", str(port)], {**peer_env, **env}

    def mlserver(port: int, work: Path) -> tuple[list[str], dict[str, str]]:
        repo = work / "mlserver"
        (repo / "elpv").mkdir(parents=True, exist_ok=True)
        settings = {"host": "127.0.0.1", "http_port": port}
        settings |= {"grpc_port": free_port(), "metrics_port": free_port()}
        settings["metrics_dir"] = str(repo / ".metrics")  # else it writes to the working dir
        (repo / "settings.json").write_text(json.dumps(settings))
        model = {"name": "elpv", "implementation": "bench.peers.mlserver_runtime.LiteRTRuntime"}
        (repo / "elpv" / "model-settings.json").write_text(json.dumps(model))
        return [peer_python("mlserver", "mlserver"), "start", str(repo)], peer_env

    def first(key: str) -> Callable[[Any], float]:
        return lambda answer: float(answer[key][0]["probability"])

    v2_input: dict[str, Any] = {"name": "image", "shape": [1], "datatype": "BYTES"}
    v2_input |= {"parameters": {"content_type": "base64"}, "data": [b64]}
    return [
        Spec(
            OURS,
            "ours",
            "multipart, field `files`",
            "/readyz",
            "/v1/predict",
            multipart(png, "files", workdir / "ours.body"),
            first("predictions"),
            ours,
        ),
        Spec(
            "ours-json",
            "ours, JSON",
            'JSON `{"images": [{"data": <base64>}]}`',
            "/readyz",
            "/v1/predict",
            json_body({"images": [{"data": b64, "name": "cell.png"}]}, workdir / "ours.json"),
            first("predictions"),
            ours,
        ),
        Spec(
            "kserve",
            f"KServe {pinned('kserve')}",
            'v1 JSON `{"instances": [{"image": {"b64": ...}}]}`',
            "/v1/models/elpv",
            "/v1/models/elpv:predict",
            json_body({"instances": [{"image": {"b64": b64}}]}, workdir / "kserve.json"),
            first("predictions"),
            kserve,
        ),
        Spec(
            "litserve",
            f"LitServe {pinned('litserve')}",
            "multipart, field `files`",
            "/health",
            "/predict",
            multipart(png, "files", workdir / "litserve.body"),
            lambda answer: float(answer["probability"]),
            litserve,
        ),
        Spec(
            "bentoml",
            f"BentoML {pinned('bentoml')}",
            "multipart, field `image`",
            "/readyz",
            "/predict",
            multipart(png, "image", workdir / "bentoml.body"),
            lambda answer: float(answer["probability"]),
            bentoml,
        ),
        Spec(
            "mlserver",
            f"MLServer {pinned('mlserver')}",
            "Open Inference Protocol v2 JSON, BYTES input, base64",
            "/v2/models/elpv/ready",
            "/v2/models/elpv/infer",
            json_body({"inputs": [v2_input]}, workdir / "mlserver.json"),
            lambda answer: float(answer["outputs"][0]["data"][0]),
            mlserver,
        ),
    ]


def ask(spec: Spec, url: str) -> float:
    """One request by hand: the probability the server answers for the bench image."""
    request = urllib.request.Request(  # noqa: S310  # 127.0.0.1, a URL we built
        url + spec.predict_path,
        data=spec.body.path.read_bytes(),
        headers={"Content-Type": spec.body.content_type},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return spec.probability(json.loads(response.read()))


# --------------------------------------------------------------------------------------------
# One run of one server


@dataclass
class Run:
    ready_s: float
    rss_ready: float
    pss_ready: float
    rss_peak: float
    idle_cores: float
    probability: float
    loads: dict[int, Load] = field(default_factory=dict)
    load_avg: float = 0.0


def measure(spec: Spec, workdir: Path, seconds: float) -> Run:
    port = free_port()
    argv, env = spec.launch(port, workdir)
    server = start(spec.key, argv, env, port, workdir, ready_path=spec.ready_path)
    pid = server.process.pid
    try:
        rss_ready, pss_ready = tree_memory_mib(pid), tree_memory_mib(pid, "Pss")
        sampler = PeakSampler(pid)
        cpu0 = tree_cpu_seconds(pid)
        time.sleep(2)
        idle = (tree_cpu_seconds(pid) - cpu0) / 2
        probability = ask(spec, server.url)
        run = Run(server.ready_s, rss_ready, pss_ready, 0.0, idle, probability)
        run.load_avg = load_average()
        attack(server.url, spec.body, 2, concurrency=4, path=spec.predict_path)  # warm-up
        for c in CONCURRENCY:
            cpu0 = tree_cpu_seconds(pid)
            load = attack(server.url, spec.body, seconds, concurrency=c, path=spec.predict_path)
            load.server_cpu_ms = 1000 * (tree_cpu_seconds(pid) - cpu0) / max(load.requests, 1)
            run.loads[c] = load
        run.rss_peak = max(sampler.close(), rss_ready)
    finally:
        stop_tree(server)
    top = run.loads[16]
    log(
        f"  {spec.label}: ready {run.ready_s:.2f} s, RSS {run.rss_ready:.0f}/{run.rss_peak:.0f} "
        f"MiB, req/s "
        + " / ".join(f"{run.loads[c].rps:.0f}" for c in CONCURRENCY)
        + f", c=16 p99 {top.p99_ms:.1f} ms, CPU {top.server_cpu_ms:.2f} ms/req"
    )
    return run


# --------------------------------------------------------------------------------------------
# In-process reference: the model's own CPU per image, and decode + preprocess


def in_process_cpu_ms(model_dir: Path, png: bytes, threads: int, n: int = 400) -> dict[str, float]:
    """CPU ms per image in this process: the model (LiteRT, batch 1, `threads` threads and 1
    thread) and the service's decode + preprocess (`decode_image`)."""
    from ai_edge_litert.interpreter import Interpreter

    from classifier.model_card import ModelCard
    from classifier.serving.decoding import decode_image

    card = ModelCard.load(model_dir / "model_card.json")
    size = (card.input.height, card.input.width)
    channels = card.input.channel_names
    row = decode_image(png, name="cell", size=size, max_pixels=1 << 24, channels=channels).row
    result = {}
    for label, t in ((f"model ({threads} threads)", threads), ("model (1 thread)", 1)):
        it = Interpreter(model_path=str(model_dir / "model.tflite"), num_threads=t)
        it.allocate_tensors()
        index = it.get_input_details()[0]["index"]
        x = row[np.newaxis]
        for _ in range(20):
            it.set_tensor(index, x)
            it.invoke()
        cpu = time.process_time()
        for _ in range(n):
            it.set_tensor(index, x)
            it.invoke()
        result[label] = 1000 * (time.process_time() - cpu) / n
    cpu = time.process_time()
    for _ in range(n // 2):
        decode_image(png, name="cell", size=size, max_pixels=1 << 24, channels=channels)
    result["decode + preprocess"] = 1000 * (time.process_time() - cpu) / (n // 2)
    return result


BATCHES = (1, 4, 16)


def model_cpu_by_batch(model_dir: Path, threads: int) -> dict[int, list[float]]:
    """CPU ms per image at each batch size in BATCHES, for 1 and `threads` interpreter threads:
    whether batching (the service's micro-batcher) makes an image cheaper for the model."""
    from classifier.model_card import ModelCard

    card = ModelCard.load(model_dir / "model_card.json")
    shape = (card.input.height, card.input.width, card.input.channels)
    tflite = model_dir / "model.tflite"
    return {
        t: [
            1000 / per_cpu_second
            for per_cpu_second in tflite_throughput(
                tflite, shape, t, seconds=1.0, batches=BATCHES, clock=time.process_time
            ).values()
        ]
        for t in sorted({1, threads})
    }


# --------------------------------------------------------------------------------------------
# Report


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float], digits: int = 0) -> str:
    """Median and range, e.g. `412 (398-430)`."""
    return f"{med(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def errors(runs: list[Run]) -> int:
    bad = 0
    for run in runs:
        for load in run.loads.values():
            ok = load.status_codes.get("200", 0)
            bad += load.requests - ok
    return bad


def peak(run: Run) -> float:
    return max(run.loads[c].rps for c in CONCURRENCY)


def plot(results: dict[str, list[Run]], labels: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, runs in results.items():
        rps = [med([r.loads[c].rps for r in runs]) for c in CONCURRENCY]
        p99 = [med([r.loads[c].p99_ms for r in runs]) for c in CONCURRENCY]
        style = {"linewidth": 2.5} if key.startswith(OURS) else {"linewidth": 1.3}
        ax1.plot(CONCURRENCY, rps, marker="o", label=labels[key], **style)
        ax2.plot(CONCURRENCY, p99, marker="o", label=labels[key], **style)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        ax.set_xlabel("concurrent requests (closed loop)")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("requests/s (1 PNG each)")
    ax1.set_ylim(bottom=0)
    ax1.set_title("throughput, median of rounds")
    ax2.set_yscale("log")
    ax2.set_ylabel("p99 latency (ms, log)")
    ax2.set_title("p99 latency, median of rounds")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    PNG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PNG, dpi=100)


def write_report(
    results: dict[str, list[Run]],
    all_specs: list[Spec],
    inproc: list[dict[str, float]],
    by_batch: dict[int, list[float]],
    *,
    model_source: str,
    threads: int,
    seconds: float,
    rounds: int,
    minutes: float,
) -> None:
    labels = {s.key: s.label for s in all_specs}
    peers = [s.key for s in all_specs if not s.key.startswith(OURS)]
    ours = results[OURS]
    head = "| server | " + " | ".join(f"c={c}" for c in CONCURRENCY)
    rule = "|---|" + "---|" * len(CONCURRENCY)
    rps_rows, lat_rows, cpu_rows = [], [], []
    for key, runs in results.items():
        rps_rows.append(
            f"| {labels[key]} | "
            + " | ".join(spread([r.loads[c].rps for r in runs]) for c in CONCURRENCY)
            + " |"
        )
        lat_rows.append(
            f"| {labels[key]} | "
            + " | ".join(
                f"{med([r.loads[c].p50_ms for r in runs]):.1f} / "
                f"{med([r.loads[c].p99_ms for r in runs]):.1f}"
                for c in CONCURRENCY
            )
            + " |"
        )
        cpu_rows.append(
            f"| {labels[key]} | "
            + " | ".join(
                f"{med([r.loads[c].server_cpu_ms for r in runs]):.2f}" for c in CONCURRENCY
            )
            + " |"
        )
    start_rows = [
        f"| {labels[k]} | {spread([r.ready_s for r in runs], 2)} "
        f"| {med([r.rss_ready for r in runs]):.0f} / {med([r.pss_ready for r in runs]):.0f} "
        f"| {max(r.rss_peak for r in runs):.0f} "
        f"| {100 * med([r.idle_cores for r in runs]):.1f} % "
        f"| {errors(runs)} of {sum(r.loads[c].requests for r in runs for c in CONCURRENCY)} "
        f"| {runs[0].probability:.6f} |"
        for k, runs in results.items()
    ]
    # Per-round comparisons: ours against the best peer of that same round.
    peak_ratio = [peak(ours[i]) / max(peak(results[p][i]) for p in peers) for i in range(len(ours))]
    p99_ratio = [
        ours[i].loads[16].p99_ms / min(results[p][i].loads[16].p99_ms for p in peers)
        for i in range(len(ours))
    ]
    best_peer = max(peers, key=lambda p: med([peak(r) for r in results[p]]))
    model_ms = [m[f"model ({threads} threads)"] for m in inproc]
    model_1 = [m["model (1 thread)"] for m in inproc]
    decode_ms = [m["decode + preprocess"] for m in inproc]
    cpu16 = [r.loads[16].server_cpu_ms for r in ours]
    cpu_ratio = [c / m for c, m in zip(cpu16, model_ms, strict=True)]
    ready = [r.ready_s for r in ours]
    rss = [r.rss_peak for r in ours]
    load_avgs = [r.load_avg for runs in results.values() for r in runs]
    # The ceiling: what a server whose own HTTP, routing and threads cost nothing could serve
    # here. Each request still costs the model (its cheapest, 1 thread), decoding, and the load
    # generator's CPU (vegeta shares the cores; measured at our peak step).
    cores = len(os.sched_getaffinity(0))
    client_ms = [
        1000 * top.client_cores / top.rps
        for top in (max(r.loads.values(), key=lambda load: load.rps) for r in ours)
    ]
    floor_ms = [m + d + c for m, d, c in zip(model_1, decode_ms, client_ms, strict=True)]
    ceiling = [1000 * cores / f for f in floor_ms]
    ceiling_ratio = [ceiling[i] / max(peak(results[p][i]) for p in peers) for i in range(len(ours))]
    of_ceiling = [peak(ours[i]) / ceiling[i] for i in range(len(ours))]
    batch_rows = [
        f"| {t} | " + " | ".join(f"{ms:.2f}" for ms in per) + " |" for t, per in by_batch.items()
    ]
    lines = [
        "## Serving: against the peers",
        "",
        f"Command: `flock /tmp/elpv-docker.lock make bench-peers` (bench/peers/). Machine: "
        f"{machine_line()}. Model: {model_source}. Every server runs the same model.tflite "
        f"with the same preprocessing (`classifier.imaging.preprocess`) and {threads} "
        "interpreter thread(s) (our default), each peer written as its own docs show "
        "(bench/peers/*.py), in its own venv from pinned requirements "
        "(bench/peers/requirements/), all on defaults. Load: vegeta on the same machine, "
        f"closed loop, one 300x300 ELPV PNG per request, {seconds:g} s per step after a 2 s "
        f"warm-up; {rounds} interleaved rounds (each round starts, measures and stops every "
        f"server in turn), {minutes:.0f} min in all, load average "
        f"{min(load_avgs):.1f}-{max(load_avgs):.1f} at the servers' starts. Figures are "
        "medians over rounds (range in brackets); ratios are medians of per-round ratios.",
        "",
        "| server | request |",
        "|---|---|",
        *(f"| {s.label} | {s.request} |" for s in all_specs),
        "",
        "### Requests/s by concurrency",
        "",
        head + " |",
        rule,
        *rps_rows,
        "",
        "### Latency p50 / p99 (ms)",
        "",
        head + " |",
        rule,
        *lat_rows,
        "",
        "### Server CPU per request (ms, whole process tree, from /proc)",
        "",
        head + " |",
        rule,
        *cpu_rows,
        "",
        "### Start, memory, errors",
        "",
        "| server | start-to-ready (s) | RSS / PSS ready (MiB, tree) | RSS peak under load "
        "(MiB) | idle CPU (of one core) | non-200 answers | probability for the bench image |",
        "|---|---|---|---|---|---|---|",
        *start_rows,
        "",
        f"### Against the targets (ours: multipart, defaults; best peer by peak req/s: "
        f"{labels[best_peer]})",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| peak req/s, ours / best peer of the same round | {spread(peak_ratio, 2)} | >= 1.5 |",
        f"| p99 at c=16, ours / best peer's of the same round | {spread(p99_ratio, 2)} | <= 1 |",
        f"| server CPU per request at c=16 / the model's own CPU per image in-process "
        f"(batch 1, {threads} threads) | {spread(cpu16, 2)} ms / {spread(model_ms, 2)} ms = "
        f"{spread(cpu_ratio, 2)} | <= 1.4 |",
        f"| start-to-ready | {spread(ready, 2)} s | < 1 s |",
        f"| RSS peak under load | {max(rss):.0f} MiB | < 120 MiB |",
        "",
        f"In-process, per image (this process, medians of the rounds): model "
        f"{med(model_ms):.2f} ms of CPU with {threads} threads, {med(model_1):.2f} ms with 1; "
        f"the service's `decode_image` (PNG decode + preprocess) {med(decode_ms):.2f} ms.",
        "",
        "Model CPU per image by batch size (ms; whether micro-batching makes an image cheaper):",
        "",
        "| interpreter threads | " + " | ".join(f"batch {b}" for b in BATCHES) + " |",
        "|---|" + "---:|" * len(BATCHES),
        *batch_rows,
        "",
        f"**The ceiling on these {cores} cores.** A server whose own HTTP, routing and threads "
        f"cost no CPU would still pay, per request, the model ({med(model_1):.2f} ms, 1 thread), "
        f"decoding ({med(decode_ms):.2f} ms) and the load generator's CPU on the same cores "
        f"(vegeta, {spread(client_ms, 2)} ms per request at our peak step): {cores} cores / "
        f"{spread(floor_ms, 2)} ms = {spread(ceiling)} req/s at most, "
        f"**{spread(ceiling_ratio, 2)}x the best peer's peak**. Ours reaches "
        f"{spread(of_ceiling, 2)} of that ceiling.",
        "",
        "![requests/s and p99 by concurrency](img/serving-peers.png)",
    ]
    write_section("serving-peers", "\n".join(lines))


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """`LABEL=CLASSIFIER_X=V[,CLASSIFIER_Y=W]` -> (label, env); a clear error otherwise."""
    label, sep, assignments = text.partition("=")
    env = dict(a.split("=", 1) for a in assignments.split(",") if "=" in a)
    bad = [a for a in assignments.split(",") if "=" not in a or not a.startswith("CLASSIFIER_")]
    if not label or not sep or not env or bad:
        raise argparse.ArgumentTypeError(
            f"--variant {text!r}: expected LABEL=CLASSIFIER_X=value[,CLASSIFIER_Y=value], "
            "e.g. 'one model thread=CLASSIFIER_INTERPRETER_THREADS=1'"
        )
    return label, env


def variant_spec(ours: Spec, label: str, env: dict[str, str]) -> Spec:
    """Our service again, with `env` on top of its launch environment."""

    def launch(port: int, work: Path) -> tuple[list[str], dict[str, str]]:
        argv, base = ours.launch(port, work)
        return argv, {**base, **env}

    settings = ", ".join(f"{k.removeprefix('CLASSIFIER_')}={v}" for k, v in env.items())
    return replace(ours, key=f"{OURS}: {label}", label=f"ours, {label} ({settings})", launch=launch)


def summary(results: dict[str, list[Run]], labels: dict[str, str]) -> str:
    """Medians over rounds, one row per server: the figures to compare settings by."""
    rows = [
        "| server | peak req/s | c=16 req/s | c=16 p99 ms | c=16 CPU ms/req | "
        "machine busy at c=16 | c=1 p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, runs in results.items():
        c16 = [r.loads[16] for r in runs]
        rows.append(
            f"| {labels[key]} | {med([peak(r) for r in runs]):.0f} | "
            f"{med([x.rps for x in c16]):.0f} | {med([x.p99_ms for x in c16]):.1f} | "
            f"{med([x.server_cpu_ms for x in c16]):.2f} | "
            f"{100 * med([x.machine_busy for x in c16]):.0f} % | "
            f"{med([r.loads[1].p50_ms for r in runs]):.2f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5, help="per load step")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--only", nargs="*", help="server keys to run (default: all)")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "build" / "bench-serving-model")
    parser.add_argument("--no-report", action="store_true", help="do not touch the docs")
    parser.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        default=[],
        metavar="LABEL=CLASSIFIER_X=V[,...]",
        help="our service again with these settings, in the same rounds (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.variant and not args.no_report:
        parser.error(
            "--variant explores settings; the run of record is the defaults: add --no-report"
        )
    if not Path(VEGETA).is_file():
        sys.exit(f"vegeta not found at {VEGETA}: run `make vegeta` (or set VEGETA=)")

    from classifier.serving.settings import Settings

    threads = Settings(allow_unauthenticated=True).model_threads  # only the thread count
    model_dir, model_source = prepare_model(args.model_dir)
    png = sample_png()
    workdir = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    started = time.monotonic()
    try:
        all_specs = specs(png, model_dir, threads, workdir)
        if args.only:
            all_specs = [s for s in all_specs if s.key in args.only]
        ours_spec = next(s for s in specs(png, model_dir, threads, workdir) if s.key == OURS)
        all_specs += [variant_spec(ours_spec, label, env) for label, env in args.variant]
        # Every server starts from bytecode, as installed servers do (bench.serving).
        peers = {peer_python(s.key) for s in all_specs if not s.key.startswith(OURS)}
        for python in sorted({sys.executable} | peers):
            compile_bytecode(python)
        log(f"model: {model_source}; interpreter threads {threads}")
        results: dict[str, list[Run]] = {s.key: [] for s in all_specs}
        inproc: list[dict[str, float]] = []
        for round_ in range(1, args.rounds + 1):
            inproc.append(in_process_cpu_ms(model_dir, png, threads))
            log(
                f"round {round_}/{args.rounds}: in-process CPU ms/image "
                + ", ".join(f"{k} {v:.2f}" for k, v in inproc[-1].items())
            )
            for spec in all_specs:
                results[spec.key].append(measure(spec, workdir, args.seconds))
        by_batch = model_cpu_by_batch(model_dir, threads)
        log(
            "model CPU ms/image at batch "
            + "/".join(map(str, BATCHES))
            + ": "
            + "; ".join(
                f"{t} thread(s) " + " / ".join(f"{ms:.2f}" for ms in per)
                for t, per in by_batch.items()
            )
        )
        print(summary(results, {s.key: s.label for s in all_specs}))
        minutes = (time.monotonic() - started) / 60
        probabilities = {k: runs[0].probability for k, runs in results.items()}
        if max(probabilities.values()) - min(probabilities.values()) > 1e-5:
            sys.exit(f"the servers disagree on the bench image: {probabilities}")
        if args.no_report or OURS not in results or len(results) < 2:
            return
        plot(results, {s.key: s.label for s in all_specs})
        write_report(
            results,
            all_specs,
            inproc,
            by_batch,
            model_source=model_source,
            threads=threads,
            seconds=args.seconds,
            rounds=args.rounds,
            minutes=minutes,
        )
        log(f"wrote docs/benchmarks.md section 'serving-peers' and {PNG.relative_to(ROOT)}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
