"""Where our service's CPU per request goes, against the model's own CPU per image.

    flock /tmp/elpv-docker.lock .venv/bin/python -m bench.peers.profile

1. In this process: the model's CPU per image (LiteRT, batch 1, the service's interpreter
   threads, and 1 thread) and the service's `decode_image` (PNG decode + preprocess).
2. The service on defaults under vegeta (closed loop, c=16): CPU per request of each of its
   threads from /proc/<pid>/task: the event loop (HTTP, multipart, routing, middleware, JSON,
   answers), the decode pool, the batcher thread (it calls the model), and the interpreter's
   worker threads.
3. The same service again with cProfile on its event-loop thread, timed by that thread's CPU
   clock (`time.thread_time`, so waiting in epoll costs nothing): each function's own time by
   the component its file belongs to, scaled to the unprofiled event-loop CPU per request
   (cProfile slows Python calls, so the shares are the finding, not its absolute times).
   (py-spy 0.4.x could not read this interpreter's version here: "Failed to find python
   version from target process" on busy processes.)

Prints Markdown; docs/serving.md ("CPU per request against the model's") quotes a run.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.peers.__main__ import in_process_cpu_ms
from bench.serving import (
    Body,
    Server,
    attack,
    free_port,
    log,
    prepare_model,
    sample_png,
    start,
)

ROOT = Path(__file__).resolve().parents[2]
LOOP = "event loop (main thread)"

# A function's own time goes to the first component whose pattern matches "file:name".
COMPONENTS: list[tuple[str, str]] = [
    ("multipart parsing (python-multipart, starlette.formparsers)", r"multipart|formparsers"),
    ("our middleware (request id, body cap, metrics, access log)", r"classifier/serving/obs"),
    ("Prometheus client", r"prometheus_client"),
    ("logging", r"/logging/"),
    ("response: pydantic + JSON", r"pydantic|json|fastapi/encoders|responses\.py"),
    ("our predict route, state, batcher", r"classifier/serving/"),
    ("FastAPI/Starlette routing, dependencies, request", r"fastapi/|starlette/"),
    ("uvicorn HTTP protocol", r"uvicorn/"),
    ("uvloop + httptools C code (callbacks, sockets, parser)", r"uvloop|httptools"),
    ("asyncio futures, tasks, thread hand-offs", r"asyncio|concurrent/|threading"),
]


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds by thread group: event loop (main), decode pool, batcher, the rest."""
    groups: defaultdict[str, float] = defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if int(task.name) == pid:
            group = LOOP
        elif name.startswith("decode"):
            group = "decode pool (decode + preprocess)"
        elif name.startswith("micro-batch"):
            group = "batcher thread (model call)"
        elif name.startswith(("python", "uvloop", "asyncio")):
            # pthreadpool's workers take the name of the thread that created them: the one
            # that loaded the model (asyncio.to_thread in the lifespan).
            group = "XNNPACK worker threads (the model call's second thread)"
        else:
            group = f"thread '{name}'"
        groups[group] += seconds
    return dict(groups)


def component(where: str) -> str:
    for label, pattern in COMPONENTS:
        if re.search(pattern, where):
            return label
    return "other Python and builtins"


