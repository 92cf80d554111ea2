"""Predict: one or several images per request, as multipart files or base64 JSON.

The body is read here rather than through FastAPI's form parameters so that every failure maps
to our own typed errors (FastAPI turns body-parsing errors into a bare 400), the size cap raised
while streaming reaches the error handler, and both content types share one endpoint.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from classifier.serving.decoding import ALLOWED_FORMATS
from classifier.serving.errors import (
    InvalidInput,
    ModelNotReady,
    TooManyImages,
    Unauthorized,
    UnsupportedMediaType,
    validation_problems,
)
from classifier.serving.inference import predict_images
from classifier.serving.schemas import (
    ErrorResponse,
    OutOfDistributionFlag,
    Prediction,
    PredictJSONRequest,
    PredictResponse,
)
from classifier.serving.state import Service

router = APIRouter(prefix="/v1", tags=["predict"])

# Multipart parts beyond this are refused by the parser itself (bounded work on hostile bodies);
# the per-request image limit (MAX_IMAGES_PER_REQUEST) is checked below with a clearer message.
_PARSER_MAX_PARTS = 1000

_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["files"],
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": f"image files ({', '.join(ALLOWED_FORMATS)})",
                    }
                },
            },
            "encoding": {"files": {"contentType": "image/*, application/octet-stream"}},
        },
        "application/json": {"schema": {"$ref": "#/components/schemas/PredictJSONRequest"}},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


async def require_token(request: Request, service: Service) -> None:
    """When CLASSIFIER_API_TOKEN is set, predict needs `Authorization: Bearer <token>`."""
    token = service.settings.api_token
    if token is None:
        return
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    # Constant-time comparison: no timing side channel on the token.
    if not hmac.compare_digest(presented.strip().encode(), token.get_secret_value().encode()):
        raise Unauthorized("invalid bearer token")


Authorized = Annotated[None, Depends(require_token)]


async def _multipart_images(request: Request, limit: int) -> list[tuple[str, bytes]]:
    try:
        form = await request.form(max_files=_PARSER_MAX_PARTS, max_fields=_PARSER_MAX_PARTS)
    except HTTPException as exc:  # Starlette's parser reports malformed bodies this way
        if "Too many files" in str(exc.detail):
            raise TooManyImages(f"too many parts in one request (limit {limit} images)") from exc
        raise InvalidInput(f"malformed multipart body: {exc.detail}") from exc
    try:
        uploads = [
            (key, value) for key, value in form.multi_items() if isinstance(value, UploadFile)
        ]
        if not uploads:
            raise InvalidInput(
                "no image in the multipart body: send each image as a file part named 'files' "
                "(curl -F files=@cell.png)"
            )
        if len(uploads) > limit:
            raise TooManyImages(
                f"{len(uploads)} images in one request, over the limit of {limit} "
                "(CLASSIFIER_MAX_IMAGES_PER_REQUEST); split them over several requests"
            )
        images = []
        for index, (_key, upload) in enumerate(uploads):
            images.append((upload.filename or str(index), await upload.read()))
        return images
    finally:
        await form.close()


def _json_images(body: bytes, limit: int) -> list[tuple[str, bytes]]:
    try:
        parsed = PredictJSONRequest.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidInput(
            f"invalid JSON request ({validation_problems(exc)}); expected"
            ' {"images": [{"data": "<base64>"}]}'
        ) from exc
    if len(parsed.images) > limit:
        raise TooManyImages(
            f"{len(parsed.images)} images in one request, over the limit of {limit} "
            "(CLASSIFIER_MAX_IMAGES_PER_REQUEST); split them over several requests"
        )
    images = []
    for index, item in enumerate(parsed.images):
        name = item.name or str(index)
        try:
            data = base64.b64decode(item.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(
                f"image {name!r}: 'data' is not valid base64 ({exc})", image=name
            ) from exc
        images.append((name, data))
    return images


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="P(defective) and label for one or several images",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={
        401: _error("missing or wrong bearer token (only when CLASSIFIER_API_TOKEN is set)"),
        413: _error("body, image count or image dimensions over the limits"),
        415: _error("not multipart or JSON, or not an image in a supported format/mode"),
        422: _error(
            "empty, truncated or damaged image; malformed multipart or JSON; an image unlike "
            "the training images when CLASSIFIER_OOD_ACTION=refuse"
        ),
        503: _error("the model is not loaded yet"),
    },
)
async def predict(request: Request, service: Service, _auth: Authorized) -> PredictResponse:
    if not service.model.ready:
        raise ModelNotReady()
    settings = service.settings
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in ("multipart/form-data", "application/json"):
        raise UnsupportedMediaType(
            f"Content-Type {content_type or '(none)'!r} is not accepted: send images as "
            "multipart/form-data (parts named 'files') or application/json "
            '({"images": [{"data": "<base64>"}]})'
        )
    body = await request.body()  # capped by the middleware: 413 past MAX_UPLOAD_BYTES
    if not body:
        raise InvalidInput("the request body is empty: send at least one image")
    limit = settings.max_images_per_request
    if content_type == "application/json":
        images = _json_images(body, limit)
    else:
        images = await _multipart_images(request, limit)

    answer = await predict_images(service, images)

    card = service.model.card
    negative, positive = card.labels
    metrics = service.metrics
    metrics.images_per_request.observe(len(images))
    predictions = []
    for (name, _data), probability, flags in zip(
        images, answer.probabilities.tolist(), answer.flags, strict=True
    ):
        label = positive if probability > card.threshold else negative
        metrics.predictions.labels(label).inc()
        predictions.append(
            Prediction(
                image=name,
                probability=probability,
                label=label,
                model_version=card.version,
                out_of_distribution=[
                    OutOfDistributionFlag(reason=f.reason, message=f.message) for f in flags
                ],
            )
        )
    return PredictResponse(predictions=predictions, model_version=card.version)
