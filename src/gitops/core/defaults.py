"""The defaults the command line shows. Standard library only and importing nothing else, so
`gitops --help` and `gitops image-args` run without the delivery dependencies (PyYAML)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_IMAGE_NAME = "elpv-classifier"  # the name the base Deployment uses (image contract)
DEFAULT_MODEL_CARD = Path("models/model_card.json")  # where the pipeline's export stage writes it
DEFAULT_REMOTE = "origin"
DEFAULT_ATTEMPTS = 5  # push attempts when the remote keeps moving
