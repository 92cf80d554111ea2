"""Trains a small model for a few steps and saves its weights: what test_kernels.py compares.

    python tests/pipeline/kernel_probe.py OUT.npy [--one-cpu]

`--one-cpu` confines the process to one core before TensorFlow loads, as on a host with fewer
cores; ONEDNN_MAX_CPU_ISA in the environment plays a host with another vector set.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--one-cpu", action="store_true")
    args = parser.parse_args()
    if args.one_cpu:  # before TensorFlow loads and sizes its thread pools
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    import numpy as np

    from classifier.pipeline.model import build_model
    from classifier.pipeline.recipe import Recipe
    from classifier.pipeline.train import make_deterministic, train_model

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import TINY_PARAMS

    # Wide enough that the convolutions and the dense layer go through real matrix kernels.
    params = {**TINY_PARAMS, "base": {"seed": 0, "image_size": 48}}
    params["train"] = {**params["train"], "filters": [8, 16, 32], "pooling": "avgmax"}
    recipe = Recipe.from_params(params)
    make_deterministic(recipe.seed)
    rng = np.random.default_rng(0)
    x = rng.random((96, 48, 48, 1), dtype=np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.float32)
    model = build_model(recipe, channels=1)
    train_model(model, (x[:64], y[:64]), (x[64:], y[64:]), recipe, verbose=0)
    np.save(args.out, np.concatenate([w.ravel() for w in model.get_weights()]))


if __name__ == "__main__":
    main()
