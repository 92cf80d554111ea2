"""Write a tiny exported model (model.tflite + model_card.json) for the image tests.

    .venv/bin/python -m tests.container.tiny_model build/test-model

Goes through the pipeline's own export code (`classifier.pipeline.export.export_bundle`), so the
image is tested with a file exactly like the one `dvc repro` ships, in seconds instead of a
training run. The weights are random but seeded; the final bias keeps outputs away from the 0.5
threshold so a label comparison between container and host is meaningful.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

# Small enough to export in seconds, large enough that the resize in preprocessing matters.
INPUT_SIZE = 32
SEED = 1234


def write_tiny_model(out_dir: Path) -> Path:
    """Export a seeded, untrained 1-conv CNN to `out_dir`; returns the card's path."""
    import keras

    from classifier.pipeline.export import export_bundle

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input((INPUT_SIZE, INPUT_SIZE, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer="he_normal"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(
                1,
                activation="sigmoid",
                kernel_initializer=keras.initializers.RandomNormal(stddev=4.0, seed=SEED),
                bias_initializer=keras.initializers.Constant(-1.0),
            ),
        ]
    )
    rng = np.random.default_rng(SEED)
    parity = rng.random((8, INPUT_SIZE, INPUT_SIZE, 1), dtype=np.float32)
    result = export_bundle(
        model,
        out_dir,
        name="elpv-tiny-test",
        # Placeholders: this model is never evaluated; the card schema requires the headline.
        metrics={"accuracy": 0.5, "balanced_accuracy": 0.5, "roc_auc": 0.5, "f1": 0.0},
        params={"note": "untrained test model written by tests/container/tiny_model.py"},
        data_hash="0" * 32,
        threshold=0.5,
        parity_images=parity,
        parity_tolerance=1e-5,
        extra={"purpose": "container tests only"},
    )
    return result.card_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder for model.tflite + model_card.json")
    args = parser.parse_args(argv)
    card = write_tiny_model(args.out_dir)
    print(f"tiny model: {args.out_dir / 'model.tflite'} and {card}", file=sys.stderr)


if __name__ == "__main__":
    main()
