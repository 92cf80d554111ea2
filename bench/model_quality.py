"""Model-quality benchmark: the pipeline's recipe over several split seeds.

    make bench-model        # or: .venv/bin/python -m bench.model_quality [--seeds 42 1 2 5 6]
    # a trial against it, in its own section:
    .venv/bin/python -m bench.model_quality --set train.refit=true --section model-quality-refit

For each seed: a fresh stratified 75/25 split (val carved out of train), training from scratch
with params.yaml's `train` section, evaluation on that seed's test split. Reports accuracy,
balanced accuracy, ROC AUC and F1 per seed and as mean +/- std, the same per cell type, training
wall time, and the model's size (.tflite bytes) and FLOPs per image. Rewrites the
`model-quality` section of docs/benchmarks.md. Slow: one full training per seed.

The operating threshold is a recipe choice, so the section also scores each split's test
predictions over a grid of thresholds (mean, and the lowest split, of accuracy, balanced
accuracy, precision and recall) with the pick of the rule over split seeds
(`bench.operating_threshold.recall_pick`), and what the single-split validation rule picks on
each split seed and gets on its test split. Each seed's predictions (test: averaged
model; validation: member 1) are kept in `build/bench-model/SECTION/seed-S.npz`, so another
threshold rule can be judged on them without training again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.operating_threshold import held_out_member, over_split_seeds
from bench.report import machine_line, section_name, write_section
from bench.trials import apply_override, split_and_train
from classifier.comparison import GateRule
from classifier.pipeline.common import input_channels, load_params
from classifier.pipeline.recipe import Recipe

# Deitsch et al., "Automatic classification of defective photovoltaic module cells in
# electroluminescence images", Solar Energy 185 (2019): same data, same 75/25 protocol.
PAPER = {"CNN (VGG-19, ImageNet-pretrained, GPU)": 0.8842, "SVM (hand-crafted features)": 0.8244}
HEADLINE = ("accuracy", "balanced_accuracy", "roc_auc", "f1")
# Issue 33's target is a mean over five split seeds: the pipeline's own (42) and four others.
SPLIT_SEEDS = [42, 1, 2, 5, 6]
KEPT = Path("build/bench-model")  # each seed's predictions, under the section's name


def flops_per_image(model: Any) -> int:
    """Multiply-adds x 2 of the conv and dense layers (BN, ReLU and pooling are negligible),
    summed over the members of an ensemble."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += flops_per_image(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            c_in = layer.input.shape[-1]
            total += 2 * h * w * kh * kw * c_in * c_out
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)


