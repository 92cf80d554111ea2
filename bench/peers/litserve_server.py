"""LitServe around our LiteRT model, as LitServe's docs show: a `LitAPI` with `setup`,
`decode_request`, `predict`, `encode_response`, run by `LitServer` (defaults: one inference
worker process, one API server process, no batching).

Request (a file upload, as in LitServe's image examples): multipart `POST /predict` with the
image in the form field `files` (the same body our service takes).
Run (in .tools/peers/litserve): PEER_PORT=N python -m bench.peers.litserve_server
"""

import os
from typing import Any

import litserve as ls  # type: ignore[import-not-found]  # in the peer venv only

from bench.peers.model import LiteRTClassifier, Rows


class ELPVAPI(ls.LitAPI):  # type: ignore[misc]  # Any: the peer venv has its types
    def setup(self, device: str) -> None:
        self.classifier = LiteRTClassifier()

    # No annotation on `request`, as in LitServe's docs: LitServe builds the endpoint from it
    # (a form here); an annotation, even a string one, would turn it into a query parameter.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return self.classifier.rows(request["files"].file.read())

    def predict(self, x: Rows) -> float:
        return self.classifier.predict(x)[0]

    def encode_response(self, output: float) -> dict[str, Any]:
        return {"probability": output, "label": self.classifier.label(output)}


if __name__ == "__main__":
    server = ls.LitServer(ELPVAPI(), accelerator="cpu")
    # generate_client_file=False: do not write a client.py into the working directory.
    server.run(host="127.0.0.1", port=int(os.environ["PEER_PORT"]), generate_client_file=False)
