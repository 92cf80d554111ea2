"""The training recipe: one frozen value read once from params.yaml's `base` and `train` sections.

Every field is required, in params.yaml as in code: there is no second set of defaults to drift
apart from the first. `Recipe.from_params` checks that each key is present, known and of the
right type; `Recipe.__post_init__` checks the values and how they combine, so a recipe made in
code (a test's tiny one, `dataclasses.replace` of another) is held to the same rules. Every
error names the key, what is wrong with it and how to fix it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from classifier.pipeline.common import PipelineError, section

POOLINGS = ("avg", "avgmax")
STEM_STRIDES = (1, 2)


@dataclass(frozen=True)
class Augmentation:
    """What each training batch goes through (`classifier.pipeline.batches`)."""

    flip: bool  # random horizontal and vertical flips
    rot90: bool  # random quarter turns
    brightness: float  # max additive shift, in [0, 1] pixel units
    contrast: float  # max relative gain change
    # Small geometric jitter, as the cell segmentation leaves it (all 0 = off): one bilinear
    # affine warp per image, edges extended.
    shift: float  # max translation, as a fraction of the side
    rotate: float  # max rotation, degrees (busbars stay about horizontal)
    scale: float  # max relative zoom in or out
    # Mixup (Zhang et al. 2018): each image blended with another of its batch, the targets and
    # weights with the same share; the share comes from Beta(mixup, mixup). 0 = off.
    mixup: float

    def __post_init__(self) -> None:
        if not (0 <= self.shift < 0.5 and 0 <= self.rotate <= 45 and 0 <= self.scale < 0.5):
            raise PipelineError(
                "train.augment: shift and scale must be in [0, 0.5) and rotate in [0, 45] degrees, "
                f"got shift={self.shift}, scale={self.scale}, rotate={self.rotate}"
            )
        if self.brightness < 0 or self.contrast < 0:
            raise PipelineError(
                "train.augment: brightness and contrast are maximum jitters: use values >= 0 "
                f"(0 = off), got brightness={self.brightness}, contrast={self.contrast}"
            )
        if self.mixup < 0:
            raise PipelineError(
                "train.augment.mixup is the Beta(a, a) parameter of the blend share: use a value "
                f">= 0 (0 = off), got {self.mixup}"
            )


@dataclass(frozen=True)
class Recipe:
    """How the model is built and trained: params.yaml's `base.seed`, `base.image_size` and its
    `train` section, field for key (`augment` is `Augmentation`)."""

    seed: int  # member i is seeded `seed + i`: its weights and its batch order
    image_size: int  # the model reads image_size x image_size inputs
    epochs: int
    batch_size: int
    learning_rate: float  # peak: linear warmup over `warmup_epochs`, then cosine decay
    warmup_epochs: int
    filters: tuple[int, ...]  # one block of Conv-BN-ReLU + max-pool per entry
    convs_per_block: int  # the first block has one conv whatever this says
    bn_momentum: float
    dropout: float  # before the output layer
    soft_targets: bool  # fit the graded defect probability, not the 0/1 label
    # Fit the expert levels with a cumulative-logit head (`model.OrdinalHead`) instead of one
    # sigmoid against the graded probability; the saved model keeps one output, P(defective).
    ordinal: bool
    balance_classes: bool  # class weights n / (2 * n_class)
    patience: int  # early-stopping patience, in epochs without a better validation AUC
    pooling: str  # global pooling before the head: "avg" or "avgmax" (both, concatenated)
    stem_stride: int  # stride of the first conv (2: read a 2x larger image at ~1x cost)
    weight_decay: float  # decoupled (AdamW-style) weight decay; 0 = plain Adam
    # > 0: validate, keep and save an exponential moving average of the weights (Keras' own
    # `use_ema`), which smooths the epoch-to-epoch swings of short epochs; 0 = off.
    ema_momentum: float
    # > 0: sharpness-aware minimisation (`model.SharpnessAware`) with this neighbourhood radius;
    # each step costs two forward and backward passes. 0 = plain steps.
    sam_rho: float
    ensemble: int  # members trained with seeds seed, seed + 1, ...; the model averages them
    # Fit on train + val for exactly `epochs` epochs and keep the last one. Only once the recipe
    # was chosen on validation: the validation split is then training data, not a check.
    refit: bool
    # Each member after the first early-stops on its own stratified fold of the training split
    # (as large as the validation split) and fits the rest plus the validation split, so the
    # members together fit every training cell. The averaged model has no held-out split left.
    cross_fold: bool
    augment: Augmentation

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise PipelineError(f"base.image_size must be >= 1 (pixels), got {self.image_size}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise PipelineError(
                "train.epochs, train.batch_size and train.patience must be >= 1, got "
                f"{self.epochs}, {self.batch_size} and {self.patience}"
            )
        if not self.filters or min(self.filters) < 1:
            raise PipelineError(
                f"train.filters must list one width >= 1 per block, got {list(self.filters)}"
            )
        if self.convs_per_block < 1:
            raise PipelineError(f"train.convs_per_block must be >= 1, got {self.convs_per_block}")
        if self.learning_rate <= 0:
            raise PipelineError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 < self.bn_momentum < 1.0:
            raise PipelineError(f"train.bn_momentum must be in (0, 1), got {self.bn_momentum}")
        if not 0.0 <= self.dropout < 1.0:
            raise PipelineError(f"train.dropout must be in [0, 1) (0 = off), got {self.dropout}")
        if self.warmup_epochs < 0:
            raise PipelineError(f"train.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.stem_stride not in STEM_STRIDES:
            raise PipelineError(f"train.stem_stride must be 1 or 2, got {self.stem_stride}")
        if self.pooling not in POOLINGS:
            raise PipelineError(
                f"train.pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}"
            )
        if self.weight_decay < 0:
            raise PipelineError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise PipelineError(
                f"train.ema_momentum must be in [0, 1) (0 = off), got {self.ema_momentum}"
            )
        if self.sam_rho < 0:
            raise PipelineError(
                "train.sam_rho is the radius of sharpness-aware minimisation's neighbourhood: use "
                f"a value >= 0 (0 = off; 0.05 is the paper's default), got {self.sam_rho}"
            )
        if self.ensemble < 1:
            raise PipelineError(f"train.ensemble must be >= 1 (members), got {self.ensemble}")
        if self.cross_fold and (self.refit or self.ensemble < 2):
            raise PipelineError(
                "train.cross_fold gives each member after the first its own validation fold: "
                "it needs train.ensemble >= 2 and train.refit: false (got "
                f"ensemble={self.ensemble}, refit={str(self.refit).lower()})"
            )
        if self.ordinal and (not self.soft_targets or self.augment.mixup > 0):
            raise PipelineError(
                "train.ordinal fits the expert levels of the graded defect probability: it needs "
                "train.soft_targets: true and train.augment.mixup: 0 (a blend of two levels is "
                f"no level), got soft_targets={str(self.soft_targets).lower()}, "
                f"mixup={self.augment.mixup}"
            )

    @property
    def scores_validation(self) -> bool:
        """Whether the averaged model never trained on the validation split, so its score there
        means something (not after a refit or with cross-fold members)."""
        return not (self.refit or self.cross_fold)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Recipe:
        """The recipe of a whole params.yaml (its `base` and `train` sections)."""
        base, train = section(params, "base"), section(params, "train")
        values: dict[str, Any] = {
            name: _value(base, "base", name, kind) for name, kind in BASE_KEYS.items()
        }
        _no_unknown_keys(train, "train", TRAIN_KEYS.keys() | {"augment"})
        values |= {name: _value(train, "train", name, kind) for name, kind in TRAIN_KEYS.items()}
        augment = train.get("augment")
        if not isinstance(augment, dict):
            raise PipelineError(
                "params.yaml train.augment must be a mapping of "
                f"{', '.join(AUGMENT_KEYS)}, got {augment!r}"
            )
        _no_unknown_keys(augment, "train.augment", AUGMENT_KEYS.keys())
        values["augment"] = Augmentation(
            **{
                name: _value(augment, "train.augment", name, kind)
                for name, kind in AUGMENT_KEYS.items()
            }
        )
        return cls(**values)


def _fields(kind: type) -> dict[str, str]:
    """{field: its annotation} of a recipe dataclass, in declaration order."""
    return {f.name: str(f.type) for f in dataclasses.fields(kind)}


BASE_KEYS = {"seed": "int", "image_size": "int"}
TRAIN_KEYS = {k: v for k, v in _fields(Recipe).items() if k not in BASE_KEYS and k != "augment"}
AUGMENT_KEYS = _fields(Augmentation)


def _no_unknown_keys(mapping: dict[str, Any], where: str, known: Any) -> None:
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise PipelineError(
            f"params.yaml {where} has unknown key(s) {', '.join(unknown)}: check the spelling "
            f"against {', '.join(sorted(known))}, or remove them"
        )


def _value(mapping: dict[str, Any], where: str, name: str, kind: str) -> Any:
    """`mapping[name]` as the recipe field's type `kind`, or an error that says what to write."""
    if name not in mapping:
        raise PipelineError(
            f"params.yaml {where}.{name} is missing: every recipe key is required "
            "(docs/pipeline.md describes each); add it"
        )
    raw = mapping[name]
    if kind == "bool":
        ok = isinstance(raw, bool)
        expected = "true or false"
    elif kind == "int":
        ok = isinstance(raw, int) and not isinstance(raw, bool)
        expected = "a whole number"
    elif kind == "float":
        ok = isinstance(raw, int | float) and not isinstance(raw, bool)
        raw = float(raw) if ok else raw
        expected = "a number"
    elif kind == "str":
        ok = isinstance(raw, str)
        expected = "a string"
    else:  # tuple[int, ...]
        ok = isinstance(raw, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in raw
        )
        raw = tuple(raw) if ok else raw
        expected = "a list of whole numbers"
    if not ok:
        raise PipelineError(f"params.yaml {where}.{name} must be {expected}, got {raw!r}")
    return raw
