"""Start-to-ready of the service, interleaved across source trees and bytecode settings.

    flock /tmp/elpv-docker.lock .venv/bin/python -m bench.startup --rounds 4 \\
        --tree before=/path/to/old/src --tree after=src [--no-bytecode before]

Each round starts every configuration in turn (so load from other jobs hits all alike): spawn
`python -m classifier.serving` with that tree first on PYTHONPATH, poll /livez and /readyz every
5 ms, and record spawn -> listening (first /livez 200), spawn -> ready (first /readyz 200), the
process's CPU time (user + system) at ready, and the model's load time from its log line. CPU
time is the figure that other work on a shared machine changes least. `--no-bytecode LABEL`
adds a run of that tree with no bytecode (every module compiled at each start, as happens in a
uv venv with PYTHONDONTWRITEBYTECODE set). Prints a Markdown table of medians (ranges).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.serving import ROOT, compile_bytecode, free_port, load_average, log, prepare_model


@dataclass
class Start:
    listening: float
    ready: float
    cpu: float
    load_seconds: float


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310  # 127.0.0.1
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_once(src: Path, model_dir: Path, *, bytecode: bool, pycache: Path) -> Start:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "CLASSIFIER_MODEL_DIR": str(model_dir),
        "CLASSIFIER_HOST": "127.0.0.1",
        "CLASSIFIER_PORT": str(port),
        "CLASSIFIER_LOG_LEVEL": "info",  # for the "model loaded" line
        "CLASSIFIER_ALLOW_UNAUTHENTICATED": "true",  # a benchmark, on loopback only
    }
    if not bytecode:  # look for bytecode in an empty folder and write none: compile each time
        env |= {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(pycache)}
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "classifier.serving"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    listening = None
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the service exited {process.returncode}")
            if listening is None and _ok(f"{url}/livez"):
                listening = time.perf_counter() - started
            if _ok(f"{url}/readyz"):
                ready = time.perf_counter() - started
                cpu = _cpu_seconds(process.pid)
                break
            if time.perf_counter() - started > 120:
                raise SystemExit("the service was not ready in 120 s")
            time.sleep(0.005)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    loaded = [json.loads(line) for line in output.splitlines() if '"model loaded"' in line]
    load_seconds = float(loaded[0]["load_seconds"]) if loaded else float("nan")
    return Start(listening if listening is not None else ready, ready, cpu, load_seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--tree", action="append", default=[], metavar="LABEL=SRC", help="a src/ to start from"
    )
    parser.add_argument("--no-bytecode", action="append", default=[], metavar="LABEL")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "build" / "bench-serving-model")
    args = parser.parse_args(argv)
    trees = dict(t.split("=", 1) for t in (args.tree or ["this=src"]))
    model_dir, source = prepare_model(args.model_dir)
    compile_bytecode(sys.executable)
    configs = [(label, Path(src).resolve(), True) for label, src in trees.items()]
    configs += [
        (f"{label}, no bytecode", Path(trees[label]).resolve(), False) for label in args.no_bytecode
    ]
    for _label, src, _bytecode in configs:  # bytecode for the trees too (skipped when current)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=False)
    results: dict[str, list[Start]] = {label: [] for label, _s, _b in configs}
    loads = []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as pycache:
        for round_ in range(1, args.rounds + 1):
            loads.append(load_average())
            for label, src, bytecode in configs:
                run = start_once(src, model_dir, bytecode=bytecode, pycache=Path(pycache))
                results[label].append(run)
                log(f"round {round_}: {label}: ready {run.ready:.2f} s, CPU {run.cpu:.2f} s")

    def cell(values: list[float], unit: str) -> str:
        return f"{statistics.median(values):.2f}{unit} ({min(values):.2f}-{max(values):.2f})"

    print(
        f"Model: {source}. {args.rounds} interleaved rounds, load average {min(loads):.1f}-"
        f"{max(loads):.1f} at the rounds' starts.\n"
    )
    print(
        "| configuration | spawn -> listening | spawn -> ready | CPU at ready "
        "| model load + warm-up |"
    )
    print("|---|---|---|---|---|")
    for label, runs in results.items():
        print(
            f"| {label} | {cell([r.listening for r in runs], ' s')} | "
            f"{cell([r.ready for r in runs], ' s')} | {cell([r.cpu for r in runs], ' s')} | "
            f"{cell([r.load_seconds for r in runs], ' s')} |"
        )


if __name__ == "__main__":
    main()
