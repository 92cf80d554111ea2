"""The model wrapper's lifecycle and its refusal of mismatched or missing artefacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from classifier.serving.errors import ModelNotReady
from classifier.serving.runtime import LiteRTModel, ModelLoadError


def _model(directory: Path, max_batch: int = 4) -> LiteRTModel:
    return LiteRTModel(directory, threads=1, max_batch=max_batch)


def test_load_sets_ready_and_predicts_any_batch_size(tiny_model_dir: Path) -> None:
    model = _model(tiny_model_dir)
    assert not model.ready
    with pytest.raises(ModelNotReady):
        model.predict_sync(np.zeros((1, 32, 32, 1), np.float32))
    model.load()
    assert model.load_seconds is not None
    assert model.ready
    rng = np.random.default_rng(0)  # type: ignore[unreachable]  # mypy kept `ready` narrowed
    batch = rng.random((5, 32, 32, 1), dtype=np.float32)
    together = model.predict_sync(batch)
    one_by_one = np.concatenate([model.predict_sync(batch[i : i + 1]) for i in range(5)])
    assert together.shape == (5,)
    np.testing.assert_allclose(together, one_by_one, atol=1e-6)
    np.testing.assert_allclose(model.predict_sync(batch[:2], batch[2:]), together, atol=1e-6)
    model.close()
    assert not model.ready


def test_warm_up_runs_one_image_and_plans_the_largest_batch(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readiness waits for one image of compute, not MAX_BATCH_SIZE of them (start-up time),
    yet the arena is planned at the largest batch, and every batch size still predicts."""
    from ai_edge_litert.interpreter import Interpreter

    invoked: list[int] = []
    allocated: list[int] = []

    def invoke(self: Interpreter) -> None:
        invoked.append(int(self.get_input_details()[0]["shape"][0]))
        original_invoke(self)

    def allocate_tensors(self: Interpreter) -> None:
        allocated.append(int(self.get_input_details()[0]["shape"][0]))
        original_allocate(self)

    original_invoke, original_allocate = Interpreter.invoke, Interpreter.allocate_tensors
    monkeypatch.setattr(Interpreter, "invoke", invoke)
    monkeypatch.setattr(Interpreter, "allocate_tensors", allocate_tensors)
    model = _model(tiny_model_dir, max_batch=16)
    model.load()
    assert invoked == [1]  # one image, and the interpreter is left at batch 1
    assert 16 in allocated
    rng = np.random.default_rng(1)
    batch = rng.random((16, 32, 32, 1), dtype=np.float32)
    together = model.predict_sync(batch)
    one_by_one = np.concatenate([model.predict_sync(batch[i : i + 1]) for i in range(16)])
    np.testing.assert_allclose(together, one_by_one, atol=1e-6)
    model.close()


def test_load_refuses_a_card_that_does_not_match_the_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    shutil.copy(tiny_model_dir / "model.tflite", tmp_path)
    card = json.loads((tiny_model_dir / "model_card.json").read_text())
    card["input"]["height"] = 64
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="does not match the model card"):
        _model(tmp_path).load()


def test_load_refuses_a_card_asking_for_planes_it_cannot_compute(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    shutil.copy(tiny_model_dir / "model.tflite", tmp_path)
    card = json.loads((tiny_model_dir / "model_card.json").read_text())
    card["input"]["channel_names"] = ["infrared"]
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match=r"infrared.*older than the model"):
        _model(tmp_path).load()


def test_load_refuses_a_file_that_is_not_a_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_model_dir / "model_card.json", tmp_path)
    (tmp_path / "model.tflite").write_bytes(b"definitely not a flatbuffer")
    with pytest.raises(ModelLoadError, match="not a LiteRT model"):
        _model(tmp_path).load()


def test_load_names_what_is_missing_from_the_model_folder(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    fix = "set CLASSIFIER_MODEL_DIR to the folder that holds model.tflite and model_card.json"
    with pytest.raises(ModelLoadError, match=rf"{tmp_path / 'nowhere'} does not exist: {fix}"):
        _model(tmp_path / "nowhere").load()
    (tmp_path / "file").write_text("")
    with pytest.raises(ModelLoadError, match="is not a folder"):
        _model(tmp_path / "file").load()
    with pytest.raises(ModelLoadError, match=r"has no model\.tflite and no model_card\.json"):
        _model(tmp_path).load()
    shutil.copy(tiny_model_dir / "model_card.json", tmp_path)
    with pytest.raises(ModelLoadError, match=rf"has no model\.tflite: {fix}"):
        _model(tmp_path).load()
    (tmp_path / "model_card.json").unlink()
    shutil.copy(tiny_model_dir / "model.tflite", tmp_path)
    with pytest.raises(ModelLoadError, match=r"has no model_card\.json: "):
        _model(tmp_path).load()
