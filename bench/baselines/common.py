"""The part the baseline servers share: same endpoints and JSON as the product for the happy
path (`GET /readyz`, multipart `POST /v1/predict` with `files` parts), none of its hardening."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import FastAPI, Request
from PIL import Image

from classifier.imaging import preprocess
from classifier.model_card import ModelCard

Rows = npt.NDArray[np.float32]


def model_dir() -> Path:
    return Path(os.environ["BASELINE_MODEL_DIR"])


def build_app(card: ModelCard, predict_rows: Callable[[Rows], Rows], *, blocking: bool) -> FastAPI:
    """`blocking=True` calls the model from the async handler directly, as naive code does."""
    app = FastAPI()
    size = (card.input.height, card.input.width)

    @app.get("/readyz")
    async def readyz() -> dict[str, bool]:
        return {"ready": True}  # the model is loaded before the server starts listening

    async def rows_from(request: Request) -> tuple[list[str], Rows]:
        form = await request.form()
        names: list[str] = []
        rows: list[Rows] = []
        for _key, value in form.multi_items():
            if hasattr(value, "read"):
                data = await value.read()
                names.append(getattr(value, "filename", "") or str(len(names)))
                rows.append(preprocess(Image.open(io.BytesIO(data)), size))
        return names, np.stack(rows)

    def respond(names: list[str], p: Rows) -> dict[str, Any]:
        preds = [
            {
                "image": n,
                "probability": float(v),
                "label": card.labels[int(v > card.threshold)],
                "model_version": card.version,
            }
            for n, v in zip(names, p.reshape(-1).tolist(), strict=True)
        ]
        return {"predictions": preds, "model_version": card.version}

    if blocking:

        @app.post("/v1/predict")
        async def predict_blocking(request: Request) -> dict[str, Any]:
            names, rows = await rows_from(request)
            return respond(names, predict_rows(rows))

    else:
        import asyncio

        @app.post("/v1/predict")
        async def predict_threaded(request: Request) -> dict[str, Any]:
            names, rows = await rows_from(request)
            return respond(names, await asyncio.to_thread(predict_rows, rows))

    return app


def serve(app: FastAPI) -> None:
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ.get("BASELINE_PORT", "8091")),
        log_level="warning",
        access_log=False,
    )
