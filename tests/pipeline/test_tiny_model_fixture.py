"""The shared `tiny_model_dir` fixture gives a LiteRT model that runs without TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classifier.model_card import ModelCard


def test_tiny_model_dir_runs_with_litert_and_matches_its_card(tiny_model_dir: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    card = ModelCard.load(tiny_model_dir / "model_card.json")
    interpreter = Interpreter(model_path=str(tiny_model_dir / "model.tflite"))
    details = interpreter.get_input_details()[0]
    assert list(details["shape"][1:]) == [card.input.height, card.input.width, 1]
    interpreter.resize_tensor_input(details["index"], [3, card.input.height, card.input.width, 1])
    interpreter.allocate_tensors()
    x = np.random.default_rng(0).random((3, card.input.height, card.input.width, 1))
    interpreter.set_tensor(details["index"], x.astype(np.float32))
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert out.shape == (3, 1)
    assert np.all((out >= 0.0) & (out <= 1.0))
    assert card.export_parity_max_abs_diff <= 1e-4
