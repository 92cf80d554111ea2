"""Stage `export`: Keras model -> LiteRT `.tflite` + model card, with a parity check.

The service runs the `.tflite` file with `ai_edge_litert` (no TensorFlow in the image), so this
stage proves the conversion kept the model: it runs both on the test split and records the
largest |P_litert - P_keras| in its metrics file; above `export.parity_tolerance` it fails.

Keras 3's `TFLiteConverter.from_keras_model` is unreliable, so the route is
`model.export(<dir>)` (SavedModel) -> `TFLiteConverter.from_saved_model`.

    python -m classifier.pipeline.export MODEL PREPARED EVALUATION OUTCOMES TRAINING OUT METRICS

Writes `model.tflite` and `model_card.json` into OUT and the parity check's result to METRICS.
The card carries evaluate's OUTCOMES, the per-image outcomes the metric gate pairs. The paths
are the stage's command line in dvc.yaml.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt

from classifier.imaging import GRAY_ONLY, describe
from classifier.model_card import (
    HEADLINE_METRICS,
    ModelCard,
    ModelCardError,
    ModelInput,
    SplitOutcomes,
)
from classifier.pipeline.common import (
    CLASS_NAMES,
    PARAMS_FILE,
    PipelineError,
    input_channels,
    load_params,
    read_json,
    section,
    write_json,
)

TFLITE_NAME = "model.tflite"
CARD_NAME = "model_card.json"
CARD_PARAM_SECTIONS = ("base", "prepare", "train")


class ParityError(PipelineError):
    """The exported model's outputs differ from the Keras model's by more than allowed."""


def export_tflite(model: Any, path: Path) -> Path:
    """Convert a Keras model to a LiteRT flatbuffer at `path` (float32, dynamic batch)."""
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="savedmodel-") as tmp:
        model.export(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        path.write_bytes(converter.convert())
    return path


def litert_predict(
    tflite_path: Path, x: npt.NDArray[np.float32], batch_size: int = 64
) -> npt.NDArray[np.float32]:
    """P(defective) for each row of `x` with the LiteRT interpreter (what serving uses)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path), num_threads=os.cpu_count() or 1)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    outputs: list[npt.NDArray[np.float32]] = []
    current = -1
    for start in range(0, len(x), batch_size):
        batch = np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)
        if len(batch) != current:
            interpreter.resize_tensor_input(input_index, list(batch.shape))
            interpreter.allocate_tensors()
            current = len(batch)
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_tensor(output_index), dtype=np.float32))
    return np.concatenate(outputs).reshape(-1, 1)


def parity_max_abs_diff(model: Any, tflite_path: Path, x: npt.NDArray[np.float32]) -> float:
    keras_out = np.asarray(model.predict(x, batch_size=64, verbose=0), dtype=np.float32)
    return float(np.max(np.abs(keras_out.reshape(-1, 1) - litert_predict(tflite_path, x))))


def git_revision(repo: Path = Path()) -> tuple[str, str]:
    """(full revision, version): version is the short revision, + "-dirty" when the code or
    params that shape the model differ from the commit. ("unknown", "unknown") outside git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        full = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src", "params.yaml")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown", "unknown"
    return full, full[:12] + ("-dirty" if dirty else "")


@dataclass(frozen=True)
class ExportResult:
    tflite_path: Path
    card_path: Path
    card: ModelCard
    max_abs_diff: float


def export_bundle(
    model: Any,
    out_dir: Path,
    *,
    name: str,
    metrics: dict[str, float],
    params: dict[str, Any],
    data_hash: str,
    threshold: float,
    parity_images: npt.NDArray[np.float32],
    parity_tolerance: float,
    extra: dict[str, Any] | None = None,
    repo: Path = Path(),
    channels: tuple[str, ...] = GRAY_ONLY,
    test_outcomes: SplitOutcomes | None = None,
) -> ExportResult:
    """Write `out_dir/model.tflite` and `out_dir/model_card.json`; raise ParityError when the
    LiteRT outputs on `parity_images` stray more than `parity_tolerance` from Keras's."""
    missing = [m for m in HEADLINE_METRICS if m not in metrics]
    if missing:
        raise PipelineError(f"metrics lack {', '.join(missing)}: run `dvc repro evaluate` first")
    _, height, width, planes = model.input_shape
    if planes != len(channels):
        raise PipelineError(
            f"the model reads {planes} input channel(s), base.channels names {list(channels)}: "
            "re-run `dvc repro` so prepare, train and export agree"
        )
    tflite_path = export_tflite(model, out_dir / TFLITE_NAME)
    diff = parity_max_abs_diff(model, tflite_path, parity_images)
    if not diff <= parity_tolerance:  # `not <=` also catches NaN
        raise ParityError(
            f"LiteRT and Keras outputs differ by up to {diff:.3g} on {len(parity_images)} "
            f"images, above export.parity_tolerance={parity_tolerance:g}: the conversion "
            "changed the model (unsupported op or quantization?)"
        )
    revision, version = git_revision(repo)
    card = ModelCard(
        name=name,
        version=version,
        git_revision=revision,
        data_hash=data_hash,
        input=ModelInput(
            height=int(height),
            width=int(width),
            channels=len(channels),
            preprocessing=describe(channels),
            channel_names=channels,
        ),
        threshold=threshold,
        labels=CLASS_NAMES,
        metrics={k: float(v) for k, v in metrics.items()},
        params=params,
        exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
        export_parity_max_abs_diff=diff,
        extra={"tflite_bytes": tflite_path.stat().st_size, **(extra or {})},
        test_outcomes=test_outcomes,
    )
    card_path = out_dir / CARD_NAME
    card.save(card_path)
    return ExportResult(tflite_path, card_path, card, diff)


