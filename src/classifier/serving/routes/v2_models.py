"""Open Inference Protocol: the model's metadata, readiness and inference (`/v2/models/...`).

The one model is named after its card (`name`, version `version`). Inference takes encoded
images or preprocessed rows (oip.py) and goes down the same path as `/v1/predict`
(inference.py): decoding, out-of-distribution screening, micro-batching, the same metrics.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from classifier.serving import oip
from classifier.serving.auth import require_token
from classifier.serving.errors import ModelNotReady, UnknownModel
from classifier.serving.inference import predict_images, predict_rows
from classifier.serving.state import Service, ServiceState, service_of

router = APIRouter(prefix="/v2/models", tags=["open inference protocol"])

MODEL = "/{model_name}"
VERSION = "/{model_name}/versions/{model_version}"


def _error(description: str) -> dict[str, Any]:
    return {"model": oip.ProtocolError, "description": description}


Responses = dict[int | str, dict[str, Any]]
_UNKNOWN: Responses = {404: _error("no model of that name (or version) is served here")}
_NOT_LOADED: Responses = {503: _error("the model is not loaded yet")}
_INFER_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary"},
            "description": "the binary tensor data extension: a JSON header of "
            "Inference-Header-Content-Length bytes, then the input's raw bytes",
        },
    },
}


def _check(service: ServiceState, name: str, version: str | None) -> None:
    """404 for another model's name or version; 503 before the card is loaded."""
    if not service.model.ready:
        raise ModelNotReady()
    card = service.model.card
    if name != card.name:
        raise UnknownModel(
            f"unknown model {name!r}: this server serves {card.name!r} (GET /v2/models/{card.name})"
        )
    if version is not None and version != card.version:
        raise UnknownModel(
            f"model {name!r} has no version {version!r}: this server serves version "
            f"{card.version!r}"
        )


@router.get(
    MODEL,
    response_model=oip.ModelMetadata,
    summary="Model metadata: inputs, outputs, version (named after the model card)",
    responses={**_UNKNOWN, **_NOT_LOADED},
)
@router.get(
    VERSION,
    response_model=oip.ModelMetadata,
    summary="Model metadata of one version",
    responses={**_UNKNOWN, **_NOT_LOADED},
)
async def model_metadata(
    service: Service, model_name: str, model_version: str | None = None
) -> oip.ModelMetadata:
    _check(service, model_name, model_version)
    card = service.model.card
    shape = (card.input.height, card.input.width, card.input.channels)
    return oip.model_metadata(card.name, card.version, shape)


@router.get(
    MODEL + "/ready",
    response_model=oip.ModelReady,
    summary="Model readiness: 200 once loaded and warmed up",
    responses={**_UNKNOWN, **_NOT_LOADED},
)
@router.get(
    VERSION + "/ready",
    response_model=oip.ModelReady,
    summary="Readiness of one version",
    responses={**_UNKNOWN, **_NOT_LOADED},
)
async def model_ready(
    service: Service, model_name: str, model_version: str | None = None
) -> oip.ModelReady:
    _check(service, model_name, model_version)
    return oip.ModelReady(name=model_name, ready=True)


_INFER: dict[str, Any] = {
    "response_model": oip.InferenceResponse,
    "openapi_extra": {"requestBody": _INFER_BODY},
    "responses": {
        200: {
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            "description": "JSON, or with binary outputs a JSON header of "
            "Inference-Header-Content-Length bytes followed by the outputs' raw bytes",
        },
        400: _error("not an inference request, or an input of the wrong name, shape or datatype"),
        401: _error("missing or wrong bearer token (only when CLASSIFIER_API_TOKEN is set)"),
        **_UNKNOWN,
        413: _error("body, image count or image dimensions over the limits"),
        415: _error("an element that is not an image in a supported format/mode"),
        422: _error(
            "empty, truncated or damaged image; an input unlike the training images when "
            "CLASSIFIER_OOD_ACTION=refuse"
        ),
        **_NOT_LOADED,
    },
}


@router.post(MODEL + "/infer", summary="Inference: P(defective) for images or rows", **_INFER)
@router.post(VERSION + "/infer", summary="Inference on one version", **_INFER)
async def infer(request: Request, model_name: str, model_version: str | None = None) -> Response:
    service = service_of(request)
    await require_token(request, service)  # before anything else, as a dependency would
    _check(service, model_name, model_version)
    body = await request.body()  # capped by the middleware: 413 past MAX_UPLOAD_BYTES
    parsed, binary = oip.parse_request(body, request.headers.get(oip.HEADER_LENGTH))
    oip.check_outputs(parsed)
    [request_input] = parsed.inputs
    oip.check_input(request_input)
    limit = service.settings.max_images_per_request
    card = service.model.card
    if request_input.name == oip.IMAGE_INPUT:
        files = oip.image_files(request_input, binary, limit)
        answer = await predict_images(service, [(str(i), f) for i, f in enumerate(files)])
    else:
        shape = (card.input.height, card.input.width, card.input.channels)
        answer = await predict_rows(service, oip.tensor_rows(request_input, binary, shape, limit))
    metrics = service.metrics
    metrics.images_per_request.observe(len(answer.probabilities))
    negative, positive = card.labels
    for probability in answer.probabilities.tolist():
        metrics.predictions.labels(positive if probability > card.threshold else negative).inc()
    content, header_length = oip.encode_response(
        parsed,
        model_name=card.name,
        model_version=card.version,
        probabilities=answer.probabilities,
        flags=answer.flags,
    )
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header_length)},
    )
