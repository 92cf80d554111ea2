"""Model cards as the commands read them: the build's card (required) and an overlay's card
(optional: an environment that was never deployed by gitops has none)."""

from __future__ import annotations

from pathlib import Path

from classifier.model_card import ModelCard, ModelCardError
from gitops.core.errors import UsageError


def load_card(path: Path) -> ModelCard:
    try:
        return ModelCard.load(path)
    except ModelCardError as exc:
        raise UsageError(
            str(exc), "pass --model-card PATH (the pipeline's export stage writes it)"
        ) from exc


def optional_card(path: Path) -> ModelCard | None:
    if not path.exists():
        return None
    try:
        return ModelCard.load(path)
    except ModelCardError as exc:
        raise UsageError(str(exc), "fix or remove the overlay's model card") from exc
