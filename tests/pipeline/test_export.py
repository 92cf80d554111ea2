"""Export: LiteRT output matches Keras within the bound, or the stage fails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from classifier.model_card import ModelCard, SplitOutcomes
from classifier.pipeline.common import PipelineError
from classifier.pipeline.export import (
    ExportResult,
    ParityError,
    evaluated_threshold,
    export_bundle,
    litert_predict,
)


@pytest.fixture(scope="module")
def tiny_keras_model(tiny_recipe: Callable[..., Any]) -> object:
    from classifier.pipeline.model import build_model
    from classifier.pipeline.train import make_deterministic

    make_deterministic(0)
    return build_model(tiny_recipe(), channels=1)


METRICS = {"accuracy": 0.9, "balanced_accuracy": 0.9, "roc_auc": 0.95, "f1": 0.85}


def _export(model: object, out: Path, x: np.ndarray, **overrides: Any) -> ExportResult:
    """`export_bundle` with the fixed test arguments; `overrides` replace any of them."""
    arguments: dict[str, Any] = {
        "name": "t",
        "metrics": METRICS,
        "params": {"base": {"image_size": 32}},
        "data_hash": "abc.dir",
        "threshold": 0.5,
        "parity_images": x,
        "parity_tolerance": 1e-4,
    }
    return export_bundle(model, out, **{**arguments, **overrides})


def test_export_parity_is_bounded_and_recorded(tiny_keras_model: object, tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((20, 32, 32, 1)).astype(np.float32)
    result = _export(tiny_keras_model, tmp_path, x)
    assert result.max_abs_diff <= 1e-4
    card = ModelCard.load(result.card_path)
    assert (card.input.height, card.input.width) == (32, 32)
    assert card.export_parity_max_abs_diff == result.max_abs_diff
    assert card.data_hash == "abc.dir"
    assert card.test_outcomes is None  # not given: a card like those before the field
    keras_out = tiny_keras_model.predict(x, verbose=0)  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        litert_predict(result.tflite_path, x, batch_size=7), keras_out, atol=1e-4
    )


def test_export_fails_when_parity_exceeds_the_tolerance(
    tiny_keras_model: object, tmp_path: Path
) -> None:
    x = np.random.default_rng(1).random((4, 32, 32, 1)).astype(np.float32)
    with pytest.raises(ParityError, match="parity_tolerance"):
        # Nothing can be this close: the check must trip.
        _export(tiny_keras_model, tmp_path, x, parity_tolerance=-1.0)
    assert not (tmp_path / "model_card.json").exists()


def test_export_refuses_channel_names_the_model_does_not_read(
    tiny_keras_model: object, tmp_path: Path
) -> None:
    x = np.random.default_rng(2).random((4, 32, 32, 1)).astype(np.float32)
    with pytest.raises(PipelineError, match=r"reads 1 input channel\(s\), base.channels names"):
        _export(tiny_keras_model, tmp_path, x, channels=("gray", "darkest"))
    assert not (tmp_path / "model.tflite").exists()


def test_export_puts_the_test_outcomes_on_the_card(
    tiny_keras_model: object, tmp_path: Path
) -> None:
    x = np.random.default_rng(0).random((4, 32, 32, 1)).astype(np.float32)
    # 9 of 10 right: the card checks the outcomes against metrics' accuracy 0.9.
    outcomes = SplitOutcomes.of([f"c{i}" for i in range(10)], [0] * 10, [i > 0 for i in range(10)])
    result = _export(tiny_keras_model, tmp_path, x, test_outcomes=outcomes)
    assert ModelCard.load(result.card_path).test_outcomes == outcomes


def test_the_card_threshold_is_the_one_evaluate_scored_at() -> None:
    assert evaluated_threshold({"threshold": 0.3, "accuracy": 0.9}, Path("m.json")) == 0.3
    for bad in ({}, {"threshold": "0.3"}, {"threshold": None}):
        with pytest.raises(PipelineError, match=r"m.json has no numeric 'threshold'"):
            evaluated_threshold(bad, Path("m.json"))
