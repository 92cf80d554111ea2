"""What the ensemble costs at inference: the pipeline's model against one of its members alone.

    make bench-members      # or: .venv/bin/python -m bench.members_cost [--seconds 5 --rounds 3]

Loads the train stage's model (the `train.ensemble` members averaged), exports its first member
alone with the pipeline's own `export_tflite`, and runs both .tflite files with LiteRT (as serving
does), batch 1, interleaved round by round so host noise hits both alike. Rewrites the
`members` section of docs/benchmarks.md. Needs `dvc repro` (or `make run`) first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.model_quality import flops_per_image
from bench.report import machine_line, write_section
from bench.serving import tflite_throughput


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per model and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="LiteRT interpreter threads")
    args = parser.parse_args(argv)
    from classifier.pipeline.stages import output

    model_path = output("train", "model.keras")
    if not model_path.is_file():
        raise SystemExit(
            f"bench-members: {model_path} is missing: run `make run` (dvc repro) first"
        )
    import keras

    from classifier.pipeline.export import export_tflite

    model = keras.models.load_model(model_path)
    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if not members:
        raise SystemExit(
            f"bench-members: {model_path} is one model (train.ensemble: 1): no members"
        )
    size = int(model.input_shape[1])
    with tempfile.TemporaryDirectory(prefix="bench-members-") as tmp:
        models = {
            f"one member ({members[0].name})": (members[0], Path(tmp) / "member.tflite"),
            f"the pipeline's model ({len(members)} members)": (model, Path(tmp) / "all.tflite"),
        }
        rates: dict[str, list[float]] = {name: [] for name in models}
        sizes = {name: export_tflite(m, path).stat().st_size for name, (m, path) in models.items()}
        for round_ in range(1, args.rounds + 1):
            for name, (_m, path) in models.items():
                rate = tflite_throughput(path, (size, size, 1), args.threads, args.seconds, (1,))
                rates[name].append(rate[1])
            print(
                f"bench-members: round {round_}: "
                + ", ".join(f"{name} {r[-1]:.0f} img/s" for name, r in rates.items()),
                flush=True,
            )
    one, all_ = (statistics.median(r) for r in rates.values())
    lines = [
        "## Ensemble cost at inference (LiteRT, in-process)",
        "",
        f"Command: `make bench-members` (bench/members_cost.py) — machine: {machine_line()}. "
        f"Batch 1, {args.threads} interpreter threads, {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s per model, median. Served requests also pay PNG decoding and HTTP "
        "(section `serving`), so they slow down by less than this ratio.",
        "",
        "| model | img/s (median) | rounds | MFLOPs per image | .tflite |",
        "|---|---|---|---|---|",
    ]
    for name, (m, _path) in models.items():
        lines.append(
            f"| {name} | {statistics.median(rates[name]):.0f} | "
            + " / ".join(f"{r:.0f}" for r in rates[name])
            + f" | {flops_per_image(m) / 1e6:.0f} | {sizes[name] / 1024:.0f} KiB |"
        )
    lines += ["", f"One member is **{one / all_:.2f}x** as fast as the pipeline's model."]
    write_section("members", "\n".join(lines))
    print(f"bench-members: one member {one / all_:.2f}x as fast; wrote section 'members'")


if __name__ == "__main__":
    main()
