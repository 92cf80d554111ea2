"""The live HPA run (tests/e2e/test_live_hpa.py) -> docs/benchmarks.md section `hpa-live` + plot.

    make e2e-live                 # writes build/hpa-live.json (the timeline of the HPA test)
    python -m bench.hpa           # section `hpa-live` and docs/img/hpa-live.png from it

The figures are what one run measured; the test itself asserts only the behaviour (3 ready
replicas under load, back to minReplicas after it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.report import machine_line, write_section

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "build" / "hpa-live.json"
PLOT = ROOT / "docs" / "img" / "hpa-live.png"
SECTION = "hpa-live"
# The test alone through `make e2e-live` (which runs it with the other live tests too), then this.
COMMAND = "make bench-hpa"


def plot(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    per_second = result["answers_per_second"]
    seconds = sorted(int(s) for s in per_second)
    ok = [per_second[str(s)].get("ok", 0) for s in seconds]
    other = [sum(v for k, v in per_second[str(s)].items() if k != "ok") for s in seconds]

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    top.step([s["t"] for s in samples], [s["ready"] for s in samples], where="post",
             label="ready replicas")  # fmt: skip
    top.step([s["t"] for s in samples], [s["desired"] or 0 for s in samples], where="post",
             linestyle="--", label="HPA desired")  # fmt: skip
    top.axvline(result["load_stopped_at"], color="grey", linestyle=":", label="load stopped")
    top.set_ylabel("replicas")
    top.set_ylim(0, max(s["ready"] for s in samples) + 1)
    cpu = top.twinx()
    cpu.plot([s["t"] for s in samples], [s["cpu_percent"] or 0 for s in samples],
             color="tab:red", alpha=0.5, label="CPU % of request")  # fmt: skip
    cpu.axhline(result["target_cpu_percent"], color="tab:red", linestyle=":", alpha=0.5)
    cpu.set_ylim(bottom=0)
    cpu.set_ylabel("CPU % of request", color="tab:red")
    top.legend(loc="upper right", fontsize=8)
    bottom.bar(seconds, ok, width=1.0, label="200")
    bottom.bar(seconds, other, width=1.0, bottom=ok, label="other / no answer")
    loaded = [s for s in samples if s["t"] <= result["load_stopped_at"]]
    bottom.step([s["t"] for s in loaded], [s["asked_rps"] for s in loaded], where="post",
                color="black", linewidth=1, label="asked req/s")  # fmt: skip
    bottom.set_ylim(0, 1.15 * max([*ok, *(s["asked_rps"] for s in loaded), 1]))
    bottom.set_ylabel("answers per second")
    bottom.set_xlabel("seconds since the load started")
    bottom.legend(loc="upper right", fontsize=8)
    fig.suptitle("staging HPA on the live sandbox node: POST /v1/predict load")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    totals = result["answers_total"]
    load = result["load"]
    stopped = result["load_stopped_at"]
    answered = sum(totals.values())
    seconds_with_load = [int(s) for s in result["answers_per_second"] if int(s) < stopped]
    achieved = answered / max(1, len(seconds_with_load))
    peak = max((s["cpu_percent"] or 0) for s in result["samples"])
    asked = max(s["asked_rps"] for s in result["samples"])
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(totals.items()))
    low, want = result["min_replicas"], result["want_replicas"]
    up, down = result["up_seconds"], result["down_seconds_after_load"]
    return f"""
## HPA on real CPU (live sandbox, staging)

`{COMMAND}` (the test is also part of `make e2e-live`)

{machine_line()}. Shared machine: other jobs were running, so the times are upper bounds.

metrics-server {result.get("metrics_server", "v0.8.0")} from the vendored chart (Argo CD, Helm),
HPA sync period 5 s (sandbox only), staging's scale-down window 60 s (overlays/staging). Load:
POST /v1/predict, one 300x300 PNG per request, from {load["threads"]} threads through staging's
Ingress (Traefik, HTTPS). The rate starts at {load["start_rps"]:.0f} req/s and is raised
x{load["ramp_factor"]} every {load["ramp_every_s"]:.0f} s while the HPA wants fewer than {want}
replicas, up to {load["max_rps"]:.0f} req/s. This run asked up to {asked:.0f} req/s and got
{achieved:.1f} answers per second on average while the load ran.

| step | seconds |
|---|---|
| load start -> {want} ready replicas (from {low}) | {up} |
| load stop -> back to {low} ready replicas | {down} |

Peak CPU {peak} % of the request (target {result["target_cpu_percent"]} %). Answers: {outcomes}.

![replicas, CPU and answers per second over time](img/hpa-live.png)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--result", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    if not args.result.exists():
        raise SystemExit(f"{args.result} is missing: run `make e2e-live` first")
    result = json.loads(args.result.read_text())
    if result.get("up_seconds") is None or result.get("down_seconds_after_load") is None:
        raise SystemExit(f"{args.result}: the HPA test did not finish both steps; nothing written")
    plot(result, PLOT)
    write_section(SECTION, markdown(result))
    print(f">> wrote {PLOT} and section {SECTION} of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
