"""TensorFlow-runtime baseline: the same Keras model run by TensorFlow as a compiled
`tf.function` (graph mode, no per-call `predict()` overhead), off the event loop in a thread.

A reasonable service that keeps TensorFlow at run time: it isolates what the LiteRT runtime and
the product's serving design add on top.
Run: BASELINE_MODEL_DIR=... python -m bench.baselines.tf_runtime_server
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from bench.baselines.common import Rows, build_app, model_dir, serve
from classifier.model_card import ModelCard


def main() -> None:
    directory = model_dir()
    card = ModelCard.load(directory / "model_card.json")
    model = keras.models.load_model(directory / "model.keras")
    shape = (None, card.input.height, card.input.width, 1)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)], reduce_retracing=True)  # type: ignore[untyped-decorator]
    def infer(x: tf.Tensor) -> tf.Tensor:
        return model(x, training=False)

    def predict_rows(rows: Rows) -> Rows:
        return np.asarray(infer(tf.constant(rows)))

    predict_rows(np.zeros((1, *shape[1:]), np.float32))  # trace + warm up before listening
    serve(build_app(card, predict_rows, blocking=False))


if __name__ == "__main__":
    main()
