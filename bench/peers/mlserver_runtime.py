"""MLServer around our LiteRT model, as MLServer's "custom inference runtime" docs show: an
`MLModel` subclass with `load()` and `predict()`, named in a model-settings.json and started by
`mlserver start <folder>` (defaults: one parallel inference worker process, no adaptive
batching). bench/peers/__main__.py writes the settings files.

Request (Open Inference Protocol v2, the image as a base64 BYTES input):
    POST /v2/models/elpv/infer
    {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                 "parameters": {"content_type": "base64"}, "data": ["<PNG, base64>"]}]}
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel  # type: ignore[import-not-found]  # in the peer venv only
from mlserver.codecs import Base64Codec, NumpyCodec  # type: ignore[import-not-found]
from mlserver.types import InferenceRequest, InferenceResponse  # type: ignore[import-not-found]

from bench.peers.model import LiteRTClassifier


class LiteRTRuntime(MLModel):  # type: ignore[misc]  # Any: the peer venv has its types
    async def load(self) -> bool:
        self.classifier = LiteRTClassifier()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = Base64Codec.decode_input(payload.inputs[0])
        probabilities = np.asarray(self.classifier.predict_images(images), np.float32)
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("probability", probabilities)],
        )
