"""The model builder, augmentation, class weights, soft targets and the training loop."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from classifier.pipeline.common import PipelineError
from classifier.pipeline.train import (
    Augmentation,
    AugmentedBatches,
    DecisionAccuracy,
    DecisionAUC,
    MemberData,
    OrdinalCrossentropy,
    OrdinalHead,
    SharpnessAware,
    ThresholdedAccuracy,
    TrainConfig,
    augment_batch,
    average_members,
    batch_dataset,
    build_model,
    class_weights,
    cross_folds,
    lr_schedule,
    make_deterministic,
    member_data,
    mix_batch,
    ordinal_levels,
    save_history,
    train_members,
    train_model,
    training_summary,
    training_targets,
)

TRAIN_PARAMS: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "filters": [4, 8],
    "dropout": 0.0,
    "patience": 2,
}
Pair = tuple[np.ndarray, np.ndarray]


def same_data(config: TrainConfig, fit: Pair, val: Pair) -> list[MemberData]:
    """Every member fits `fit` and early-stops on `val` (the default, without cross-fold)."""
    return [MemberData(fit, val)] * config.ensemble


@pytest.mark.parametrize("size", [32, 48])
def test_build_model_maps_images_to_one_probability(size: int) -> None:
    model = build_model((size, size), filters=(4, 8), dropout=0.0)
    out = model.predict(np.zeros((2, size, size, 1), np.float32), verbose=0)
    assert out.shape == (2, 1)
    assert np.all((out > 0.0) & (out < 1.0))


def test_augment_batch_only_permutes_pixels_without_jitter() -> None:
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    out = augment_batch(x, Augmentation(brightness=0.0, contrast=0.0), np.random.default_rng(1))
    assert out.shape == x.shape
    assert not np.array_equal(out, x)  # 16 images: some got flipped or rotated
    # Flips and 90-degree rotations move pixels, never change them.
    np.testing.assert_array_equal(np.sort(out.reshape(16, -1)), np.sort(x.reshape(16, -1)))


def test_augment_batch_is_repeatable_and_stays_in_range() -> None:
    x = np.random.default_rng(0).random((8, 8, 8, 1)).astype(np.float32)
    aug = Augmentation(brightness=0.5, contrast=0.5)
    a = augment_batch(x, aug, np.random.default_rng(3))
    b = augment_batch(x, aug, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0.0
    assert a.max() <= 1.0


def _dot(size: int, row: int, col: int) -> np.ndarray:
    img = np.zeros((1, size, size, 1), np.float32)
    img[0, row, col, 0] = 1.0
    return img


def test_geometric_jitter_moves_pixels_by_at_most_its_bounds() -> None:
    aug = Augmentation(flip=False, rot90=False, brightness=0.0, contrast=0.0, shift=0.1)
    x = _dot(41, 20, 20)  # 0.1 of 41 px: up to 4.1 px either way
    moved = []
    for seed in range(20):
        out = augment_batch(x, aug, np.random.default_rng(seed))[0, :, :, 0]
        row, col = np.unravel_index(np.argmax(out), out.shape)
        assert abs(row - 20) <= 5
        assert abs(col - 20) <= 5
        moved.append((row, col) != (20, 20))
    assert any(moved)


def test_geometric_jitter_rotates_about_the_centre() -> None:
    aug = Augmentation(flip=False, rot90=False, brightness=0.0, contrast=0.0, rotate=30.0)
    x = _dot(41, 20, 35)  # 15 px right of the centre
    for seed in range(10):
        out = augment_batch(x, aug, np.random.default_rng(seed))[0, :, :, 0]
        row, col = np.unravel_index(np.argmax(out), out.shape)
        radius = np.hypot(row - 20, col - 20)
        assert 13.5 <= radius <= 16.5  # a rotation keeps the distance to the centre
        assert abs(np.degrees(np.arctan2(row - 20, col - 20))) <= 33.0


def test_geometric_jitter_off_is_the_identity_and_on_stays_in_range() -> None:
    x = np.random.default_rng(0).random((4, 16, 16, 1)).astype(np.float32)
    off = Augmentation(flip=False, rot90=False, brightness=0.0, contrast=0.0)
    np.testing.assert_array_equal(augment_batch(x, off, np.random.default_rng(1)), x)
    on = Augmentation(
        flip=False, rot90=False, brightness=0.0, contrast=0.0, shift=0.1, rotate=5.0, scale=0.1
    )
    out = augment_batch(x, on, np.random.default_rng(1))
    assert out.shape == x.shape
    assert out.dtype == np.float32
    assert out.min() >= 0.0
    assert out.max() <= 1.0
    assert not np.allclose(out, x)


def test_mixup_blends_each_image_with_a_partner_and_its_target_and_weight_alike() -> None:
    n = 64
    # Image i is the constant i / n, so a mixed image's value says which share it got.
    x = np.broadcast_to((np.arange(n) / n).reshape(n, 1, 1, 1), (n, 4, 4, 1)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.float32)
    weights = np.linspace(1.0, 2.0, n, dtype=np.float32)
    mixed_x, mixed_y, mixed_w = mix_batch(x, y, weights, 0.4, np.random.default_rng(5))
    assert mixed_x.shape == x.shape
    assert mixed_x.dtype == mixed_y.dtype == mixed_w.dtype == np.float32
    assert not np.allclose(mixed_x, x)
    # The same share and partner, per image, for pixels, target and weight.
    partner = np.random.default_rng(5)
    share = partner.beta(0.4, 0.4, size=n).astype(np.float32)
    share = np.maximum(share, 1.0 - share)
    j = partner.permutation(n)
    np.testing.assert_allclose(
        mixed_x[:, 0, 0, 0], share * x[:, 0, 0, 0] + (1 - share) * x[j, 0, 0, 0], atol=1e-6
    )
    np.testing.assert_allclose(mixed_y, share * y + (1 - share) * y[j], atol=1e-6)
    np.testing.assert_allclose(mixed_w, share * weights + (1 - share) * weights[j], atol=1e-6)
    assert share.min() >= 0.5  # every image stays mostly itself
    assert mixed_y.min() >= 0.0
    assert mixed_y.max() <= 1.0
    assert np.all(mixed_x == mixed_x[:, :1, :1, :])  # a blend of constants is constant


def test_batches_mix_only_when_mixup_is_on() -> None:
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    y = (np.arange(16) % 2).astype(np.float32)
    weights = np.ones(16, np.float32)
    plain = Augmentation(flip=False, rot90=False, brightness=0.0, contrast=0.0)
    off = AugmentedBatches(x, y, weights, TrainConfig(batch_size=16, augmentation=plain))
    _, y_off, _ = off[0]
    assert set(np.unique(y_off)) == {0.0, 1.0}  # targets untouched
    mixed = dataclasses.replace(plain, mixup=0.4)
    on = AugmentedBatches(x, y, weights, TrainConfig(batch_size=16, augmentation=mixed))
    x_on, y_on, _ = on[0]
    assert np.any((y_on > 0.0) & (y_on < 1.0))  # some targets blended
    again = AugmentedBatches(x, y, weights, TrainConfig(batch_size=16, augmentation=mixed))
    np.testing.assert_array_equal(x_on, again[0][0])  # seeded: the same batch every run


def test_class_weights_make_both_classes_count_equally() -> None:
    y = np.array([1, 0, 0, 0], dtype=np.float32)
    weights = class_weights(y)
    assert weights[1] * 1 == pytest.approx(weights[0] * 3)


def test_class_weights_reject_a_single_class() -> None:
    with pytest.raises(PipelineError, match="only one class"):
        class_weights(np.zeros(5, dtype=np.float32))


def test_build_model_uses_the_given_batchnorm_momentum() -> None:
    model = build_model((32, 32), filters=(4, 8), convs_per_block=2, bn_momentum=0.9)
    momenta = {
        layer.momentum
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert momenta == {0.9}


def test_avgmax_pooling_feeds_the_head_both_average_and_max_features() -> None:
    avg = build_model((32, 32), filters=(4, 8), dropout=0.0, pooling="avg")
    both = build_model((32, 32), filters=(4, 8), dropout=0.0, pooling="avgmax")
    assert both.get_layer("gmp") is not None
    # The head reads twice the features: average and max of the last block.
    assert both.get_layer("p_defective").kernel.shape == (2 * 8, 1)
    assert avg.get_layer("p_defective").kernel.shape == (8, 1)
    out = both.predict(np.zeros((3, 32, 32, 1), np.float32), verbose=0)
    assert out.shape == (3, 1)


def test_build_model_rejects_an_unknown_pooling() -> None:
    with pytest.raises(PipelineError, match="pooling must be one of"):
        build_model((32, 32), filters=(4,), pooling="sum")


def test_training_targets_are_the_graded_probabilities_when_soft() -> None:
    split = {
        "y": np.array([0, 0, 1, 1], np.float32),
        "p": np.array([0, 1 / 3, 2 / 3, 1], np.float32),
    }
    np.testing.assert_array_equal(training_targets(split, soft=True), split["p"])
    np.testing.assert_array_equal(training_targets(split, soft=False), split["y"])


def test_training_targets_reject_a_split_without_probabilities() -> None:
    with pytest.raises(PipelineError, match="dvc repro prepare"):
        training_targets({"y": np.zeros(3, np.float32)}, soft=True)


def test_training_targets_reject_probabilities_outside_zero_one() -> None:
    split = {"y": np.zeros(2, np.float32), "p": np.array([0.0, 1.5], np.float32)}
    with pytest.raises(PipelineError, match=r"\[0, 1\]"):
        training_targets(split, soft=True)


def test_thresholded_accuracy_counts_soft_targets_by_their_side_of_one_half() -> None:
    metric = ThresholdedAccuracy()
    # Targets 1/3 and 2/3 are "functional" and "defective"; the predictions agree with both.
    metric.update_state(np.array([[1 / 3], [2 / 3]]), np.array([[0.2], [0.9]]))
    assert float(metric.result()) == pytest.approx(1.0)
    plain = keras.metrics.BinaryAccuracy()
    plain.update_state(np.array([[1 / 3], [2 / 3]]), np.array([[0.2], [0.9]]))
    assert float(plain.result()) == pytest.approx(0.0)  # why the thresholded one exists


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("bn_momentum", 1.0, "bn_momentum"),
        ("warmup_epochs", -1, "warmup_epochs"),
        ("pooling", "median", "train.pooling must be one of avg, avgmax"),
        ("ensemble", 0, "train.ensemble must be >= 1"),
        ("stem_stride", 3, "train.stem_stride must be 1 or 2"),
        ("weight_decay", -0.1, "train.weight_decay must be >= 0"),
        ("ema_momentum", 1.0, "train.ema_momentum must be in"),
        ("ema_momentum", -0.5, "train.ema_momentum must be in"),
        ("sam_rho", -0.05, "train.sam_rho is the radius"),
        ("augment", {"shift": 0.6}, "shift and scale must be in"),
        ("augment", {"rotate": -1}, "rotate in"),
        ("augment", {"scale": 0.5}, "shift and scale must be in"),
        ("augment", {"mixup": -0.2}, "train.augment.mixup is the Beta"),
        ("soft_targets", False, "train.ordinal fits the expert levels"),
    ],
)
def test_train_config_rejects_out_of_range_values(key: str, value: Any, message: str) -> None:
    params = {**TRAIN_PARAMS, key: value, "ordinal": key == "soft_targets"}
    with pytest.raises(PipelineError, match=message):
        TrainConfig.from_params(params, seed=0)


def test_ordinal_head_refuses_mixup() -> None:
    params = {**TRAIN_PARAMS, "ordinal": True, "augment": {"mixup": 0.2}}
    with pytest.raises(PipelineError, match="a blend of two levels is no level"):
        TrainConfig.from_params(params, seed=0)


def test_train_config_defaults_to_the_soft_target_recipe() -> None:
    config = TrainConfig.from_params(TRAIN_PARAMS, seed=0)
    assert config.soft_targets
    assert not config.balance_classes
    assert config.bn_momentum == pytest.approx(0.9)


@pytest.mark.parametrize("balance_classes", [False, True])
def test_train_model_fits_soft_targets_and_saves_a_loadable_model(
    tmp_path: Path, balance_classes: bool
) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    soft = np.array([0.0, 1 / 3, 2 / 3, 1.0] * 4, np.float32)
    config = TrainConfig.from_params({**TRAIN_PARAMS, "balance_classes": balance_classes}, seed=0)
    model = build_model((32, 32), config.filters, config.dropout, 1, config.bn_momentum)
    history = train_model(model, (x, soft), (x[:8], (soft[:8] > 0.5).astype(np.float32)), config, 0)
    assert {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"} <= set(history)
    assert all(0.0 <= a <= 1.0 for a in history["accuracy"])
    # The saved file must load without this module's custom metric (evaluate, export, bench).
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_lr_schedule_warms_up_then_decays() -> None:
    config = TrainConfig.from_params({**TRAIN_PARAMS, "epochs": 4, "warmup_epochs": 1}, seed=0)
    schedule = lr_schedule(config, steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 10, 39)]
    assert rates[0] < rates[1] == pytest.approx(1e-3)
    assert rates[2] < rates[1]


def test_lr_schedule_caps_the_warmup_of_a_one_epoch_run() -> None:
    config = TrainConfig.from_params({**TRAIN_PARAMS, "epochs": 1, "warmup_epochs": 3}, seed=0)
    schedule = lr_schedule(config, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(1e-3)  # no warmup: straight to the decay


def test_average_members_outputs_the_mean_of_the_members() -> None:
    members = [build_model((32, 32), filters=(4,), dropout=0.0, name=f"m{i}") for i in range(3)]
    for i, member in enumerate(members):  # distinct heads, so the members disagree
        kernel, bias = member.get_layer("p_defective").get_weights()
        member.get_layer("p_defective").set_weights([kernel + i, bias - i])
    x = np.random.default_rng(0).random((5, 32, 32, 1)).astype(np.float32)
    each = np.stack([m.predict(x, verbose=0) for m in members])
    assert np.ptp(each, axis=0).max() > 0.01
    ensemble = average_members(members)
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), each.mean(axis=0), atol=1e-6)
    assert average_members(members[:1]) is members[0]


def test_train_members_seeds_each_member_apart_and_member_one_is_the_single_model(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    soft = np.array([0.0, 1 / 3, 2 / 3, 1.0] * 4, np.float32)
    val = (x[:8], (soft[:8] > 0.5).astype(np.float32))
    one = TrainConfig.from_params(TRAIN_PARAMS, seed=5)
    two = TrainConfig.from_params({**TRAIN_PARAMS, "ensemble": 2}, seed=5)
    single = train_members(one, 32, same_data(one, (x, soft), val), 0)
    pair = train_members(two, 32, same_data(two, (x, soft), val), 0)
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


def test_member_data_adds_the_validation_split_only_for_a_refit() -> None:
    train, val = split(6, 0.0), split(3, 1.0)
    default = TrainConfig.from_params({**TRAIN_PARAMS, "ensemble": 2}, seed=0)
    data = member_data(train, val, default)
    assert len(data) == 2
    for member in data:
        np.testing.assert_array_equal(member.fit[0], train["x"])
        np.testing.assert_array_equal(member.fit[1], train["p"])
        np.testing.assert_array_equal(member.val[0], val["x"])
    refit = TrainConfig.from_params({**TRAIN_PARAMS, "refit": True}, seed=0)
    (only,) = member_data(train, val, refit)
    x, targets = only.fit
    assert len(x) == 9
    np.testing.assert_array_equal(x[6:], val["x"])
    np.testing.assert_array_equal(targets[6:], val["p"])  # soft targets for val images too


@pytest.mark.parametrize("members", [2, 3])
def test_cross_fold_members_fit_every_training_image_and_never_their_own_fold(
    members: int,
) -> None:
    train, val = split(200, 0.0), split(30, 1.0)
    config = TrainConfig.from_params({**TRAIN_PARAMS, "ensemble": members, "cross_fold": True}, 7)
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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"ensemble": 1}, "ensemble >= 2"), ({"ensemble": 2, "refit": True}, "refit: false")],
)
def test_cross_fold_needs_several_members_and_no_refit(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(PipelineError, match=message):
        TrainConfig.from_params({**TRAIN_PARAMS, **overrides, "cross_fold": True}, seed=0)


def test_train_members_fits_each_member_on_its_own_data() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    soft = np.array([0.0, 1 / 3, 2 / 3, 1.0] * 4, np.float32)
    binary = (soft > 0.5).astype(np.float32)
    config = TrainConfig.from_params({**TRAIN_PARAMS, "ensemble": 2, "cross_fold": True}, 0)
    data = [
        MemberData((x[:12], soft[:12]), (x[12:], binary[12:])),
        MemberData((x[4:], soft[4:]), (x[:4], binary[:4])),
    ]
    trained = train_members(config, 32, data, 0)
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
        train_members(config, 32, data[:1], 0)


def test_a_refit_runs_every_epoch_without_validation_and_reports_no_validation_scores() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    soft = np.array([0.0, 1 / 3, 2 / 3, 1.0] * 4, np.float32)
    val = (x[:8], (soft[:8] > 0.5).astype(np.float32))
    config = TrainConfig.from_params({**TRAIN_PARAMS, "epochs": 3, "patience": 1, "refit": True}, 0)
    trained = train_members(config, 32, same_data(config, (x, soft), val), 0)
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


def test_a_strided_stem_halves_the_first_feature_map_and_nothing_else() -> None:
    plain = build_model((64, 64), filters=(4, 8), dropout=0.0)
    strided = build_model((64, 64), filters=(4, 8), dropout=0.0, stem_stride=2)
    assert plain.get_layer("b0_conv0").output.shape[1:3] == (64, 64)
    assert strided.get_layer("b0_conv0").output.shape[1:3] == (32, 32)
    assert strided.count_params() == plain.count_params()
    assert strided.predict(np.zeros((2, 64, 64, 1), np.float32), verbose=0).shape == (2, 1)
    with pytest.raises(PipelineError, match="stem_stride must be 1 or 2"):
        build_model((64, 64), filters=(4,), stem_stride=4)


def test_weight_decay_shrinks_the_weights() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    y = np.array([0.0, 1.0] * 8, np.float32)

    def kernel_norm(weight_decay: float) -> float:
        config = TrainConfig.from_params({**TRAIN_PARAMS, "weight_decay": weight_decay}, seed=0)
        model = train_members(config, 32, same_data(config, (x, y), (x, y)), 0).model
        return float(np.linalg.norm(model.get_layer("b1_conv0").kernel.numpy()))

    assert kernel_norm(1000.0) < 0.5 * kernel_norm(0.0)


def test_ema_validates_and_keeps_the_averaged_weights() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    soft = np.array([0.0, 1 / 3, 2 / 3, 1.0] * 4, np.float32)
    val = (x[:8], (soft[:8] > 0.5).astype(np.float32))

    def fit(ema_momentum: float) -> tuple[keras.Model, dict[str, list[float]]]:
        params = {**TRAIN_PARAMS, "epochs": 4, "patience": 4, "ema_momentum": ema_momentum}
        config = TrainConfig.from_params(params, seed=0)
        trained = train_members(config, 32, same_data(config, (x, soft), val), 0)
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


def test_sharpness_aware_step_takes_the_gradient_at_the_worst_nearby_weights() -> None:
    # One SGD step on a linear model, by hand: climb rho along the normalised gradient, take the
    # gradient there, apply it at the original weights.
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = rng.normal(size=(8, 1)).astype(np.float32)
    w0 = rng.normal(size=(3, 1)).astype(np.float32)
    rho, lr = 0.5, 0.1

    def gradient(w: np.ndarray) -> np.ndarray:  # of the mean squared error
        return np.asarray(2.0 * x.T @ (x @ w - y) / len(x), np.float32)

    g = gradient(w0)
    expected = w0 - lr * gradient(w0 + rho * g / np.linalg.norm(g))
    plain_step = w0 - lr * g

    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(1, use_bias=False, kernel_initializer=tf.constant_initializer(w0))(
        inputs
    )
    model = SharpnessAware(inputs, outputs, rho=rho)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    kept = model.layers[-1].kernel.numpy()
    np.testing.assert_allclose(kept, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(kept, plain_step, atol=1e-3)  # the test tells SAM from plain SGD
    # the reported loss is the one at the weights before the step
    assert history.history["loss"][0] == pytest.approx(float(np.mean((x @ w0 - y) ** 2)), rel=1e-5)


def test_sam_trains_the_saved_model_in_place() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    soft = np.array([0.0, 1 / 3, 2 / 3, 1.0] * 4, np.float32)
    val = (x[:8], (soft[:8] > 0.5).astype(np.float32))

    def fit(sam_rho: float) -> tuple[keras.Model, dict[str, list[float]]]:
        config = TrainConfig.from_params({**TRAIN_PARAMS, "sam_rho": sam_rho}, seed=0)
        trained = train_members(config, 32, same_data(config, (x, soft), val), 0)
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


def test_the_batch_dataset_feeds_fit_what_the_keras_py_dataset_fed_it() -> None:
    """Same batches, same order, epoch after epoch: the same weights to the bit as fitting the
    PyDataset itself, which is what the pipeline did before it built its own feed."""
    rng = np.random.default_rng(0)
    x = rng.random((40, 16, 16, 1)).astype(np.float32)
    y = rng.choice([0.0, 1 / 3, 2 / 3, 1.0], size=40).astype(np.float32)
    config = TrainConfig.from_params(
        {**TRAIN_PARAMS, "augment": {"brightness": 0.1, "contrast": 0.1}}, seed=3
    )
    weights = []
    for feed, shuffle in ((lambda b: b, True), (batch_dataset, False)):
        make_deterministic(3)
        model = build_model((16, 16), filters=(4,), dropout=0.0)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
        batches = AugmentedBatches(x, y, np.ones(40, np.float32), config)
        model.fit(
            feed(batches), epochs=3, verbose=0, shuffle=shuffle, validation_data=(x[:8], y[:8])
        )
        weights.append(model.get_weights())
    assert len(weights[0]) == len(weights[1])
    for before, after in zip(*weights, strict=True):
        np.testing.assert_array_equal(before, after)


def test_the_batch_dataset_runs_without_tf_data_autotuning() -> None:
    x = np.zeros((10, 8, 8, 1), np.float32)
    config = TrainConfig.from_params(TRAIN_PARAMS, seed=0)
    dataset = batch_dataset(
        AugmentedBatches(x, np.zeros(10, np.float32), np.ones(10, np.float32), config)
    )
    assert dataset.options().autotune.enabled is False
    assert sorted(len(b[0]) for b in dataset.as_numpy_iterator()) == [2, 8]


ELPV_LEVELS = np.array([0.0, 1 / 3, 2 / 3, 1.0], np.float32)


def test_ordinal_levels_are_the_graded_probabilities_and_the_decision_cut_is_above_half() -> None:
    levels, decision = ordinal_levels(np.repeat(ELPV_LEVELS, 3))
    np.testing.assert_allclose(levels, ELPV_LEVELS)
    assert decision == 1  # cuts: >= 1/3, >= 2/3 (p > 0.5), >= 1
    _, binary_decision = ordinal_levels(np.array([0.0, 1.0, 1.0], np.float32))
    assert binary_decision == 0


@pytest.mark.parametrize(
    "targets",
    [np.linspace(0, 1, 20, dtype=np.float32), np.array([0.0, 0.25, 0.5], np.float32)],
    ids=["continuous", "nothing-above-half"],
)
def test_ordinal_levels_reject_targets_without_a_few_levels_on_both_sides(
    targets: np.ndarray,
) -> None:
    with pytest.raises(PipelineError, match=r"train\.ordinal needs"):
        ordinal_levels(targets)


def test_ordinal_crossentropy_scores_each_cut_against_its_hard_target() -> None:
    loss = OrdinalCrossentropy(ELPV_LEVELS.tolist())
    y_pred = np.array([[0.9, 0.6, 0.2], [0.7, 0.4, 0.1]], np.float32)
    p = np.array([2 / 3, 0.0], np.float32)  # cuts reached: >= 1/3 and >= 2/3; none
    targets = np.array([[1, 1, 0], [0, 0, 0]], np.float32)
    bce = -(targets * np.log(y_pred) + (1 - targets) * np.log(1 - y_pred)).mean(axis=1)
    assert float(loss(p, y_pred)) == pytest.approx(float(bce.mean()), rel=1e-5)


def test_decision_metrics_read_only_the_decision_column() -> None:
    y_true = np.array([[1.0], [2 / 3], [1 / 3], [0.0]], np.float32)
    # column 1 ranks and thresholds perfectly; columns 0 and 2 are the reverse
    y_pred = np.array(
        [[0.1, 0.9, 0.1], [0.2, 0.8, 0.2], [0.8, 0.3, 0.8], [0.9, 0.1, 0.9]], np.float32
    )
    accuracy, auc = DecisionAccuracy(1), DecisionAUC(1)
    accuracy.update_state(y_true, y_pred)
    auc.update_state(y_true, y_pred)
    assert float(accuracy.result()) == pytest.approx(1.0)
    assert float(auc.result()) == pytest.approx(1.0)
    wrong = DecisionAccuracy(0)
    wrong.update_state(y_true, y_pred)
    assert float(wrong.result()) == pytest.approx(0.0)


def test_ordinal_head_folds_its_decision_cut_into_the_plain_sigmoid_output() -> None:
    model = build_model((32, 32), filters=(4, 8), dropout=0.0)
    head = OrdinalHead([1.0, -0.5, -2.0])
    trainer = keras.Model(model.inputs, head(model.get_layer("p_defective").input))
    x = np.random.default_rng(0).random((6, 32, 32, 1)).astype(np.float32)
    cuts = trainer.predict(x, verbose=0)
    assert cuts.shape == (6, 3)
    assert np.all(np.diff(cuts, axis=1) < 0)  # one shared score: the cuts stay ordered
    head.fold_into(model.get_layer("p_defective"), 1)
    np.testing.assert_allclose(model.predict(x, verbose=0)[:, 0], cuts[:, 1], rtol=1e-5)


def test_train_model_with_the_ordinal_head_saves_a_plain_one_output_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    soft = np.tile(ELPV_LEVELS, 4)
    val = (x[:8], (soft[:8] > 0.5).astype(np.float32))

    def fit(ordinal: bool) -> tuple[keras.Model, dict[str, list[float]]]:
        config = TrainConfig.from_params({**TRAIN_PARAMS, "ordinal": ordinal}, seed=0)
        trained = train_members(config, 32, same_data(config, (x, soft), val), 0)
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
