"""The model card: what travels with an exported model into the image, the service, the overlays
(`overlays/<env>/model-card.json`) and the promotion PRs. One schema, read and written only here.

Standard library only, so the service and the delivery tooling can both import it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
# Headline metrics every card carries; the metric gate and promotion PRs compare these.
HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "f1")


class ModelCardError(ValueError):
    """A model card is missing, unreadable or does not follow the schema."""


@dataclass(frozen=True)
class ModelInput:
    height: int
    width: int
    channels: int = 1
    dtype: str = "float32"
    # What `classifier.imaging.preprocess` does; recorded so other clients can reproduce it.
    preprocessing: str = "grayscale, bilinear resize to height x width, scale to [0, 1]"
    # The planes, in order (`classifier.imaging.CHANNELS`); cards from before the field: gray.
    channel_names: tuple[str, ...] = ("gray",)

    def __post_init__(self) -> None:
        # JSON gives a list; keep the frozen card hashable and comparable.
        object.__setattr__(self, "channel_names", tuple(self.channel_names))
        if len(self.channel_names) != self.channels:
            raise ModelCardError(
                f"input.channels is {self.channels} but input.channel_names lists "
                f"{len(self.channel_names)}: {list(self.channel_names)}"
            )


_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]*")


def split_fingerprint(paths: Sequence[str], labels: Sequence[int]) -> str:
    """The test split's identity: sha256 over its `path<TAB>label` lines, sorted by path. Two
    cards with the same fingerprint were scored on the same images with the same labels."""
    lines = sorted(f"{path}\t{int(label)}\n" for path, label in zip(paths, labels, strict=True))
    return "sha256:" + hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SplitOutcomes:
    """Which test images the model classified right at the card's threshold: what the metric
    gate needs to compare two models paired, image by image (`classifier.comparison`)."""

    fingerprint: str  # split_fingerprint() of the test split
    images: int
    # Hex bitmask: image i in fingerprint order (sorted by path) is bit i, most significant bit
    # first, 1 = right; zero-padded to whole hex digits.
    correct: str

    def __post_init__(self) -> None:
        if not _FINGERPRINT.fullmatch(self.fingerprint):
            raise ModelCardError(
                f"test_outcomes.fingerprint must be 'sha256:' + 64 hex digits: {self.fingerprint!r}"
            )
        if self.images < 1:
            raise ModelCardError(f"test_outcomes.images must be >= 1, got {self.images}")
        digits = math.ceil(self.images / 4)
        if len(self.correct) != digits or not _HEX.fullmatch(self.correct):
            raise ModelCardError(
                f"test_outcomes.correct must be {digits} lowercase hex digits for "
                f"{self.images} images, got {len(self.correct)}"
            )
        if int(self.correct[-1], 16) & ((1 << (4 * digits - self.images)) - 1):
            raise ModelCardError("test_outcomes.correct sets padding bits past the last image")

    @classmethod
    def of(
        cls, paths: Sequence[str], labels: Sequence[int], correct: Sequence[bool]
    ) -> SplitOutcomes:
        """From the test split in any order: image paths, binary labels, right or wrong."""
        if not len(paths) == len(labels) == len(correct):
            raise ModelCardError(
                f"{len(paths)} paths, {len(labels)} labels and {len(correct)} outcomes: "
                "one of each per test image"
            )
        if len(set(paths)) != len(paths):
            raise ModelCardError("the test split lists an image path twice")
        order = sorted(range(len(paths)), key=lambda i: paths[i])
        bits = "".join("1" if correct[i] else "0" for i in order)
        bits += "0" * (-len(bits) % 4)
        return cls(
            fingerprint=split_fingerprint(paths, labels),
            images=len(paths),
            correct="".join(f"{int(bits[k : k + 4], 2):x}" for k in range(0, len(bits), 4)),
        )

    def flags(self) -> tuple[bool, ...]:
        """Right (True) or wrong, per image in fingerprint order."""
        bits = "".join(f"{int(digit, 16):04b}" for digit in self.correct)
        return tuple(bit == "1" for bit in bits[: self.images])

    @property
    def accuracy(self) -> float:
        return sum(self.flags()) / self.images


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str  # the short git revision the model was built from (+ "-dirty" if uncommitted)
    git_revision: str
    data_hash: str  # the md5 of data/raw recorded in data.dvc
    input: ModelInput
    threshold: float  # defective when P(defective) > threshold
    labels: tuple[str, str]  # (negative, positive)
    metrics: dict[str, float]
    params: dict[str, Any]
    exported_at: str  # ISO 8601, UTC
    export_parity_max_abs_diff: float
    extra: dict[str, Any] = field(default_factory=dict)
    # Per-image outcomes on the test split; None on cards exported before the field.
    test_outcomes: SplitOutcomes | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        accuracy = self.metrics.get("accuracy")
        outcomes = self.test_outcomes
        # metrics.json rounds to 6 decimals.
        if (
            outcomes is not None
            and accuracy is not None
            and abs(outcomes.accuracy - accuracy) > 1e-6
        ):
            raise ModelCardError(
                f"test_outcomes give accuracy {outcomes.accuracy:.6f}, metrics.accuracy says "
                f"{accuracy:.6f}: the card mixes two evaluations; re-run `dvc repro export`"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelCard:
        try:
            if raw.get("schema_version") != SCHEMA_VERSION:
                raise ModelCardError(
                    f"schema_version {raw.get('schema_version')!r} is not {SCHEMA_VERSION}"
                )
            missing = [m for m in HEADLINE_METRICS if m not in raw["metrics"]]
            if missing:
                raise ModelCardError(f"metrics lack {', '.join(missing)}")
            return cls(
                name=str(raw["name"]),
                version=str(raw["version"]),
                git_revision=str(raw["git_revision"]),
                data_hash=str(raw["data_hash"]),
                input=ModelInput(**raw["input"]),
                threshold=float(raw["threshold"]),
                labels=(str(raw["labels"][0]), str(raw["labels"][1])),
                metrics={k: float(v) for k, v in raw["metrics"].items()},
                params=dict(raw["params"]),
                exported_at=str(raw["exported_at"]),
                export_parity_max_abs_diff=float(raw["export_parity_max_abs_diff"]),
                extra=dict(raw.get("extra", {})),
                test_outcomes=(
                    SplitOutcomes(**raw["test_outcomes"])
                    if raw.get("test_outcomes") is not None
                    else None
                ),
            )
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            if isinstance(exc, ModelCardError):
                raise
            raise ModelCardError(f"not a valid model card: {exc!r}") from exc

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelCardError(f"model card not found: {path}") from exc
        except json.JSONDecodeError as exc:
            raise ModelCardError(f"model card {path} is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ModelCardError(f"model card {path} must be a JSON object")
        try:
            return cls.from_dict(raw)
        except ModelCardError as exc:
            raise ModelCardError(f"{path}: {exc}") from exc
