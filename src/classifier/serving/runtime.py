"""The model runtime: the exported LiteRT model behind an explicit lifecycle.

`load()` reads the model card and the .tflite file, checks they agree, warms the interpreter up
and only then sets `ready`; readiness reports it. A LiteRT interpreter is not thread-safe, so
calls are serialised by a lock, and with micro-batching on only the batcher thread makes them
(the interpreter itself uses `threads` CPU threads inside each call). No TensorFlow here:
`ai_edge_litert` is the whole runtime.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from ai_edge_litert.interpreter import Interpreter

from classifier.imaging import UnknownChannel, check_channels
from classifier.model_card import ModelCard, ModelCardError
from classifier.serving.errors import ModelNotReady
from classifier.serving.settings import CARD_FILE, MODEL_FILE

log = logging.getLogger("classifier.serving")


class ModelLoadError(RuntimeError):
    """The model or its card cannot be loaded: the service must not become ready."""


def check_model_dir(directory: Path) -> None:
    """Raise ModelLoadError naming what is missing from the model folder and how to fix it."""
    fix = (
        "set CLASSIFIER_MODEL_DIR to the folder that holds model.tflite and model_card.json "
        "(the pipeline writes them to models/, the image carries them in /opt/model)"
    )
    if not directory.exists():
        raise ModelLoadError(f"model folder {directory} does not exist: {fix}")
    if not directory.is_dir():
        raise ModelLoadError(f"model folder {directory} is not a folder: {fix}")
    missing = [name for name in (MODEL_FILE, CARD_FILE) if not (directory / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"model folder {directory} has no {' and no '.join(missing)}: {fix}; "
            "the two are written together by `python -m classifier.pipeline.export`"
        )


class LiteRTModel:
    """Loads the exported model and runs batches of preprocessed images through it."""

    def __init__(self, model_dir: Path, *, threads: int, max_batch: int) -> None:
        self.model_dir = model_dir
        self.model_path = model_dir / MODEL_FILE
        self.card_path = model_dir / CARD_FILE
        self.threads = threads
        self.max_batch = max_batch
        self.ready = False
        self.load_seconds: float | None = None
        self._card: ModelCard | None = None
        self._interpreter: Any = None
        self._input_index = 0
        self._output_index = 0
        self._batch_in_place = 0
        # The interpreter is not thread-safe: every use holds this lock. With micro-batching on,
        # only the batcher thread calls the model, so it is never contended there.
        self._lock = threading.Lock()

    @property
    def card(self) -> ModelCard:
        if self._card is None:
            raise ModelNotReady()
        return self._card

    @property
    def input_size(self) -> tuple[int, int]:
        card = self.card
        return (card.input.height, card.input.width)

    @property
    def input_channels(self) -> tuple[str, ...]:
        """The planes `preprocess` must compute for this model (from its card)."""
        return self.card.input.channel_names

    def load(self) -> None:
        """Read card + model, check shapes, warm up at batch 1 and max batch, then set ready."""
        if self.ready:  # idempotent: a second load must not swap the interpreter under traffic
            return
        started = time.perf_counter()
        check_model_dir(self.model_dir)
        try:
            card = ModelCard.load(self.card_path)
        except ModelCardError as exc:
            raise ModelLoadError(str(exc)) from exc
        try:
            interpreter = Interpreter(model_path=str(self.model_path), num_threads=self.threads)
        except ValueError as exc:
            raise ModelLoadError(f"{self.model_path} is not a LiteRT model: {exc}") from exc
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(
                f"expected 1 input and 1 output, the model has {len(inputs)} and {len(outputs)}"
            )
        try:
            check_channels(card.input.channel_names)
        except UnknownChannel as exc:
            raise ModelLoadError(
                f"the model card asks for {exc}: this service is older than the model"
            ) from exc
        expected = (card.input.height, card.input.width, card.input.channels)
        actual = tuple(int(d) for d in inputs[0]["shape"][1:])
        if actual != expected:
            raise ModelLoadError(
                f"model input {actual} does not match the model card's {expected}: "
                "the card was exported with another model"
            )
        if inputs[0]["dtype"] != np.float32:
            raise ModelLoadError(f"model input dtype {inputs[0]['dtype']} is not float32")
        with self._lock:
            self._interpreter = interpreter
            self._batch_in_place = 0  # a new interpreter has nothing allocated yet
            self._input_index = int(inputs[0]["index"])
            self._output_index = int(outputs[0]["index"])
            self._card = card
        self._warm_up(expected)
        self.load_seconds = time.perf_counter() - started
        self.ready = True
        log.info(
            "model loaded",
            extra={
                "model_version": card.version,
                "model_path": str(self.model_path),
                "threads": self.threads,
                "load_seconds": round(self.load_seconds, 3),
            },
        )

    def _warm_up(self, shape: tuple[int, ...]) -> None:
        """Pay the one-time costs before readiness, so no request pays them.

        The first invoke prepares the kernels; allocating at the largest batch plans the arena
        at its largest (arenas only grow, so later batch sizes never reallocate it). Invoking
        at the largest batch would add nothing more: its first run costs what every later one
        does (docs/serving.md, "Start-up"), and that is MAX_BATCH_SIZE images of compute. The
        interpreter is left at batch 1, the size most calls have.
        """
        with self._lock:
            if self.max_batch > 1:
                self._interpreter.resize_tensor_input(self._input_index, [self.max_batch, *shape])
                self._interpreter.allocate_tensors()
                self._batch_in_place = self.max_batch
        self._invoke(np.zeros((1, *shape), dtype=np.float32))

    def _invoke(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        n = batch.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.float32)
        with self._lock:
            if n != self._batch_in_place:
                # Resizing + allocate_tensors costs ~0.1 ms; measured cheaper than keeping one
                # interpreter per batch size (memory) or padding to a fixed batch (compute).
                self._batch_in_place = 0  # if allocation fails, the next call must redo it
                self._interpreter.resize_tensor_input(self._input_index, list(batch.shape))
                self._interpreter.allocate_tensors()
                self._batch_in_place = n
            self._interpreter.set_tensor(self._input_index, batch)
            self._interpreter.invoke()
            out = self._interpreter.get_tensor(self._output_index)
        return np.asarray(out, dtype=np.float32).reshape(n)

    def predict_sync(self, *parts: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """P(defective) for the rows of `parts` (each (N, H, W, C)), in order, as one batch.
        Blocking: call it from a worker thread (the batcher's, or a decode thread with batching
        off), never on the event loop. Joining the parts here, and not on the loop, matters: a
        copy that size releases the GIL, and on the event loop every release is a wait to get
        it back (docs/serving.md, "The event loop is the serial stage")."""
        if not self.ready:
            raise ModelNotReady()
        return self._invoke(parts[0] if len(parts) == 1 else np.concatenate(parts))

    def close(self) -> None:
        """Back to the unloaded state; `load()` may be called again."""
        self.ready = False
        with self._lock:
            self._interpreter = None
            self._batch_in_place = 0
