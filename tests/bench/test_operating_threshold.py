"""bench/operating_threshold.py: the table's counts and the rule's pick (the run needs a model)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import bench.operating_threshold as operating_threshold  # the repo root is not on the path
from bench.operating_threshold import (
    against_most_accurate,
    grid_of,
    held_out_member,
    over_split_seeds,
    pick,
    recall_pick,
    threshold_table,
)

from classifier.comparison import GateRule

Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
P = np.array([0.9, 0.6, 0.4, 0.25, 0.45, 0.3, 0.2, 0.1, 0.1, 0.05, 0.05, 0.0])


def test_each_row_counts_cells_strictly_above_the_threshold() -> None:
    rows = {row.threshold: row for row in threshold_table(Y, P, [0.3, 0.5])}
    # 0.3: flagged 0.9 0.6 0.4 0.45 (0.3 is not > 0.3) -> 3 hits, 1 false alarm, 1 missed
    assert (rows[0.3].missed, rows[0.3].false_alarms) == (1, 1)
    assert rows[0.3].precision == pytest.approx(3 / 4)
    assert rows[0.3].recall == pytest.approx(3 / 4)
    assert rows[0.3].balanced_accuracy == pytest.approx((3 / 4 + 7 / 8) / 2)
    assert rows[0.3].accuracy == pytest.approx(10 / 12)
    assert (rows[0.5].missed, rows[0.5].false_alarms, rows[0.5].precision) == (2, 0, 1.0)


def test_the_pick_is_the_best_balanced_accuracy_and_the_higher_threshold_on_a_tie() -> None:
    rows = threshold_table(Y, P, grid_of(0.2, 0.6, 0.05))
    # 0.2 finds all four defective cells at 2 false alarms: balanced (1 + 6/8) / 2 = 0.875,
    # above 0.3's and 0.35's (3/4 + 7/8) / 2 and 0.45's (1/2 + 1) / 2.
    assert pick(rows).threshold == 0.2
    tied = threshold_table(Y, P, [0.3, 0.35])  # the same cells flagged at both: a tie
    assert tied[0].balanced_accuracy == tied[1].balanced_accuracy
    assert pick(tied).threshold == 0.35


GRID = grid_of(0.2, 0.6, 0.05)
RULE = GateRule(min_accuracy=0.85, max_drop_vs_baseline=0.0, confidence=0.95)


def cells(*groups: tuple[int, int, float]) -> tuple[np.ndarray, np.ndarray]:
    """(count, label, P) groups -> y, p."""
    y = np.concatenate([np.full(n, label) for n, label, _ in groups])
    return y, np.concatenate([np.full(n, p) for n, _, p in groups])


def test_going_down_the_grid_stops_at_the_first_threshold_worse_with_confidence() -> None:
    y, p = cells(
        (100, 0, 0.1),
        (100, 1, 0.9),
        (1, 0, 0.47),  # one false alarm from 0.45 down: a loss the test cannot tell from noise
        (30, 0, 0.42),  # 30 more from 0.4 down: worse with confidence
        (30, 1, 0.37),  # caught from 0.35 down, which evens 0.35 out again
    )
    rows = {row.threshold: row for row in against_most_accurate(y, p, GRID, RULE)}
    # 0.5, 0.55 and 0.6 are equally accurate: the higher is the one the others pair against.
    assert [t for t, row in rows.items() if row.most_accurate] == [0.6]
    assert rows[0.45].difference == pytest.approx(-1 / 261)
    assert not rows[0.45].worse
    assert rows[0.4].worse
    assert not rows[0.35].worse  # as accurate as 0.45, but below the first worse threshold
    assert recall_pick(list(rows.values())).threshold == 0.45


def test_the_most_accurate_threshold_is_kept_when_the_next_one_down_is_worse() -> None:
    y, p = cells((100, 0, 0.1), (100, 1, 0.9), (40, 0, 0.57))
    chosen = recall_pick(against_most_accurate(y, p, GRID, RULE))
    assert chosen.threshold == 0.6
    assert chosen.most_accurate


def test_the_rule_honours_the_gates_allowed_drop() -> None:
    y, p = cells((100, 0, 0.1), (100, 1, 0.9), (30, 0, 0.42))
    strict = recall_pick(against_most_accurate(y, p, GRID, RULE))
    lenient = GateRule(min_accuracy=0.85, max_drop_vs_baseline=0.2, confidence=0.95)
    assert (
        strict.threshold,
        recall_pick(against_most_accurate(y, p, GRID, lenient)).threshold,
    ) == (
        0.45,
        0.2,
    )


def kept(
    test_p: list[float], test_y: list[int], val_p: list[float], val_y: list[int]
) -> dict[str, np.ndarray]:
    """One split seed's predictions, as bench.model_quality keeps them."""
    return {
        "test_p": np.array(test_p),
        "test_y": np.array(test_y),
        "val_member1_p": np.array(val_p),
        "val_y": np.array(val_y),
    }


