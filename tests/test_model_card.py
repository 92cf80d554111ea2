"""The model card schema: round trip, and clear errors for cards that do not follow it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classifier.model_card import ModelCard, ModelCardError, ModelInput


def _card() -> ModelCard:
    return ModelCard(
        name="elpv-classifier",
        version="abc1234",
        git_revision="abc1234" + "0" * 33,
        data_hash="0123456789abcdef0123456789abcdef.dir",
        input=ModelInput(height=64, width=64),
        threshold=0.5,
        labels=("functional", "defective"),
        metrics={"accuracy": 0.9, "balanced_accuracy": 0.88, "roc_auc": 0.95, "f1": 0.85},
        params={"train": {"epochs": 1}},
        exported_at="2026-11-28T00:00:00+00:00",
        export_parity_max_abs_diff=1e-6,
    )


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    _card().save(path)
    assert ModelCard.load(path) == _card()


def test_load_missing_file_says_where(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match="not found"):
        ModelCard.load(tmp_path / "nope.json")


def test_load_rejects_non_json(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    path.write_text("{not json")
    with pytest.raises(ModelCardError, match="not JSON"):
        ModelCard.load(path)


def test_load_rejects_missing_headline_metric(tmp_path: Path) -> None:
    raw = json.loads(_card().to_json())
    del raw["metrics"]["roc_auc"]
    path = tmp_path / "card.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelCardError, match="roc_auc"):
        ModelCard.load(path)


def test_load_rejects_other_schema_version(tmp_path: Path) -> None:
    raw = json.loads(_card().to_json())
    raw["schema_version"] = 99
    path = tmp_path / "card.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelCardError, match="schema_version"):
        ModelCard.load(path)


def test_load_rejects_missing_field(tmp_path: Path) -> None:
    raw = json.loads(_card().to_json())
    del raw["data_hash"]
    path = tmp_path / "card.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelCardError, match="data_hash"):
        ModelCard.load(path)


def test_a_card_without_channel_names_reads_gray_alone(tmp_path: Path) -> None:
    raw = json.loads(_card().to_json())
    del raw["input"]["channel_names"]  # cards exported before the field
    path = tmp_path / "card.json"
    path.write_text(json.dumps(raw))
    assert ModelCard.load(path).input.channel_names == ("gray",)


def test_channel_names_round_trip_and_must_match_the_count(tmp_path: Path) -> None:
    two = ModelInput(height=64, width=64, channels=2, channel_names=("gray", "darkest"))
    card = ModelCard(**{**_card().__dict__, "input": two})
    path = tmp_path / "card.json"
    card.save(path)
    assert ModelCard.load(path).input == two
    raw = json.loads(card.to_json())
    raw["input"]["channels"] = 1
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelCardError, match=r"channels is 1 but input\.channel_names lists 2"):
        ModelCard.load(path)
