"""Epoch time of one member under params.yaml variants, side by side.

    .venv/bin/python -m bench.epoch_cost --epochs 5 --rounds 2 \
        --variant "96 px" --variant "64 px" base.image_size=64

What a cheaper member would cost, measured rather than read off its FLOPs (an epoch's time does
not shrink with its pixels alone: input, augmentation and per-step overheads stay). Each
variant (a name, then `KEY=VALUE` overrides of params.yaml as `bench.recipe_trial --set` takes
them) runs in its own process: the pipeline's prepare (split `base.seed`) at the variant's
image size, then member 1's training for `--epochs` epochs. Variants are interleaved round by
round so host noise falls on all alike. Prints each variant's median epoch time after the first
(graph building) and its ratio to the first variant's, and writes them to docs/benchmarks.md
(section `epoch-cost`). Slow: rounds x variants short trainings.

An override `env:NAME=VALUE` sets an environment variable of the variant's process instead
(`env:NAME=` unsets it), e.g. glibc's allocator settings, or `env:ELPV_HOST_KERNELS=1` for
TensorFlow's own choice of kernels instead of the pin (classifier/pipeline/kernels.py); the
override `feed:keras` feeds fit Keras' own PyDataset pipeline instead of the pipeline's
`batches.batch_dataset` (what tf.data's autotuning stalls cost); and `--section` gives a
question its own section instead of overwriting `epoch-cost`:

    .venv/bin/python -m bench.epoch_cost --epochs 4 --rounds 2 --section epoch-cost-malloc \
        --variant "glibc default" env:GLIBC_TUNABLES= \
        --variant "32 MiB mmap threshold" env:GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432

The kernel pin's cost against the host's default and against the pin with oneDNN's ops off:

    .venv/bin/python -m bench.epoch_cost --epochs 4 --rounds 2 --section epoch-cost-kernels \
        --variant pinned --variant host env:ELPV_HOST_KERNELS=1 \
        --variant "pinned, oneDNN ops off" env:ELPV_HOST_KERNELS=1 env:TF_ENABLE_ONEDNN_OPTS=0 \
        env:ONEDNN_MAX_CPU_ISA=AVX2 env:TF_NUM_INTRAOP_THREADS=2 env:TF_NUM_INTEROP_THREADS=1
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import machine_line, section_name, write_section
from bench.trials import apply_override, prepare_split
from classifier.pipeline.common import load_params
from classifier.pipeline.kernels import HOST_KERNELS_ENV, PINNED


def train_once(
    overrides: list[str], epochs: int, params_file: Path = Path("params.yaml")
) -> dict[str, list[float]]:
    """In this process: prepare and train member 1 under `overrides`; returns each epoch's wall
    time (`seconds`) and the minor page faults this process took in it (`minor_faults`)."""
    import resource

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from classifier.pipeline import train
    from classifier.pipeline.model import build_model
    from classifier.pipeline.prepare import load_split
    from classifier.pipeline.recipe import Recipe

    params = copy.deepcopy(load_params(params_file))
    for assignment in params_overrides(overrides):
        apply_override(params, assignment)
    recipe = Recipe.from_params(params)
    recipe = dataclasses.replace(recipe, epochs=epochs, patience=epochs, refit=False)
    times: list[float] = []
    faults: list[float] = []

    class EpochTimer(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.started)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.faults)

    fit = keras.Model.fit

    def timed_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), EpochTimer()]
        return fit(self, *args, **kwargs)

    keras.Model.fit = timed_fit  # train_model builds its own callbacks: add the timer to them
    # train_model looks batch_dataset up in the train module's namespace: swap it there.
    namespace = vars(train)
    batch_dataset = namespace["batch_dataset"]
    if KERAS_FEED in overrides:
        namespace["batch_dataset"] = lambda batches: batches  # fit wraps the PyDataset itself
    try:
        with tempfile.TemporaryDirectory() as out:
            prepare_split(params, recipe.seed, Path(out))
            train_split, val_split = load_split(Path(out), "train"), load_split(Path(out), "val")
            x, targets = train.member_data(train_split, val_split, recipe)[0].fit
            train.make_deterministic(recipe.seed)
            model = build_model(recipe, channels=x.shape[-1])
            train.train_model(
                model, (x, targets), (val_split["x"], val_split["y"]), recipe, verbose=0
            )
    finally:
        keras.Model.fit = fit
        namespace["batch_dataset"] = batch_dataset
    return {"seconds": times, "minor_faults": faults}


ENV_PREFIX = "env:"
KERAS_FEED = "feed:keras"


def params_overrides(overrides: list[str]) -> list[str]:
    """The `KEY=VALUE`s among a child's overrides (not the `feed:keras` marker)."""
    return [override for override in overrides if override != KERAS_FEED]


def split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, str | None]]:
    """A variant's overrides -> (params.yaml `KEY=VALUE`s, {environment variable: value, or
    None to unset it}) from its `env:NAME=VALUE` ones."""
    params: list[str] = []
    env: dict[str, str | None] = {}
    for override in overrides:
        if not override.startswith(ENV_PREFIX):
            params.append(override)
            continue
        name, sep, value = override.removeprefix(ENV_PREFIX).partition("=")
        if not sep or not name:
            raise SystemExit(
                f"{override!r}: expected env:NAME=VALUE (env:NAME= unsets NAME), "
                "e.g. env:GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432"
            )
        env[name] = value or None
    return params, env


