"""The model every peer server wraps: our exported LiteRT model with our preprocessing.

Imported inside the peers' own venvs (.tools/peers/<name>), which hold only the peer package,
`ai-edge-litert`, NumPy and Pillow: so this module needs nothing else. Decoding is Pillow's
`Image.open` and preprocessing is `classifier.imaging.preprocess`, the function our service and
training use (the service adds its format allow-list and pixel limit, which cost microseconds).

Settings from the environment, set by bench/peers/__main__.py:
    PEER_MODEL_DIR   directory with model.tflite and model_card.json
    PEER_THREADS     interpreter threads (the service's default, so every server runs the same)
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from classifier.imaging import preprocess
from classifier.model_card import ModelCard

Rows = npt.NDArray[np.float32]
MODEL_NAME = "elpv"  # the name under which KServe and MLServer route to the model


class LiteRTClassifier:
    """Load, warm up, decode + preprocess, predict: what each peer's model class calls."""

    def __init__(self, model_dir: Path | None = None, threads: int | None = None) -> None:
        directory = model_dir or Path(os.environ["PEER_MODEL_DIR"])
        self.card = ModelCard.load(directory / "model_card.json")
        self.size = (self.card.input.height, self.card.input.width)
        self.channels = self.card.input.channel_names
        self.threads = threads or int(os.environ.get("PEER_THREADS", "1"))
        self._interpreter: Any = Interpreter(
            model_path=str(directory / "model.tflite"), num_threads=self.threads
        )
        self._input = int(self._interpreter.get_input_details()[0]["index"])
        self._output = int(self._interpreter.get_output_details()[0]["index"])
        self._batch = 0
        # A LiteRT interpreter is not thread-safe; some peers call models from a thread pool.
        self._lock = threading.Lock()
        self.predict(np.zeros((1, *self.size, len(self.channels)), np.float32))  # warm up

    def rows(self, data: bytes) -> Rows:
        """One encoded image -> its (1, H, W, C) model input row."""
        image = Image.open(io.BytesIO(data))
        return preprocess(image, self.size, self.channels)[np.newaxis]

    def predict(self, rows: Rows) -> list[float]:
        """P(defective) for each row of `rows` (N, H, W, C)."""
        with self._lock:
            n = rows.shape[0]
            if n != self._batch:
                self._interpreter.resize_tensor_input(self._input, list(rows.shape))
                self._interpreter.allocate_tensors()
                self._batch = n
            self._interpreter.set_tensor(self._input, rows)
            self._interpreter.invoke()
            out = self._interpreter.get_tensor(self._output)
        return [float(v) for v in np.asarray(out).reshape(n)]

    def predict_images(self, images: list[bytes]) -> list[float]:
        return self.predict(np.concatenate([self.rows(data) for data in images]))

    def label(self, probability: float) -> str:
        return self.card.labels[int(probability > self.card.threshold)]
