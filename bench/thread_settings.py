"""Epoch time of params.yaml's training under TensorFlow thread settings.

    .venv/bin/python -m bench.thread_settings --epochs 6 --rounds 2

Each setting trains member 1 (seed base.seed) on the prepare stage's output (run `make pipeline`
first) for `--epochs` epochs in its own process (threads must be set before TensorFlow starts),
settings interleaved round by round so that host noise falls on all of them alike. Prints the median
epoch time after the first (graph building) and the largest weight difference from the default
setting: a setting that changes the weights would change the recipe's results, not only its
speed. Slow: rounds x settings short trainings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SETTINGS = {
    "default": {},
    "intra-op 2, inter-op 1": {"intra": 2, "inter": 1},
    "intra-op 2, inter-op 2": {"intra": 2, "inter": 2},
    "oneDNN off": {"onednn": 0},
}


def train_once(setting: dict[str, int], epochs: int, weights_path: Path) -> list[float]:
    """In this process: train for `epochs` under `setting`; returns the epoch times."""
    if "onednn" in setting:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = str(setting["onednn"])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import dataclasses

    import keras
    import numpy as np
    import tensorflow as tf

    if "intra" in setting:
        tf.config.threading.set_intra_op_parallelism_threads(setting["intra"])
        tf.config.threading.set_inter_op_parallelism_threads(setting["inter"])
    from classifier.pipeline import train
    from classifier.pipeline.common import load_params
    from classifier.pipeline.model import build_model
    from classifier.pipeline.prepare import load_split
    from classifier.pipeline.recipe import Recipe

    recipe = Recipe.from_params(load_params(Path("params.yaml")))
    recipe = dataclasses.replace(recipe, epochs=epochs, patience=epochs, refit=False)
    prepared = prepared_dir()
    train_split, val_split = load_split(prepared, "train"), load_split(prepared, "val")
    x, targets = train.member_data(train_split, val_split, recipe)[0].fit
    train.make_deterministic(recipe.seed)
    model = build_model(recipe, channels=x.shape[-1])
    times: list[float] = []

    class EpochTimer(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.started)

    fit = keras.Model.fit

    def timed_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), EpochTimer()]
        return fit(self, *args, **kwargs)

    keras.Model.fit = timed_fit  # train_model builds its own callbacks: add the timer to them
    train.train_model(model, (x, targets), (val_split["x"], val_split["y"]), recipe, verbose=0)
    np.save(weights_path, np.concatenate([w.ravel() for w in model.get_weights()]))
    return times


def prepared_dir() -> Path:
    """The prepare stage's output, as dvc.yaml names it."""
    from classifier.pipeline.stages import output

    return output("prepare", "prepared")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    # Internal: the child process trains one setting and saves its weights to --weights.
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.rounds < 1:
        raise SystemExit("--epochs must be >= 2 (the first is not timed) and --rounds >= 1")
    if args.child is not None:
        print(json.dumps(train_once(SETTINGS[args.child], args.epochs, args.weights)))
        return
    if not (prepared_dir() / "train.npz").is_file():
        raise SystemExit(f"{prepared_dir()}/train.npz not found: run `make pipeline` first")
    import numpy as np

    medians: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(1, args.rounds + 1):
            for name in SETTINGS:
                weights = Path(tmp) / f"{len(medians[name])}-{name}.npy"
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.thread_settings",
                        "--epochs",
                        str(args.epochs),
                        "--child",
                        name,
                        "--weights",
                        str(weights),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                times = json.loads(out.strip().splitlines()[-1])
                medians[name].append(float(np.median(times[1:])))
                print(f"round {r}, {name}: median epoch {medians[name][-1]:.2f} s", flush=True)
        reference = np.load(Path(tmp) / "0-default.npy")
        print("\n| setting | median epoch (s), by round | max weight diff. vs default |")
        print("|---|---|---|")
        for name, values in medians.items():
            diff = float(np.abs(np.load(Path(tmp) / f"0-{name}.npy") - reference).max())
            print(f"| {name} | {' / '.join(f'{v:.2f}' for v in values)} | {diff:.3g} |")


if __name__ == "__main__":
    main()
