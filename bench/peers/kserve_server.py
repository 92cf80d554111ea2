"""KServe's Python model server around our LiteRT model, as KServe's "custom model" docs show:
a `kserve.Model` subclass with `load()` and `predict()`, started by `kserve.ModelServer`.

Request (KServe v1 protocol, images as base64, as in KServe's image examples):
    POST /v1/models/elpv:predict  {"instances": [{"image": {"b64": "<PNG, base64>"}}]}
Run (in .tools/peers/kserve): python -m bench.peers.kserve_server --http_port N --grpc_port M
"""

from __future__ import annotations

import base64
from typing import Any

import kserve  # type: ignore[import-not-found]  # in the peer venv only

from bench.peers.model import MODEL_NAME, LiteRTClassifier


class ELPVModel(kserve.Model):  # type: ignore[misc]  # Any: the peer venv has its types
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        self.classifier = LiteRTClassifier()
        self.ready = True
        return True

    def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        images = [base64.b64decode(item["image"]["b64"]) for item in payload["instances"]]
        probabilities = self.classifier.predict_images(images)
        return {
            "predictions": [
                {"probability": p, "label": self.classifier.label(p)} for p in probabilities
            ]
        }


if __name__ == "__main__":
    kserve.ModelServer().start([ELPVModel(MODEL_NAME)])