TWO_SEEDS = [
    (1, kept([0.1, 0.9, 0.4, 0.2], [0, 1, 1, 0], [0.3, 0.1], [1, 0])),
    (2, kept([0.45, 0.9, 0.4, 0.1], [0, 1, 1, 0], [0.6, 0.1], [1, 0])),
]


def test_the_threshold_grid_is_scored_over_the_split_seeds() -> None:
    # At 0.5 each seed misses its 0.4 defective cell: 3 of 4. At 0.35 seed 1 gets all 4 and
    # seed 2 still 3 of 4 (it catches the 0.4 cell and raises a false alarm on the 0.45 one).
    lines = over_split_seeds(TWO_SEEDS, 0.5, RULE)
    rows = {line.split(" | ")[0]: line for line in lines if line.startswith("| ")}
    assert rows["| 0.5 (now)"].startswith("| 0.5 (now) | 0.7500 | 0.7500 | 0.7500 | 1.000 | 0.500 ")
    assert rows["| 0.35"].startswith("| 0.35 | 0.8750 | 0.7500 | 0.8750 | 0.833 | 1.000 ")
    # Pooled, 0.2-0.35 are the most accurate (7 of 8); the higher of them, 0.35, is the
    # reference, and the ones below it are as accurate: the lowest, 0.2, is the pick.
    assert rows["| 0.35"].endswith("| most accurate |")
    assert rows["| 0.4"].endswith("| -25.00% (-25.00% to +17.09%) |")
    assert "The rule's pick: 0.2." in lines
    # The validation rule: seed 1's defective validation cell (P 0.3) is caught up to 0.25,
    # the higher of the tied best, which on the test split gets all 4; seed 2's (P 0.6) up to
    # 0.55, where the test split's 0.4 cell is missed.
    assert "1: 0.25 (accuracy 1.0000," in lines[-1]
    assert "2: 0.55 (accuracy 0.7500," in lines[-1]


def test_the_command_judges_kept_predictions_over_split_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: dict[str, str] = {}
    monkeypatch.setattr(operating_threshold, "write_section", written.__setitem__)
    for seed, predictions in TWO_SEEDS:  # two runs of bench.model_quality, a seed each
        (tmp_path / f"run-{seed}").mkdir()
        np.savez(tmp_path / f"run-{seed}" / f"seed-{seed}.npz", **predictions)
    operating_threshold.main(["--kept", str(tmp_path / "run-1"), str(tmp_path / "run-2")])
    text = written["operating-threshold-over-seeds"]
    assert "split seeds 1, 2" in text
    assert "The rule's pick: 0.2." in text


def test_kept_folders_that_hold_nothing_usable_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no seed-S\.npz in it"):
        operating_threshold.main(["--kept", str(tmp_path)])
    np.savez(tmp_path / "seed-3.npz", **TWO_SEEDS[0][1])
    with pytest.raises(SystemExit, match="split seed 3 is in two folders"):
        operating_threshold.main(["--kept", str(tmp_path), str(tmp_path)])
    np.savez(tmp_path / "seed-3.npz", test_p=np.array([0.5]))
    with pytest.raises(SystemExit, match="lacks test_y, val_member1_p, val_y"):
        operating_threshold.main(["--kept", str(tmp_path)])
    (tmp_path / "seed-3.npz").rename(tmp_path / "seed-three.npz")
    with pytest.raises(SystemExit, match=r"expected seed-S\.npz with S a split seed"):
        operating_threshold.main(["--kept", str(tmp_path)])


