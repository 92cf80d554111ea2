"""BentoML around our LiteRT model, as BentoML's docs show: a `@bentoml.service` class that
loads the model in `__init__` and one `@bentoml.api` method taking a PIL image (defaults: one
worker, no adaptive batching).

Request: multipart `POST /predict` with the image in the form field `image` (BentoML names the
field after the parameter and decodes it with Pillow).
Run (in .tools/peers/bentoml):
    bentoml serve bench.peers.bentoml_service:ELPVClassifier --host 127.0.0.1 --port N
"""

from __future__ import annotations

from typing import Any

import bentoml  # type: ignore[import-not-found]  # in the peer venv only
from PIL.Image import Image

from bench.peers.model import LiteRTClassifier
from classifier.imaging import preprocess


@bentoml.service
class ELPVClassifier:
    def __init__(self) -> None:
        self.classifier = LiteRTClassifier()

    @bentoml.api  # type: ignore[untyped-decorator]  # Any here: the peer venv has the types
    def predict(self, image: Image) -> dict[str, Any]:
        c = self.classifier
        p = c.predict(preprocess(image, c.size, c.channels)[None])[0]
        return {"probability": p, "label": c.label(p)}
