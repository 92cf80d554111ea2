"""Model-quality benchmark: the pipeline's recipe over several split seeds.

    make bench-model        # or: .venv/bin/python -m bench.model_quality [--seeds 42 1 2]
    # a trial against it, in its own section:
    .venv/bin/python -m bench.model_quality --set train.refit=true --section model-quality-refit

For each seed: a fresh stratified 75/25 split (val carved out of train), training from scratch
with params.yaml's `train` section, evaluation on that seed's test split. Reports accuracy,
balanced accuracy, ROC AUC and F1 per seed and as mean +/- std, the same per cell type, training
wall time, and the model's size (.tflite bytes) and FLOPs per image. Rewrites the
`model-quality` section of docs/benchmarks.md. Slow: one full training per seed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.recipe_trial import apply_override
from bench.report import machine_line, section_name, write_section
from classifier.pipeline.common import input_channels, load_params, section

# Deitsch et al., "Automatic classification of defective photovoltaic module cells in
# electroluminescence images", Solar Energy 185 (2019): same data, same 75/25 protocol.
PAPER = {"CNN (VGG-19, ImageNet-pretrained, GPU)": 0.8842, "SVM (hand-crafted features)": 0.8244}
HEADLINE = ("accuracy", "balanced_accuracy", "roc_auc", "f1")


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


def split_and_train(params: dict[str, Any], seed: int, out: Path) -> Any:
    """The pipeline's prepare (split `seed`) into `out`, then its training on that split, as
    `dvc repro` does (members seeded from `seed`); returns train.Trained."""
    from classifier.pipeline.prepare import load_split, prepare
    from classifier.pipeline.train import TrainConfig, member_data, train_members

    base, prep = section(params, "base"), section(params, "prepare")
    size = int(base["image_size"])
    prepare(
        Path(base["data_dir"]),
        out,
        image_size=size,
        threshold=float(base["threshold"]),
        test_fraction=float(prep["test_fraction"]),
        val_fraction=float(prep["val_fraction"]),
        seed=seed,
        channels=input_channels(base),
    )
    config = TrainConfig.from_params(section(params, "train"), seed=seed)
    train, val = load_split(out, "train"), load_split(out, "val")
    return train_members(config, size, member_data(train, val, config))


def run_seed(seed: int, params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from classifier.pipeline.evaluate import evaluate_predictions
    from classifier.pipeline.export import export_tflite
    from classifier.pipeline.prepare import load_split

    out = workdir / f"seed-{seed}"
    trained = split_and_train(params, seed, out)
    model = trained.model
    test = load_split(out, "test")
    p = model.predict(test["x"], batch_size=64, verbose=0).ravel()
    threshold = float(section(params, "base")["threshold"])
    metrics = evaluate_predictions(test["y"], p, test["type"], threshold)
    tflite = export_tflite(model, out / "model.tflite")
    return {
        "seed": seed,
        "metrics": metrics,
        "train_seconds": trained.seconds,
        "epochs": max(len(h["loss"]) for h in trained.histories),
        "tflite_bytes": tflite.stat().st_size,
        "flops": flops_per_image(model),
        "parameters": int(model.count_params()),
    }


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def augmentation(train: dict[str, Any]) -> str:
    """The augmentation params in words, e.g. "flips, brightness 0.1, contrast 0.1"."""
    aug = train.get("augment", {})
    words = [name for name, key in (("flips", "flip"), ("rot90", "rot90")) if aug.get(key)]
    keys = ("brightness", "contrast", "shift", "rotate", "scale", "mixup")
    words += [f"{key} {aug[key]}" for key in keys if aug.get(key)]
    return ", ".join(words) or "none"


def fitting_note(train: dict[str, Any]) -> str:
    """What the members fit and stop on, when it is not the training split and val."""
    if train.get("refit"):
        return ", refit on train + val (last epoch kept)"
    if train.get("cross_fold"):
        return ", cross-fold (member i > 1 early-stops on its own fold of train)"
    return ""


def targets(train: dict[str, Any]) -> str:
    """What the members fit: the ordinal head's cuts, else soft or binary targets."""
    if train.get("ordinal"):
        return "ordinal head (one cut per expert level)"
    return f"{'soft' if train.get('soft_targets', True) else 'binary'} targets"