def test_one_class_or_a_bad_grid_is_refused() -> None:
    with pytest.raises(SystemExit, match="one class only"):
        threshold_table(np.zeros(3), np.array([0.1, 0.2, 0.3]), [0.5])
    with pytest.raises(SystemExit, match="need 0 < START <= STOP < 1"):
        grid_of(0.5, 1.0, 0.1)
    assert grid_of(0.2, 0.3, 0.05) == [0.2, 0.25, 0.3]


def test_the_held_out_member_is_the_first_of_the_averaged_ones() -> None:
    import keras

    from classifier.pipeline.model import average_members

    def member(bias: float, name: str) -> keras.Model:
        inputs = keras.Input((2,))
        dense = keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer="zeros")
        outputs = keras.layers.Lambda(lambda x: x + bias)(dense(inputs))
        return keras.Model(inputs, outputs, name=name)

    first, second = member(0.25, "member_1"), member(0.75, "member_2")
    averaged = average_members([first, second])
    x = np.zeros((1, 2), np.float32)
    assert float(held_out_member(averaged).predict(x, verbose=0)[0, 0]) == pytest.approx(0.25)
    assert float(averaged.predict(x, verbose=0)[0, 0]) == pytest.approx(0.5)
    assert held_out_member(first) is first  # one member: the model itself


def test_the_command_scores_member_1_of_a_saved_model_on_the_validation_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.operating_threshold as tool
    import keras

    from classifier.pipeline.model import average_members

    def member(weight: float, bias: float, name: str) -> keras.Model:
        """P(defective) = sigmoid(weight * the image's mean pixel + bias)."""
        model = keras.Sequential(
            [
                keras.Input((4, 4, 1)),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(1, activation="sigmoid"),
            ],
            name=name,
        )
        model.layers[-1].set_weights([np.array([[weight]]), np.array([bias])])
        return model

    # Member 1 answers these; member 2 ~0.95 for every cell, so the averaged model's pick (0.6)
    # is not member 1's (0.25): the command must score member 1.
    p1 = np.array([0.9, 0.62, 0.42, 0.27, 0.47, 0.32, 0.17, 0.1, 0.1, 0.05, 0.05, 0.02])
    y = np.array([1] * 4 + [0] * 8, dtype=np.float32)
    pixel = (np.log(p1 / (1 - p1)) + 10) / 20  # member 1: sigmoid(20 * pixel - 10) = p1
    x = np.broadcast_to(pixel[:, None, None, None], (12, 4, 4, 1)).astype(np.float32)
    averaged = average_members([member(20.0, -10.0, "member_1"), member(0.0, 3.0, "member_2")])
    averaged.save(tmp_path / "model.keras")
    paths = np.array([f"c{i}.png" for i in range(12)])
    np.savez(tmp_path / "val.npz", x=x, y=y, p=y, type=np.array(["mono"] * 12), path=paths)
    written: list[str] = []
    monkeypatch.setattr(tool, "write_section", lambda name, text: written.append(name + text))
    monkeypatch.setattr(tool, "machine_line", lambda: "test machine")
    tool.main(["--model", str(tmp_path / "model.keras"), "--prepared", str(tmp_path)])
    grid = grid_of(0.2, 0.6, 0.05)
    assert pick(threshold_table(y, p1, grid)).threshold == 0.25
    p_averaged = averaged.predict(x, verbose=0).ravel()
    assert pick(threshold_table(y, p_averaged, grid)).threshold == 0.6
    assert written[0].startswith("operating-threshold")
    assert "The rule's pick: 0.25" in written[0]
    assert "(12 cells, 4 defective)" in written[0]
    assert "--prepared" in written[0]  # the command as given