def name_os_threads() -> None:
    """Give each Python thread its name at the OS level too (Python 3.11 does not), so
    /proc/<pid>/task/*/comm tells the decode pool from the batcher thread."""
    import ctypes
    import threading

    libc = ctypes.CDLL(None)
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        libc.prctl(15, self.name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
        original(self)

    threading.Thread.run = run  # type: ignore[method-assign]


def serve(profile_to: Path | None) -> None:
    """Run the service (settings from the environment), optionally with cProfile on the
    event loop."""
    from classifier.serving.__main__ import main as serve_main

    name_os_threads()
    if profile_to is not None:
        # SIGUSR1 starts profiling, SIGUSR2 stops it and writes the stats: only the measured
        # load is profiled, not imports and start-up. Handlers run on the main thread, which is
        # the event loop's, the one cProfile then profiles.
        profiler = cProfile.Profile(time.thread_time)

        def begin(_signum: int, _frame: object) -> None:
            profiler.enable()

        def end(_signum: int, _frame: object) -> None:
            profiler.disable()
            profiler.dump_stats(profile_to)

        signal.signal(signal.SIGUSR1, begin)
        signal.signal(signal.SIGUSR2, end)
    serve_main()


def by_component(stats_file: Path) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Own time by component, and the functions with the most own time."""
    stats = pstats.Stats(str(stats_file))
    own: defaultdict[str, float] = defaultdict(float)
    functions = []
    for (filename, line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        own[component(f"{filename}:{name}")] += row[2]  # tottime
        where = re.sub(r".*site-packages/|.*/src/", "", f"{filename}:{line}")
        functions.append((f"{name} ({where})", row[2]))
    functions.sort(key=lambda f: -f[1])
    return dict(own), functions[:15]


def run_load(
    server: Server, body: Body, seconds: float, concurrency: int, *, profile: Path | None = None
) -> tuple[dict[str, float], float]:
    pid = server.process.pid
    attack(server.url, body, 3, concurrency=concurrency)  # warm-up
    before = thread_cpu(pid)
    if profile is not None:
        os.kill(pid, signal.SIGUSR1)
    load = attack(server.url, body, seconds, concurrency=concurrency)
    if profile is not None:
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not profile.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
    after = thread_cpu(pid)
    per_request = {
        g: 1000 * (after.get(g, 0.0) - before.get(g, 0.0)) / load.requests for g in after
    }
    return per_request, load.rps


def service_env(model_dir: Path, port: int) -> dict[str, str]:
    return {
        "CLASSIFIER_MODEL_DIR": str(model_dir),
        "CLASSIFIER_ALLOW_UNAUTHENTICATED": "true",
        "CLASSIFIER_HOST": "127.0.0.1",
        "CLASSIFIER_PORT": str(port),
    }


def report(
    source: str,
    threads: int,
    concurrency: int,
    seconds: float,
    inproc: dict[str, float],
    per_request: dict[str, float],
    rps: float,
    own: dict[str, float],
    profiled_rps: float,
) -> None:
    total = sum(per_request.values())
    model = inproc[f"model ({threads} threads)"]
    print(
        f"Model: {source}. Interpreter threads {threads}. Load: vegeta c={concurrency}, "
        f"{seconds:g} s: {rps:.0f} req/s ({profiled_rps:.0f} with cProfile on the event loop)."
    )
    print()
    print("| in this process, per image | CPU ms |")
    print("|---|---|")
    for k, v in inproc.items():
        print(f"| {k} | {v:.2f} |")
    print()
    print("| service threads under load | CPU ms per request | share |")
    print("|---|---|---|")
    for g, v in sorted(per_request.items(), key=lambda kv: -kv[1]):
        print(f"| {g} | {v:.2f} | {100 * v / total:.0f} % |")
    print(f"| all: server CPU per request | {total:.2f} = {total / model:.2f}x the model's | |")
    loop_ms = per_request.get(LOOP, 0.0)
    n = sum(own.values()) or 1.0
    print()
    print("| event-loop thread, own CPU by component (cProfile) | share | ms/request (scaled) |")
    print("|---|---|---|")
    for label, v in sorted(own.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {100 * v / n:.0f} % | {loop_ms * v / n:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "build" / "bench-serving-model")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.profile_to)
        return

    from classifier.serving.settings import Settings

    threads = Settings(allow_unauthenticated=True).model_threads  # only the thread count
    model_dir, source = prepare_model(args.model_dir)
    png = sample_png()
    workdir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    try:
        body = Body(png, workdir)
        inproc = in_process_cpu_ms(model_dir, png, threads)
        argv = [sys.executable, "-m", "bench.peers.profile", "--serve"]
        port = free_port()
        server = start("service", argv, service_env(model_dir, port), port, workdir)
        try:
            per_request, rps = run_load(server, body, args.seconds, args.concurrency)
        finally:
            server.stop()
        stats_file = workdir / "loop.prof"
        port = free_port()
        argv += ["--profile-to", str(stats_file)]
        profiled = start("profiled", argv, service_env(model_dir, port), port, workdir)
        try:
            profiled_per_request, profiled_rps = run_load(
                profiled, body, args.seconds, args.concurrency, profile=stats_file
            )
            profiled_loop_s = profiled_per_request[LOOP] * profiled_rps * args.seconds / 1000
        finally:
            profiled.stop()
        own, functions = by_component(stats_file)
        # The loop's CPU outside any Python function cProfile saw: uvloop's and httptools' C
        # code and the kernel's socket work under the loop's run frame (entered before the
        # profiler was switched on).
        own["uvloop, httptools, kernel: outside Python functions"] = max(
            profiled_loop_s - sum(own.values()), 0.0
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(
        source, threads, args.concurrency, args.seconds, inproc, per_request, rps, own, profiled_rps
    )
    print()
    print("| event-loop functions with the most own CPU (cProfile) | share |")
    print("|---|---|")
    total_own = sum(own.values()) or 1.0
    for name, seconds in functions:
        print(f"| `{name}` | {100 * seconds / total_own:.1f} % |")
    log("done")


if __name__ == "__main__":
    main()
