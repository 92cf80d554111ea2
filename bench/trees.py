"""The service from two (or more) source trees side by side: req/s, p99 and server CPU per request.

    flock /tmp/elpv-docker.lock .venv/bin/python -m bench.trees --rounds 4 \\
        --tree before=/path/to/old/src --tree after=src [--env LABEL:NAME=VALUE ...]

For a code change's effect on the request path: every server is up at once (an idle one costs
no CPU) and vegeta (closed loop, one 300x300 ELPV PNG per multipart request) loads them in
turn, step by step, the order flipping every round, so other work on the machine hits all
alike. Each round also measures, in this process, the model's own CPU per image (LiteRT,
batch 1, the service's interpreter threads) for the ratio the serving target is stated in.
Prints a Markdown table: medians of rounds, ratios as medians of per-round ratios.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench.peers.__main__ import in_process_cpu_ms
from bench.serving import (
    ROOT,
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
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5, help="per load step")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=SRC")
    parser.add_argument(
        "--env", action="append", default=[], metavar="LABEL:NAME=VALUE", help="extra setting"
    )
    parser.add_argument("--model-dir", type=Path, default=ROOT / "build" / "bench-serving-model")
    args = parser.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.tree)
    extra: dict[str, dict[str, str]] = {label: {} for label in trees}
    for item in args.env:
        label, setting = item.split(":", 1)
        name, value = setting.split("=", 1)
        extra[label][name] = value

    from classifier.serving.settings import Settings

    threads = Settings(allow_unauthenticated=True).model_threads  # only the thread count
    model_dir, source = prepare_model(args.model_dir)
    compile_bytecode(sys.executable)
    png = sample_png()
    workdir = Path(tempfile.mkdtemp(prefix="bench-trees-"))
    servers: dict[str, Server] = {}
    results: dict[str, dict[int, list[Load]]] = {
        label: {c: [] for c in args.concurrency} for label in trees
    }
    model_ms: list[float] = []
    loads: list[float] = []
    try:
        body = Body(png, workdir)
        for label, src in trees.items():
            port = free_port()
            env = {
                "PYTHONPATH": str(Path(src).resolve()),
                "CLASSIFIER_MODEL_DIR": str(model_dir),
                "CLASSIFIER_ALLOW_UNAUTHENTICATED": "true",  # loopback only
                "CLASSIFIER_HOST": "127.0.0.1",
                "CLASSIFIER_PORT": str(port),
                "CLASSIFIER_LOG_LEVEL": "warning",
                **extra[label],
            }
            argv_ = [sys.executable, "-m", "classifier.serving"]
            servers[label] = start(label.replace(" ", "-"), argv_, env, port, workdir)
            attack(servers[label].url, body, 2, concurrency=4)  # warm-up
        for round_ in range(args.rounds):
            loads.append(load_average())
            model_ms.append(
                in_process_cpu_ms(model_dir, png, threads, n=200)[f"model ({threads} threads)"]
            )
            order = list(servers.items())
            if round_ % 2:
                order.reverse()
            for c in args.concurrency:
                for label, server in order:
                    load = attack(
                        server.url, body, args.seconds, concurrency=c, pid=server.process.pid
                    )
                    results[label][c].append(load)
                    log(
                        f"round {round_ + 1} c={c} {label}: {load.rps:.0f} req/s, "
                        f"p99 {load.p99_ms:.1f} ms, CPU {load.server_cpu_ms:.2f} ms/req"
                    )
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def med(values: list[float]) -> float:
        return float(statistics.median(values))

    first = next(iter(trees))
    model = med(model_ms)
    print(
        f"Model: {source}; its own CPU per image in-process (batch 1, {threads} interpreter "
        f"threads): {model:.2f} ms (median of {len(model_ms)} rounds). {args.rounds} "
        f"interleaved rounds x {args.seconds:g} s per step; load average "
        f"{min(loads):.1f}-{max(loads):.1f} at the rounds' starts.\n"
    )
    print(
        "| configuration | c | req/s (rounds) | p99 ms | server CPU ms per request | "
        f"x the model's own | CPU vs {first} (median of per-round ratios) |"
    )
    print("|---|---|---|---|---|---|---|")
    for c in args.concurrency:
        for label in trees:
            runs = results[label][c]
            cpu = [r.server_cpu_ms for r in runs]
            ratios = [
                a.server_cpu_ms / b.server_cpu_ms
                for a, b in zip(runs, results[first][c], strict=True)
            ]
            per_round = ", ".join(f"{r.rps:.0f}" for r in runs)
            print(
                f"| {label} | {c} | {med([r.rps for r in runs]):.0f} ({per_round}) | "
                f"{med([r.p99_ms for r in runs]):.1f} | {med(cpu):.2f} | "
                f"{med(cpu) / model:.2f} | {med(ratios):.2f} |"
            )


if __name__ == "__main__":
    main()