def sam_note(train: dict[str, Any]) -> str:
    rho = float(train.get("sam_rho", 0.0))
    return f" with sharpness-aware steps (rho {rho:g})" if rho > 0 else ""


def render(
    results: list[dict[str, Any]],
    params: dict[str, Any],
    command: str,
    planned: list[int] | None = None,
) -> str:
    """The docs/benchmarks.md section; `planned` (the --seeds) marks a run not yet finished."""
    base, train = params["base"], params["train"]
    done = [r["seed"] for r in results]
    unfinished = [s for s in planned or done if s not in done]
    lines = [
        "## Model quality (ELPV test split, from scratch)",
        "",
        f"Command: `{command}` — machine: {machine_line()} (train times "
        "are upper bounds when other jobs share the machine).",
        f"Recipe: params.yaml — {base['image_size']}x{base['image_size']} "
        f"{' + '.join(base.get('channels', ['gray']))}, filters "
        f"{train['filters']} x{train.get('convs_per_block', 2)} conv, up to {train['epochs']} "
        f"epochs, Adam {train['learning_rate']} warmup + cosine{sam_note(train)}, BN momentum "
        f"{train.get('bn_momentum', 0.9)}, "
        f"{targets(train)}, "
        f"{'class weights' if train.get('balance_classes', False) else 'no class weights'}, "
        f"global {train.get('pooling', 'avg')} pooling, augmentation: {augmentation(train)}, "
        f"{train.get('ensemble', 1)} member(s){fitting_note(train)}. "
        "Split: stratified 75/25 by label and cell type, val = 15 % of train.",
        *(
            [
                f"**Partial: {len(done)} of {len(done) + len(unfinished)} split seeds** (not "
                f"run, or cut short: {', '.join(map(str, unfinished))}).",
            ]
            if unfinished
            else []
        ),
        "",
        "| split seed | accuracy | balanced acc. | ROC AUC | F1 | mono acc. | poly acc. "
        "| epochs | train time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["metrics"]
        per = m["per_cell_type"]
        lines.append(
            f"| {r['seed']} | {m['accuracy']:.4f} | {m['balanced_accuracy']:.4f} | "
            f"{m['roc_auc']:.4f} | {m['f1']:.4f} | {per['mono']['accuracy']:.4f} | "
            f"{per['poly']['accuracy']:.4f} | {r['epochs']} | {r['train_seconds'] / 60:.1f} min |"
        )

    def col(key: str, cell: str | None = None) -> list[float]:
        return [
            float((r["metrics"]["per_cell_type"][cell] if cell else r["metrics"])[key])
            for r in results
        ]

    lines.append(
        f"| **mean ± std** | {mean_std(col('accuracy'))} | {mean_std(col('balanced_accuracy'))} "
        f"| {mean_std(col('roc_auc'))} | {mean_std(col('f1'))} | "
        f"{mean_std(col('accuracy', 'mono'))} | {mean_std(col('accuracy', 'poly'))} | | "
        f"{statistics.mean(r['train_seconds'] for r in results) / 60:.1f} min |"
    )
    first = results[0]
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
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
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
    flags += [] if args.seeds == [42, 1, 2] else ["--seeds " + " ".join(map(str, args.seeds))]
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
            # Every number the tables use, as each seed ends: a run cut short still reports them.
            m, minutes = results[-1]["metrics"], results[-1]["train_seconds"] / 60
            print(
                f"bench-model: seed {seed}: accuracy {m['accuracy']:.4f}, balanced "
                f"{m['balanced_accuracy']:.4f}, ROC AUC {m['roc_auc']:.4f}, "
                f"training {minutes:.1f} min",
                flush=True,
            )
            # The section too: a run of hours cut short keeps the seeds it finished, marked so.
            write_section(args.section, render(results, params, command, planned=args.seeds))
    print(f"bench-model: wrote the {args.section} section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