def dataset_hash(data_dir: Path, dvc_file: Path = Path("data.dvc")) -> str:
    """The data's identity for the card: data.dvc's md5 when `data_dir` is what it tracks,
    else the same DVC-style hash computed over `data_dir` (a swapped-in dataset)."""
    from classifier.pipeline.ingest import dir_md5, recorded_hash

    if dvc_file.is_file() and data_dir.resolve() == (dvc_file.parent / "data/raw").resolve():
        return recorded_hash(dvc_file)
    return dir_md5(data_dir)


def read_test_outcomes(path: Path) -> SplitOutcomes:
    """evaluate's per-image outcomes, for the card."""
    try:
        return SplitOutcomes(**read_json(path))
    except (TypeError, ModelCardError) as exc:
        raise PipelineError(
            f"{path} is not evaluate's output ({exc}): run `dvc repro evaluate`"
        ) from exc


def evaluated_threshold(evaluation: dict[str, Any], path: Path) -> float:
    """The operating threshold evaluate's metrics were computed at: the card's threshold."""
    value = evaluation.get("threshold")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PipelineError(
            f"{path} has no numeric 'threshold' (got {value!r}): it is not evaluate's output, "
            "run `dvc repro evaluate`"
        )
    return float(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the trained Keras model (.keras)")
    parser.add_argument("prepared", type=Path, help="prepare's output: test.npz (parity check)")
    parser.add_argument("evaluation", type=Path, help="evaluate's test metrics (.json)")
    parser.add_argument("outcomes", type=Path, help="evaluate's per-image outcomes (.json)")
    parser.add_argument("training", type=Path, help="train's summary (.json): the CPU it ran on")
    parser.add_argument("out", type=Path, help=f"where to write {TFLITE_NAME} and {CARD_NAME}")
    parser.add_argument("metrics", type=Path, help="the parity check's result to write (.json)")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    base, cfg = section(params, "base"), section(params, "export")

    import keras

    from classifier.pipeline.prepare import load_split

    started = time.monotonic()
    model = keras.models.load_model(args.model)
    test = load_split(args.prepared, "test")
    evaluation = read_json(args.evaluation)
    try:
        result = export_bundle(
            model,
            args.out,
            name=str(cfg["model_name"]),
            metrics={k: float(evaluation[k]) for k in HEADLINE_METRICS},
            # What shaped the model (dvc.yaml declares these sections as export's params).
            params={k: params[k] for k in CARD_PARAM_SECTIONS if k in params},
            data_hash=dataset_hash(Path(base["data_dir"])),
            # The operating point evaluate scored the model at, so card and metrics agree.
            threshold=evaluated_threshold(evaluation, args.evaluation),
            parity_images=test["x"],
            parity_tolerance=float(cfg["parity_tolerance"]),
            channels=input_channels(base),
            test_outcomes=read_test_outcomes(args.outcomes),
            extra={
                "per_cell_type": evaluation.get("per_cell_type", {}),
                "test_images": len(test["x"]),
                # Where this model was trained, and whether its kernels were pinned (kernels.py).
                "trained_on": read_json(args.training).get("trained_on", {}),
            },
        )
    except PipelineError as exc:
        print(f"export: ERROR: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    write_json(
        args.metrics,
        {
            "parity_max_abs_diff": result.max_abs_diff,
            "parity_tolerance": float(cfg["parity_tolerance"]),
            "parity_images": len(test["x"]),
            "tflite_bytes": result.tflite_path.stat().st_size,
        },
    )
    print(
        f"export: parity max |diff| {result.max_abs_diff:.2e} on {len(test['x'])} test images, "
        f"{time.monotonic() - started:.0f}s -> {result.tflite_path}, {result.card_path}, "
        f"{args.metrics}"
    )


if __name__ == "__main__":
    main()
