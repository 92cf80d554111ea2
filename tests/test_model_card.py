"""The model card schema: round trip, and clear errors for cards that do not follow it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from classifier.model_card import ModelCard, ModelCardError, ModelInput, SplitOutcomes


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


def _with_outcomes(correct: list[bool]) -> ModelCard:
    n = len(correct)
    outcomes = SplitOutcomes.of([f"c{i}.png" for i in range(n)], [0] * n, correct)
    metrics = {**_card().metrics, "accuracy": round(sum(correct) / n, 6)}
    return ModelCard(**{**_card().__dict__, "metrics": metrics, "test_outcomes": outcomes})


def test_split_outcomes_are_a_sorted_fingerprint_and_a_hex_bitmask() -> None:
    # Sorted by path: a (wrong), b, c, d (right), e (wrong) -> bits 01110, padded 0111 0000.
    outcomes = SplitOutcomes.of(
        ["b", "a", "c", "d", "e"], [1, 0, 0, 1, 1], [True, False, True, True, False]
    )
    lines = "a\t0\nb\t1\nc\t0\nd\t1\ne\t1\n"
    assert outcomes.fingerprint == "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    assert (outcomes.images, outcomes.correct) == (5, "70")
    assert outcomes.flags() == (False, True, True, True, False)
    assert outcomes.accuracy == 0.6
    shuffled = SplitOutcomes.of(
        ["e", "d", "c", "b", "a"], [1, 1, 0, 1, 0], [False, True, True, True, False]
    )
    assert shuffled == outcomes


def test_split_outcomes_round_trip_in_the_card(tmp_path: Path) -> None:
    card = _with_outcomes([i % 3 != 0 for i in range(13)])
    path = tmp_path / "card.json"
    card.save(path)
    assert ModelCard.load(path) == card
    assert ModelCard.load(path).test_outcomes == card.test_outcomes


def test_a_card_without_test_outcomes_still_loads(tmp_path: Path) -> None:
    raw = json.loads(_card().to_json())
    del raw["test_outcomes"]  # cards exported before the field
    path = tmp_path / "card.json"
    path.write_text(json.dumps(raw))
    assert ModelCard.load(path).test_outcomes is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"correct": "7"}, "must be 2 lowercase hex digits for 5 images"),
        ({"correct": "7g"}, "must be 2 lowercase hex digits"),
        ({"correct": "74"}, "padding bits"),
        ({"fingerprint": "md5:00"}, "must be 'sha256:'"),
        ({"images": 0}, "images must be >= 1"),
    ],
)
def test_malformed_test_outcomes_are_rejected(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    raw = json.loads(_with_outcomes([False, True, True, True, False]).to_json())
    raw["test_outcomes"].update(change)
    path = tmp_path / "card.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelCardError, match=message):
        ModelCard.load(path)


def test_outcomes_that_disagree_with_the_accuracy_are_rejected(tmp_path: Path) -> None:
    raw = json.loads(_with_outcomes([False, True, True, True, False]).to_json())
    raw["metrics"]["accuracy"] = 0.8
    path = tmp_path / "card.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelCardError, match=r"test_outcomes give accuracy 0\.600000"):
        ModelCard.load(path)
