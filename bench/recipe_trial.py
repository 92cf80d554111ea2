"""One recipe trial on the validation split: params.yaml plus overrides, never the test split.

    .venv/bin/python -m bench.recipe_trial --set train.dropout=0.3 --set train.augment.rot90=true
    .venv/bin/python -m bench.recipe_trial --set base.image_size=256 \
        --set 'train.filters=[8, 16, 32, 64, 128, 256]'

    .venv/bin/python -m bench.recipe_trial --seeds 42 1 2 --set train.ensemble=3

For screening a recipe change (docs/pipeline.md "Change the recipe"): the pipeline's own
prepare, model builder, batches, schedule and loss (`train_model`, which keeps the best
validation-AUC epoch), one split seed (`base.seed`) or each of `--seeds`. Prints the model's
validation accuracy and AUC and its accuracy per cell type and expert probability (with several
seeds: per seed, then the mean and spread), so a recipe is chosen before a test split is read.
Each value of `--set` is parsed as YAML. Slow: one full training per seed.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.trials import apply_override
from classifier.pipeline.common import load_params, section


def run_trial(params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from bench.trials import split_and_train
    from classifier.pipeline.evaluate import operating_threshold
    from classifier.pipeline.prepare import load_split

    base = section(params, "base")
    trained = split_and_train(params, int(base["seed"]), workdir)
    val = load_split(workdir, "val")
    p = trained.model.predict(val["x"], batch_size=64, verbose=0).ravel()
    # The model decides at the operating point; val["y"] holds the labels (0/1).
    right = (p > operating_threshold(params)) == (val["y"] > 0.5)
    groups = {
        f"{t} p={q:.2f}": float(right[(val["type"] == t) & np.isclose(val["p"], q)].mean())
        for t in sorted(set(val["type"].tolist()))
        for q in sorted(set(val["p"].tolist()))
        if np.any((val["type"] == t) & np.isclose(val["p"], q))
    }
    return {
        "val_accuracy": float(right.mean()),
        "val_auc": float(roc_auc_score(val["y"], p)),
        "train_accuracy_last_epoch": [h["accuracy"][-1] for h in trained.histories],
        "member_val_accuracy": [
            h["val_accuracy"][int(np.argmax(h["val_auc"]))] for h in trained.histories
        ],
        "epochs": max(len(h["loss"]) for h in trained.histories),
        "accuracy_by_type_and_probability": groups,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument(
        "--seeds", type=int, nargs="+", metavar="SEED", help="split seeds (default: base.seed)"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    for assignment in args.overrides:
        apply_override(params, assignment)
    for knob in ("refit", "cross_fold"):
        if section(params, "train").get(knob):
            raise SystemExit(
                f"recipe_trial scores the validation split, which train.{knob} trains on: "
                f"set train.{knob}=false (judge it over split seeds with `make bench-model`)"
            )
    seeds = args.seeds or [int(section(params, "base")["seed"])]
    if len(set(seeds)) < len(seeds):
        parser.error(f"--seeds {' '.join(map(str, seeds))}: each split seed once")
    print(f"recipe-trial: {' '.join(args.overrides) or 'params.yaml as it is'}")
    results: list[dict[str, Any]] = []
    for seed in seeds:
        seeded = copy.deepcopy(params)
        seeded["base"]["seed"] = seed
        prefix = f"recipe-trial: split seed {seed}: " if len(seeds) > 1 else "recipe-trial: "
        if len(seeds) > 1:
            print(f"{prefix}training ({len(results) + 1} of {len(seeds)})", flush=True)
        with tempfile.TemporaryDirectory(prefix="recipe-trial-") as tmp:
            results.append(run_trial(seeded, Path(tmp)))
        report(results[-1], prefix)  # as each seed ends: a stopped run keeps what it measured
    if len(seeds) > 1:
        print(f"recipe-trial: over split seeds {' '.join(map(str, seeds))}: {spread(results)}")


def spread(results: list[dict[str, Any]]) -> str:
    """'val accuracy m +/- s, val AUC m +/- s' over several trials."""
    parts = []
    for key, label in (("val_accuracy", "val accuracy"), ("val_auc", "val AUC")):
        values = [r[key] for r in results]
        parts.append(f"{label} {statistics.mean(values):.4f} +/- {statistics.stdev(values):.4f}")
    return ", ".join(parts)


def report(result: dict[str, Any], prefix: str) -> None:
    print(
        f"{prefix}val accuracy {result['val_accuracy']:.3f}, val AUC "
        f"{result['val_auc']:.3f}, train accuracy "
        f"{' / '.join(f'{a:.3f}' for a in result['train_accuracy_last_epoch'])} after "
        f"{result['epochs']} epochs"
    )
    if len(result["member_val_accuracy"]) > 1:
        accuracies = " / ".join(f"{a:.3f}" for a in result["member_val_accuracy"])
        print(f"{prefix}members alone: val accuracy {accuracies}")
    for group, accuracy in result["accuracy_by_type_and_probability"].items():
        print(f"{prefix}  {group}: accuracy {accuracy:.3f}", flush=True)


if __name__ == "__main__":
    main()