def run_seed(seed: int, params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from classifier.pipeline.evaluate import evaluate_predictions, operating_threshold
    from classifier.pipeline.export import export_tflite
    from classifier.pipeline.prepare import load_split

    out = workdir / f"seed-{seed}"
    trained = split_and_train(params, seed, out)
    model = trained.model
    test, val = load_split(out, "test"), load_split(out, "val")
    p = model.predict(test["x"], batch_size=64, verbose=0).ravel()
    # The model's decision is the operating point, as in the pipeline's evaluate stage.
    metrics = evaluate_predictions(test["y"], p, test["type"], operating_threshold(params))
    # The validation rule reads member 1 only: with cross_fold, member 2 fitted val.
    p_val = held_out_member(model).predict(val["x"], batch_size=64, verbose=0).ravel()
    tflite = export_tflite(model, out / "model.tflite")
    return {
        "seed": seed,
        "metrics": metrics,
        "predictions": {
            "test_p": p,
            "test_y": test["y"],
            "test_type": test["type"],
            "test_expert_p": test["p"],
            "val_member1_p": p_val,
            "val_y": val["y"],
        },
        "train_seconds": trained.seconds,
        "epochs": max(len(h["loss"]) for h in trained.histories),
        "tflite_bytes": tflite.stat().st_size,
        "flops": flops_per_image(model),
        "parameters": int(model.count_params()),
    }


def keep_predictions(result: dict[str, Any], section: str) -> Path:
    """Write one seed's predictions to build/bench-model/SECTION/seed-S.npz."""
    import numpy as np

    path = KEPT / section / f"seed-{result['seed']}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **result["predictions"])
    return path


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def augmentation(recipe: Recipe) -> str:
    """The augmentation in words, e.g. "flips, brightness 0.1, contrast 0.1"."""
    aug = recipe.augment
    words = [name for name, on in (("flips", aug.flip), ("rot90", aug.rot90)) if on]
    amounts = {
        "brightness": aug.brightness,
        "contrast": aug.contrast,
        "shift": aug.shift,
        "rotate": aug.rotate,
        "scale": aug.scale,
        "mixup": aug.mixup,
    }
    words += [f"{key} {value:g}" for key, value in amounts.items() if value]
    return ", ".join(words) or "none"


def fitting_note(recipe: Recipe) -> str:
    """What the members fit and stop on, when it is not the training split and val."""
    if recipe.refit:
        return ", refit on train + val (last epoch kept)"
    if recipe.cross_fold:
        return ", cross-fold (member i > 1 early-stops on its own fold of train)"
    return ""


def targets(recipe: Recipe) -> str:
    """What the members fit: the ordinal head's cuts, else soft or binary targets."""
    if recipe.ordinal:
        return "ordinal head (one cut per expert level)"
    return f"{'soft' if recipe.soft_targets else 'binary'} targets"


def sam_note(recipe: Recipe) -> str:
    return f" with sharpness-aware steps (rho {recipe.sam_rho:g})" if recipe.sam_rho > 0 else ""


def render(
    results: list[dict[str, Any]],
    params: dict[str, Any],
    command: str,
    planned: list[int] | None = None,
) -> str:
    """The docs/benchmarks.md section; `planned` (the --seeds) marks a run not yet finished."""
    from classifier.pipeline.evaluate import operating_threshold

    base, recipe = params["base"], Recipe.from_params(params)
    test, val = (
        round(100 * float(params["prepare"][k])) for k in ("test_fraction", "val_fraction")
    )
    done = [r["seed"] for r in results]
    unfinished = [s for s in planned or done if s not in done]
    lines = [
        "## Model quality (ELPV test split, from scratch)",
        "",
        f"Command: `{command}` — machine: {machine_line()} (train times "
        "are upper bounds when other jobs share the machine).",
        f"Recipe: params.yaml — {recipe.image_size}x{recipe.image_size} "
        f"{' + '.join(input_channels(base))}, filters "
        f"{list(recipe.filters)} x{recipe.convs_per_block} conv, up to {recipe.epochs} "
        f"epochs, Adam {recipe.learning_rate:g} warmup + cosine{sam_note(recipe)}, BN momentum "
        f"{recipe.bn_momentum:g}, "
        f"{targets(recipe)}, "
        f"{'class weights' if recipe.balance_classes else 'no class weights'}, "
        f"global {recipe.pooling} pooling, augmentation: {augmentation(recipe)}, "
        f"{recipe.ensemble} member(s){fitting_note(recipe)}. "
        f"Split: stratified {100 - test}/{test} by label and cell type, val = {val} % of train.",
        *(
            [
                f"**Partial: {len(done)} of {len(done) + len(unfinished)} split seeds** (not "
                f"run, or cut short: {', '.join(map(str, unfinished))}).",
            ]
            if unfinished
            else []
        ),
        "",
        "| split seed | accuracy | balanced acc. | recall (defective) | precision | ROC AUC "
        "| F1 | mono acc. | poly acc. | epochs | train time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["metrics"]
        per = m["per_cell_type"]
        lines.append(
            f"| {r['seed']} | {m['accuracy']:.4f} | {m['balanced_accuracy']:.4f} | "
            f"{m['recall']:.4f} | {m['precision']:.4f} | {m['roc_auc']:.4f} | {m['f1']:.4f} | "
            f"{per['mono']['accuracy']:.4f} | "
            f"{per['poly']['accuracy']:.4f} | {r['epochs']} | {r['train_seconds'] / 60:.1f} min |"
        )

    def col(key: str, cell: str | None = None) -> list[float]:
        return [
            float((r["metrics"]["per_cell_type"][cell] if cell else r["metrics"])[key])
            for r in results
        ]

    lines.append(
        f"| **mean ± std** | {mean_std(col('accuracy'))} | {mean_std(col('balanced_accuracy'))} "
        f"| {mean_std(col('recall'))} | {mean_std(col('precision'))} "
        f"| {mean_std(col('roc_auc'))} | {mean_std(col('f1'))} | "
        f"{mean_std(col('accuracy', 'mono'))} | {mean_std(col('accuracy', 'poly'))} | | "
        f"{statistics.mean(r['train_seconds'] for r in results) / 60:.1f} min |"
    )
    first = results[0]
    rule = GateRule.from_params(params["gate"])
    seeds = [(r["seed"], r["predictions"]) for r in results]
    lines += ["", *over_split_seeds(seeds, operating_threshold(params), rule)]
    lines += [
        "",
        f"Model: {first['parameters']:,} parameters, {first['tflite_bytes'] / 1024:.0f} KiB "
        f"as .tflite (float32), {first['flops'] / 1e6:.0f} MFLOPs per image "
        "(2 x multiply-adds of conv and dense layers).",
        "",
        "Reference (Deitsch et al. 2019, same protocol, accuracy): "
        + "; ".join(f"{k} {v:.2%}" for k, v in PAPER.items())
        + ".",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=SPLIT_SEEDS)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="K=V",
        help="override a params key (value parsed as YAML), as in bench.recipe_trial",
    )
    parser.add_argument(
        "--section",
        default="model-quality",
        type=section_name,
        help="docs/benchmarks.md section to write (give a trial its own, e.g. model-quality-refit)",
    )
    args = parser.parse_args(argv)
    if len(args.seeds) < 1:
        parser.error("give at least one --seeds value")
    params = load_params(args.params)
    for assignment in args.overrides:
        apply_override(params, assignment)
    flags = [f"--set {a}" for a in args.overrides]
    flags += [] if args.section == "model-quality" else [f"--section {args.section}"]
    flags += [] if args.seeds == SPLIT_SEEDS else ["--seeds " + " ".join(map(str, args.seeds))]
    command = (
        "make bench-model"
        if not flags
        else " ".join([".venv/bin/python -m bench.model_quality", *flags])
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        for seed in args.seeds:
            print(f"bench-model: split seed {seed}", flush=True)
            results.append(run_seed(seed, params, Path(tmp)))
            kept = keep_predictions(results[-1], args.section)
            # Every number the tables use, as each seed ends: a run cut short still reports them.
            m, minutes = results[-1]["metrics"], results[-1]["train_seconds"] / 60
            print(
                f"bench-model: seed {seed}: accuracy {m['accuracy']:.4f}, balanced "
                f"{m['balanced_accuracy']:.4f}, ROC AUC {m['roc_auc']:.4f}, "
                f"recall {m['recall']:.4f}, training {minutes:.1f} min; predictions in {kept}",
                flush=True,
            )
            # The section too: a run of hours cut short keeps the seeds it finished, marked so.
            write_section(args.section, render(results, params, command, planned=args.seeds))
    print(f"bench-model: wrote the {args.section} section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
