"""The training loop: optimizer schedule, members, their data, history and summary."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from classifier.pipeline.common import PipelineError
from classifier.pipeline.model import (
    build_model,
)
from classifier.pipeline.recipe import Recipe
from classifier.pipeline.train import (
    MemberData,
    cross_folds,
    lr_schedule,
    member_data,
    save_history,
    train_members,
    train_model,
    training_summary,
)

Pair = tuple[np.ndarray, np.ndarray]


# Every augmentation off: a test turns on what it looks at.
def same_data(config: Recipe, fit: Pair, val: Pair) -> list[MemberData]:
    """Every member fits `fit` and early-stops on `val` (the default, without cross-fold)."""
    return [MemberData(fit, val)] * config.ensemble


@pytest.mark.parametrize("balance_classes", [False, True])
def test_train_model_fits_soft_targets_and_saves_a_loadable_model(
    tmp_path: Path, balance_classes: bool, tiny_recipe: Callable[..., Recipe]
) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    soft = np.array([0.0, 1 / 3, 2 / 3, 1.0] * 4, np.float32)
    config = tiny_recipe(balance_classes=balance_classes, seed=0)
    model = build_model(config, channels=1)
    history = train_model(model, (x, soft), (x[:8], (soft[:8] > 0.5).astype(np.float32)), config, 0)
    assert {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"} <= set(history)
    assert all(0.0 <= a <= 1.0 for a in history["accuracy"])
    # The saved file must load without this module's custom metric (evaluate, export, bench).
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_lr_schedule_warms_up_then_decays(tiny_recipe: Callable[..., Recipe]) -> None:
    config = tiny_recipe(epochs=4, warmup_epochs=1, seed=0)
    schedule = lr_schedule(config, steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 10, 39)]
    assert rates[0] < rates[1] == pytest.approx(1e-3)
    assert rates[2] < rates[1]


def test_lr_schedule_caps_the_warmup_of_a_one_epoch_run(tiny_recipe: Callable[..., Recipe]) -> None:
    config = tiny_recipe(epochs=1, warmup_epochs=3, seed=0)
    schedule = lr_schedule(config, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(1e-3)  # no warmup: straight to the decay


def test_train_members_seeds_each_member_apart_and_member_one_is_the_single_model(
    tmp_path: Path, tiny_recipe: Callable[..., Recipe]
) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    soft = np.array([0.0, 1 / 3, 2 / 3, 1.0] * 4, np.float32)
    val = (x[:8], (soft[:8] > 0.5).astype(np.float32))
    one = tiny_recipe(seed=5)
    two = tiny_recipe(ensemble=2, seed=5)
    single = train_members(one, same_data(one, (x, soft), val), 0)
    pair = train_members(two, same_data(two, (x, soft), val), 0)
    assert len(pair.histories) == 2
    member1, member2 = (pair.model.get_layer(f"elpv_cnn_member{i}") for i in (1, 2))
    out_single, out1, out2 = (m.predict(x, verbose=0) for m in (single.model, member1, member2))
    np.testing.assert_allclose(out1, out_single, atol=1e-6)  # seed 5: same as one model
    assert not np.allclose(out1, out2, atol=1e-4)  # seed 6: its own weights
    # The saved ensemble is one model (one input, one output) that loads and averages.
    pair.model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), (out1 + out2) / 2, atol=1e-6)
    summary = training_summary(pair, {"x": val[0], "y": val[1]}, two)
    assert summary["members"] == 2
    assert list(summary["per_member"]) == ["member_1", "member_2"]
    assert all(1 <= m["best_epoch"] <= 2 for m in summary["per_member"].values())
    assert summary["parameters"] == 2 * single.model.count_params()
    assert 0.0 <= summary["val_accuracy"] <= 1.0


def split(n: int, offset: float) -> dict[str, Any]:
    """A prepared split of `n` images, each image filled with `offset` + its index / 1000 (so
    images can be told apart), defect probabilities 0, 1/3, 2/3, 1 in turn, two cell types."""
    p = np.resize(np.array([0.0, 1 / 3, 2 / 3, 1.0], np.float32), n)
    x = (offset + np.arange(n, dtype=np.float32) / 1000)[:, None, None, None]
    return {
        "x": np.broadcast_to(x, (n, 4, 4, 1)).copy(),
        "y": (p > 0.5).astype(np.float32),
        "p": p,
        "type": np.resize(np.array(["mono", "mono", "poly", "poly", "poly"]), n),
    }


def id_list(images: np.ndarray) -> list[float]:
    """Which images of `split` these are, in order."""
    return [round(float(v), 4) for v in images[:, 0, 0, 0]]


def ids(images: np.ndarray) -> set[float]:
    return set(id_list(images))


def test_member_data_adds_the_validation_split_only_for_a_refit(
    tiny_recipe: Callable[..., Recipe],
) -> None:
    train, val = split(6, 0.0), split(3, 1.0)
    default = tiny_recipe(ensemble=2, seed=0)
    data = member_data(train, val, default)
    assert len(data) == 2
    for member in data:
        np.testing.assert_array_equal(member.fit[0], train["x"])
        np.testing.assert_array_equal(member.fit[1], train["p"])
        np.testing.assert_array_equal(member.val[0], val["x"])
    refit = tiny_recipe(refit=True, seed=0)
    (only,) = member_data(train, val, refit)
    x, targets = only.fit
    assert len(x) == 9
    np.testing.assert_array_equal(x[6:], val["x"])
    np.testing.assert_array_equal(targets[6:], val["p"])  # soft targets for val images too


@pytest.mark.parametrize("members", [2, 3])
def test_cross_fold_members_fit_every_training_image_and_never_their_own_fold(
    members: int, tiny_recipe: Callable[..., Recipe]
) -> None:
    train, val = split(200, 0.0), split(30, 1.0)
    config = tiny_recipe(ensemble=members, cross_fold=True, seed=7)
    data = member_data(train, val, config)
    assert len(data) == members
    # Member 1 is the default member: prepare's training split, early-stopping on val.
    np.testing.assert_array_equal(data[0].fit[0], train["x"])
    np.testing.assert_array_equal(data[0].val[0], val["x"])
    every_train, every_val = ids(train["x"]), ids(val["x"])
    folds = []
    for member in data[1:]:
        fold, fitted = ids(member.val[0]), ids(member.fit[0])
        assert len(fold) == len(val["x"])  # as large as the validation split
        assert fold <= every_train
        assert not fold & fitted  # never early-stops on what it fits
        assert fitted | fold == every_train | every_val  # fits all the rest, val included
        folds.append(fold)
        # Targets follow their images: soft for fitting, binary for early stopping.
        by_image = dict(zip(id_list(train["x"]), train["p"], strict=True))
        by_image.update(zip(id_list(val["x"]), val["p"], strict=True))
        np.testing.assert_allclose(member.fit[1], [by_image[i] for i in id_list(member.fit[0])])
        np.testing.assert_array_equal(
            member.val[1], [by_image[i] > 0.5 for i in id_list(member.val[0])]
        )
    # Folds are disjoint, and together with member 1 the members fit every training image.
    assert sum(len(f) for f in folds) == len(set().union(*folds))
    fitted_by_some = set().union(*(ids(m.fit[0]) for m in data))
    assert fitted_by_some == every_train | every_val
    # Stratified: each fold holds the training split's share of defective cells, +-1.
    share = train["y"].mean()
    for member in data[1:]:
        assert abs(member.val[1].sum() - share * len(val["x"])) <= 1


def test_cross_folds_are_repeatable_and_refuse_too_many_members() -> None:
    train = split(40, 0.0)
    first, again = cross_folds(train, 2, 8, seed=3), cross_folds(train, 2, 8, seed=3)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(PipelineError, match="fewer members"):
        cross_folds(train, 5, 8, seed=3)  # 5 x 8 = all 40, nothing left to fit


def test_train_members_fits_each_member_on_its_own_data(tiny_recipe: Callable[..., Recipe]) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    soft = np.array([0.0, 1 / 3, 2 / 3, 1.0] * 4, np.float32)
    binary = (soft > 0.5).astype(np.float32)
    config = tiny_recipe(ensemble=2, cross_fold=True, seed=0)
    data = [
        MemberData((x[:12], soft[:12]), (x[12:], binary[12:])),
        MemberData((x[4:], soft[4:]), (x[:4], binary[:4])),
    ]
    trained = train_members(config, data, 0)
    # Member 2 scored its own fold: its reported validation loss is its loss there.
    member2 = trained.model.get_layer("elpv_cnn_member2")
    best = int(np.argmax(trained.histories[1]["val_auc"]))
    loss = member2.evaluate(x[:4], binary[:4], verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(trained.histories[1]["val_loss"][best], rel=1e-4)
    summary = training_summary(trained, {"x": x[12:], "y": binary[12:]}, config)
    assert summary["cross_fold"] is True
    assert summary["val_accuracy"] is None  # member 2 fitted the validation split
    assert summary["per_member"]["member_2"]["val_auc"] is not None
    with pytest.raises(PipelineError, match="1 members' data"):
        train_members(config, data[:1], 0)


def test_a_refit_runs_every_epoch_without_validation_and_reports_no_validation_scores(
    tiny_recipe: Callable[..., Recipe],
) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    soft = np.array([0.0, 1 / 3, 2 / 3, 1.0] * 4, np.float32)
    val = (x[:8], (soft[:8] > 0.5).astype(np.float32))
    config = tiny_recipe(epochs=3, patience=1, refit=True, seed=0)
    trained = train_members(config, same_data(config, (x, soft), val), 0)
    history = trained.histories[0]
    assert len(history["loss"]) == 3  # patience does not apply: no validation to stop on
    assert not any(key.startswith("val_") for key in history)
    summary = training_summary(trained, {"x": val[0], "y": val[1]}, config)
    assert summary["refit"] is True
    assert summary["per_member"]["member_1"] == {
        "best_epoch": 3,
        "val_auc": None,
        "val_accuracy": None,
    }
    assert summary["val_accuracy"] is None
    assert summary["val_auc"] is None


def test_save_history_writes_one_row_per_member_and_epoch(tmp_path: Path) -> None:
    histories = [
        {"loss": [0.9, 0.5], "val_auc": [0.6, 0.7]},
        {"loss": [0.8, 0.4], "val_auc": [0.65, 0.75]},
    ]
    save_history(histories, tmp_path / "h.csv", tmp_path / "h.png")
    rows = (tmp_path / "h.csv").read_text().splitlines()
    assert rows[0] == "member,epoch,loss,val_auc"
    assert rows[1:] == ["1,1,0.9,0.6", "1,2,0.5,0.7", "2,1,0.8,0.65", "2,2,0.4,0.75"]
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_weight_decay_shrinks_the_weights(tiny_recipe: Callable[..., Recipe]) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    y = np.array([0.0, 1.0] * 8, np.float32)

    def kernel_norm(weight_decay: float) -> float:
        config = tiny_recipe(weight_decay=weight_decay, seed=0)
        model = train_members(config, same_data(config, (x, y), (x, y)), 0).model
        return float(np.linalg.norm(model.get_layer("b1_conv0").kernel.numpy()))

    assert kernel_norm(1000.0) < 0.5 * kernel_norm(0.0)


def test_ema_validates_and_keeps_the_averaged_weights(tiny_recipe: Callable[..., Recipe]) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    soft = np.array([0.0, 1 / 3, 2 / 3, 1.0] * 4, np.float32)
    val = (x[:8], (soft[:8] > 0.5).astype(np.float32))

    def fit(ema_momentum: float) -> tuple[keras.Model, dict[str, list[float]]]:
        config = tiny_recipe(epochs=4, patience=4, ema_momentum=ema_momentum)
        trained = train_members(config, same_data(config, (x, soft), val), 0)
        return trained.model, trained.histories[0]

    plain, _ = fit(0.0)
    averaged, history = fit(0.9)
    # The averaged weights are what is kept: same seed and batches, different weights...
    assert not np.allclose(
        averaged.get_layer("b1_conv0").kernel.numpy(), plain.get_layer("b1_conv0").kernel.numpy()
    )
    # ...and they are what validation scored: the kept model's validation loss is the one the
    # history reports for the best epoch (raw weights scored, averaged kept, would differ).
    best = int(np.argmax(history["val_auc"]))
    loss = averaged.evaluate(val[0], val[1], verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(history["val_loss"][best], rel=1e-4)


def test_sam_trains_the_saved_model_in_place(tiny_recipe: Callable[..., Recipe]) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    soft = np.array([0.0, 1 / 3, 2 / 3, 1.0] * 4, np.float32)
    val = (x[:8], (soft[:8] > 0.5).astype(np.float32))

    def fit(sam_rho: float) -> tuple[keras.Model, dict[str, list[float]]]:
        config = tiny_recipe(sam_rho=sam_rho, seed=0)
        trained = train_members(config, same_data(config, (x, soft), val), 0)
        return trained.model, trained.histories[0]

    plain, _ = fit(0.0)
    sharp, history = fit(0.05)
    # a plain functional model is kept (no custom class in the .keras file)...
    assert type(sharp) is type(plain)
    # ...with the weights SAM trained, which differ from plain steps' (same seed and batches)
    assert not np.allclose(
        sharp.get_layer("b1_conv0").kernel.numpy(), plain.get_layer("b1_conv0").kernel.numpy()
    )
    assert {"loss", "accuracy", "auc", "val_auc"} <= set(history)
    assert all(np.isfinite(history["loss"]))
    best = int(np.argmax(history["val_auc"]))
    loss = sharp.evaluate(val[0], val[1], verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(history["val_loss"][best], rel=1e-4)


def test_train_model_with_the_ordinal_head_saves_a_plain_one_output_model(
    tmp_path: Path, tiny_recipe: Callable[..., Recipe]
) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    soft = np.tile(np.array([0.0, 1 / 3, 2 / 3, 1.0], np.float32), 4)
    val = (x[:8], (soft[:8] > 0.5).astype(np.float32))

    def fit(ordinal: bool) -> tuple[keras.Model, dict[str, list[float]]]:
        config = tiny_recipe(ordinal=ordinal, seed=0)
        trained = train_members(config, same_data(config, (x, soft), val), 0)
        return trained.model, trained.histories[0]

    plain, _ = fit(False)
    ordinal, history = fit(True)
    assert {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"} <= set(history)
    assert type(ordinal) is type(plain)
    assert [layer.name for layer in ordinal.layers] == [layer.name for layer in plain.layers]
    model_path = tmp_path / "model.keras"
    ordinal.save(model_path)
    loaded = keras.models.load_model(model_path)  # no custom object needed
    out = loaded.predict(x, verbose=0)
    assert out.shape == (16, 1)
    np.testing.assert_allclose(out, ordinal.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    # the kept epoch's validation AUC is the folded model's: the fold keeps the decision cut
    best = int(np.argmax(history["val_auc"]))
    auc = keras.metrics.AUC()
    auc.update_state(val[1], ordinal.predict(val[0], verbose=0))
    assert float(auc.result()) == pytest.approx(history["val_auc"][best], abs=1e-6)
    assert not np.allclose(out, plain.predict(x, verbose=0))
