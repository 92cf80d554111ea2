"""Naive baseline: the Keras model, `model.predict()` per request, in the async handler.

This is what a first service usually looks like, and what docs/architecture.md warns about:
`predict()` builds a data pipeline and a step function per call (~tens of ms fixed cost) and
here it also blocks the event loop.
Run: BASELINE_MODEL_DIR=... python -m bench.baselines.keras_predict_server
"""

from __future__ import annotations

import keras
import numpy as np

from bench.baselines.common import Rows, build_app, model_dir, serve
from classifier.model_card import ModelCard


def main() -> None:
    directory = model_dir()
    card = ModelCard.load(directory / "model_card.json")
    model = keras.models.load_model(directory / "model.keras")

    def predict_rows(rows: Rows) -> Rows:
        return model.predict(rows, verbose=0)  # type: ignore[no-any-return]

    predict_rows(np.zeros((1, card.input.height, card.input.width, 1), np.float32))  # warm up
    serve(build_app(card, predict_rows, blocking=True))


if __name__ == "__main__":
    main()