def child_environment(env: dict[str, str | None]) -> dict[str, str]:
    """This process's environment with a variant's settings applied. A variant that asks for the
    host's kernels (`env:ELPV_HOST_KERNELS=1`) starts without the pinned variables this process
    set when it imported classifier.pipeline (kernels.py), so TensorFlow chooses for the host as
    it does unpinned; the variant's own `env:` settings still apply on top."""
    merged = dict(os.environ)
    if (env.get(HOST_KERNELS_ENV) or "").strip().lower() in {"1", "true", "yes"}:
        for name in PINNED:
            merged.pop(name, None)
    for name, value in env.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def parse_variants(raw: list[list[str]]) -> dict[str, list[str]]:
    """`--variant NAME [KEY=VALUE ...]` lists -> {name: overrides}; names unique, >= 2 variants."""
    variants: dict[str, list[str]] = {}
    for name, *overrides in raw:
        if name in variants:
            raise SystemExit(f"--variant {name!r} given twice: give each variant its own name")
        if "=" in name:
            raise SystemExit(f"--variant {name!r}: start with a name, then KEY=VALUE overrides")
        variants[name] = overrides
    if len(variants) < 2:
        raise SystemExit("give at least two --variant: the first is the reference for ratios")
    return variants


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar="NAME [KEY=VALUE]",
        help="a name, then params.yaml overrides (YAML values); the first is the reference",
    )
    parser.add_argument(
        "--section",
        default="epoch-cost",
        type=section_name,
        help="docs/benchmarks.md section to write (a question of its own: epoch-cost-malloc)",
    )
    # Internal: the child process trains one variant and prints its epoch times and faults as JSON.
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.rounds < 1:
        raise SystemExit("--epochs must be >= 2 (the first is not timed) and --rounds >= 1")
    if args.child is not None:
        print(json.dumps(train_once(args.child, args.epochs)))
        return
    variants = parse_variants(args.variant)
    params = load_params(Path("params.yaml"))
    # Fail on bad input now, not after the first trainings.
    parsed = {name: split_overrides(overrides) for name, overrides in variants.items()}
    for assignments, _env in parsed.values():
        variant = copy.deepcopy(params)
        for assignment in params_overrides(assignments):
            apply_override(variant, assignment)
        labels = Path(variant["base"]["data_dir"]) / "labels.csv"
        if not labels.is_file():
            raise SystemExit(f"{labels} not found: run `make data` first (or fix base.data_dir)")
    medians: dict[str, list[float]] = {name: [] for name in variants}
    means: dict[str, list[float]] = {name: [] for name in variants}
    faults: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(1, args.rounds + 1):
        for name, (assignments, env) in parsed.items():
            child = [sys.executable, "-m", "bench.epoch_cost", "--epochs", str(args.epochs)]
            try:
                out = subprocess.run(
                    [*child, "--child", *assignments],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=child_environment(env),
                ).stdout
            except subprocess.CalledProcessError as failed:  # its traceback, not only the code
                raise SystemExit(f"variant {name!r} failed:\n{failed.stderr[-3000:]}") from None
            epochs = json.loads(out.strip().splitlines()[-1])
            medians[name].append(statistics.median(epochs["seconds"][1:]))
            means[name].append(statistics.mean(epochs["seconds"][1:]))
            faults[name].append(statistics.median(epochs["minor_faults"][1:]))
            print(
                f"round {r}, {name}: median epoch {medians[name][-1]:.2f} s "
                f"(mean {means[name][-1]:.2f} s), "
                f"{faults[name][-1]:,.0f} minor page faults",
                flush=True,
            )
    print()
    print(table(variants, medians, means, faults))
    command = shlex.join([".venv/bin/python", "-m", "bench.epoch_cost", *(argv or sys.argv[1:])])
    write_section(
        args.section,
        "## Epoch time of one member, by variant\n\n"
        f"Command: `{command}` (bench/epoch_cost.py) — machine: {machine_line()}. Member 1 "
        "(seed base.seed) on its own prepared split, each variant in its own process, variants "
        "interleaved by round; median and mean epoch time (validation included) and minor page "
        "faults of the variant's process after the first epoch (a stall in some epochs moves the "
        "mean, not the median).\n\n" + table(variants, medians, means, faults),
    )


def table(
    variants: dict[str, list[str]],
    medians: dict[str, list[float]],
    means: dict[str, list[float]],
    faults: dict[str, list[float]],
) -> str:
    """Markdown: each variant's median epoch time by round and its ratio to the first's, its
    mean epoch time by round, and its median minor page faults per epoch by round."""
    reference = statistics.mean(next(iter(medians.values())))
    lines = [
        "| variant | overrides | median epoch (s), by round | ratio to the first "
        "| mean epoch (s), by round | minor page faults per epoch, by round |",
        "|---|---|---|---|---|---|",
    ]
    for name, values in medians.items():
        shown = " ".join(f"`{o}`" for o in variants[name]) or "(params.yaml)"
        by_round = " / ".join(f"{v:.2f}" for v in values)
        faulted = " / ".join(f"{v:,.0f}" for v in faults[name])
        lines.append(
            f"| {name} | {shown} | {by_round} | {statistics.mean(values) / reference:.2f}x "
            f"| {' / '.join(f'{v:.2f}' for v in means[name])} | {faulted} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
