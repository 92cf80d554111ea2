"""Traffic through the live sandbox's Ingress: push -> answer, rollout and rollback under load.

    python -m bench.live_traffic [--results build/sandbox-traffic.json]

Reads what tests/e2e/test_live_traffic.py measured (`make bench-live-traffic` runs it through
`make e2e-live`) and rewrites the `live-traffic` section of docs/benchmarks.md. Nothing is
measured here, so the figures are the ones the tests asserted on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.report import machine_line, write_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "build" / "sandbox-traffic.json"
TARGET_S, AIM_S = 90.0, 45.0


def row(label: str, run: dict[str, Any]) -> str:
    versions = ", ".join(f"`{v}`: {n}" for v, n in sorted(run["answers_per_version"].items()))
    return (
        f"| {label} | {run['push_to_first_new_answer_s']:.1f} | "
        f"{run['push_to_only_new_pods_s']:.1f} | {run['requests']} | {run['failed']} | {versions} |"
    )


def render(results: dict[str, Any]) -> str:
    missing = [k for k in ("push_to_deploy", "rollback") if k not in results]
    if missing:
        raise SystemExit(
            f"{RESULTS}: no {', '.join(missing)} figures: the traffic tests did not get that far "
            "(see the pytest output of `make bench-live-traffic`)"
        )
    deploy = results["push_to_deploy"]["push_to_first_new_answer_s"]
    verdict = (
        "meets the aim"
        if deploy <= AIM_S
        else "meets the target"
        if deploy <= TARGET_S
        else "misses the target"
    )
    return "\n".join(
        [
            "## Live sandbox: traffic through the Ingress (`make bench-live-traffic`)",
            "",
            "Command: `flock /tmp/elpv-docker.lock make bench-live-traffic` (runs",
            "`tests/e2e/test_live_traffic.py` alone through `make e2e-live`, then `python -m",
            "bench.live_traffic`; a full `make e2e-live` writes the same results file, which",
            "`python -m bench.live_traffic` turns into this section). Machine: "
            f"{machine_line()}; shared with other jobs. Live mode: one real node, Traefik as the",
            "Ingress controller on 127.0.0.1, staging's Deployment at 2 replicas (`maxSurge: 1`,",
            "`maxUnavailable: 0`, `preStop` sleep 10 s). Image A and B: the tiny test model, B",
            "with another model version in its card (new digest, never pulled on the node before;",
            "the model is a layer of its own in the Dockerfile, so B's other layers can be A's).",
            "",
            f"Load: GET `/v1/model` at {results['rate_per_second']:.0f} req/s (open loop, 8",
            "keep-alive HTTPS connections, SNI + Host = the Ingress's host, certificate verified)",
            'from 3 s before the push until 3 s after the last old pod is gone. "push -> first',
            "new answer\": from the start of the deploy commit's push (`gitops bump`, or `git",
            "revert` + `git push`) to the first load answer from the new version; Argo CD is",
            "refreshed right after the push, as a git webhook would.",
            "",
            "| change | push -> first new answer (s) | push -> only new pods (s) | requests | "
            "failed | answers per version |",
            "|---|---:|---:|---:|---:|---|",
            row("push to deploy (A -> B, cold pull of B)", results["push_to_deploy"]),
            row("rollback: `git revert` of that commit (B -> A)", results["rollback"]),
            "",
            f"Push to deploy {verdict} (target {TARGET_S:.0f} s, aim {AIM_S:.0f} s). "
            f"`sandbox up --live`: {results.get('sandbox_up_seconds')} s.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not args.results.exists():
        raise SystemExit(f"{args.results} is missing: run `make bench-live-traffic`")
    write_section("live-traffic", render(json.loads(args.results.read_text())))
    print(f">> docs/benchmarks.md: section live-traffic from {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
