"""The model card: what travels with an exported model into the image, the service, the overlays
(`overlays/<env>/model-card.json`) and the promotion PRs. One schema, read and written only here.

Standard library only, so the service and the delivery tooling can both import it.
"""

from __future__ import annotations

import json
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
    schema_version: int = SCHEMA_VERSION

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
