"""Predict: one or several images per request, as multipart files or base64 JSON.

The body is read here rather than through FastAPI's form parameters so that every failure maps
to our own typed errors (FastAPI turns body-parsing errors into a bare 400), the size cap raised
while streaming reaches the error handler, and both content types share one endpoint.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from classifier.serving.auth import require_token
from classifier.serving.decoding import ALLOWED_FORMATS
from classifier.serving.errors import (
    InvalidInput,
    ModelNotReady,
    TooManyImages,
    UnsupportedMediaType,
    validation_problems,
)
from classifier.serving.inference import predict_images
from classifier.serving.schemas import (
    ErrorResponse,
    JSONImage,
    OutOfDistributionFlag,
    Prediction,
    PredictJSONRequest,
    PredictResponse,
)
from classifier.serving.state import service_of

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


_DONE = JSONImage.model_construct(data="")  # stands in for an item already decoded


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


class _InMemoryParts(MultiPartParser):
    """Starlette's multipart parser with every file part kept in memory.

    Starlette spools parts over 1 MiB to a temporary file, i.e. to the pod's small /tmp
    emptyDir; here the body cap (MAX_UPLOAD_BYTES) bounds the parts instead, and the memory
    budget of the admission limit counts them (admission.py).
    """

    def __init__(
        self, request: Request, stream: AsyncGenerator[bytes, None], max_bytes: int
    ) -> None:
        super().__init__(
            request.headers, stream, max_files=_PARSER_MAX_PARTS, max_fields=_PARSER_MAX_PARTS
        )
        self.spool_max_size = max_bytes + 1  # never rolls over to disk


async def _counted(stream: AsyncIterator[bytes], seen: list[int]) -> AsyncGenerator[bytes, None]:
    async for chunk in stream:
        seen[0] += len(chunk)
        yield chunk


def _part_bytes(upload: UploadFile) -> bytes:
    """The part's bytes without a copy: the in-memory spool's buffer itself."""
    spool = upload.file
    buffer = getattr(spool, "_file", None)  # SpooledTemporaryFile's BytesIO while in memory
    if hasattr(buffer, "getvalue"):
        data: bytes = buffer.getvalue()  # type: ignore[union-attr]
        return data
    spool.seek(0)
    return spool.read()


def _decode_name(raw: bytes) -> str:
    """As Starlette decodes a part's filename: UTF-8, else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def single_file_part(body: bytes, content_type: str) -> tuple[str, bytes] | None:
    """The filename and bytes of a body that is exactly one file part, else None.

    The common request, one image, costs a quarter of the event loop's CPU through the general
    parser (callbacks per header and per chunk); here it is a few `find`s. Anything that is
    not plainly one file part (several parts, a field, an unusual header, a preamble, a
    malformed body) returns None, and the general parser, with its limits and errors, takes it.
    """
    _kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        return None
    delimiter = b"--" + boundary
    start = len(delimiter) + 2
    if not body.startswith(delimiter + b"\r\n"):
        return None
    head_end = body.find(b"\r\n\r\n", start)
    if head_end < 0:
        return None
    data_start = head_end + 4
    data_end = body.find(b"\r\n" + delimiter, data_start)
    closing = b"\r\n" + delimiter + b"--"
    if data_end < 0 or not body.startswith(closing, data_end):
        return None  # no end, or another part follows
    if body[data_end + len(closing) :] not in (b"", b"\r\n"):
        return None
    disposition = None
    for line in body[start:head_end].split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon:
            return None
        if name.strip().lower() == b"content-disposition":
            if disposition is not None:
                return None
            disposition = value.strip()
    if disposition is None:
        return None
    kind, options = parse_options_header(disposition)
    if kind != b"form-data" or b"name" not in options or b"filename" not in options:
        return None
    return _decode_name(options[b"filename"]) or "0", body[data_start:data_end]


async def _buffered(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


async def _multipart_images(
    request: Request, limit: int, max_bytes: int
) -> list[tuple[str, bytes]]:
    # The body is capped by the middleware (MAX_UPLOAD_BYTES), so it can be held whole; the one
    # image sliced out of it makes two copies at most, as the general parser's parts do.
    body = b"".join([chunk async for chunk in request.stream()])
    single = single_file_part(body, request.headers.get("content-type", ""))
    if single is not None:
        return [single]
    seen = [0]
    parser = _InMemoryParts(request, _counted(_buffered(body), seen), max_bytes)
    del body  # the parser's stream holds it until parsed
    try:
        form = await parser.parse()
    except MultiPartException as exc:  # malformed bodies and Starlette's own part limits
        if "Too many files" in exc.message:
            raise TooManyImages(f"too many parts in one request (limit {limit} images)") from exc
        raise InvalidInput(f"malformed multipart body: {exc.message}") from exc
    try:
        if seen[0] == 0:
            raise InvalidInput("the request body is empty: send at least one image")
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
        return [
            (upload.filename or str(index), _part_bytes(upload))
            for index, (_key, upload) in enumerate(uploads)
        ]
    finally:
        await form.close()


async def _json_body(request: Request) -> bytearray:
    """The body in one buffer, read here (not `request.body()`, which would keep a second
    reference on the request for as long as it lives)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    if not body:
        raise InvalidInput("the request body is empty: send at least one image")
    return body


def _json_images(body: bytearray, limit: int) -> list[tuple[str, bytes]]:
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
    del body[:]  # the caller's buffer: parsed, so free it before decoding the base64
    items = parsed.images
    images = []
    for index in range(len(items)):
        # Drop each item once decoded: the base64 text and the bytes are never all held twice.
        item = items[index]
        items[index] = _DONE
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
        401: _error("missing or wrong bearer token (open only if ALLOW_UNAUTHENTICATED)"),
        413: _error("body, image count or image dimensions over the limits"),
        415: _error("not multipart or JSON, or not an image in a supported format/mode"),
        422: _error(
            "empty, truncated or damaged image; malformed multipart or JSON; an image unlike "
            "the training images when CLASSIFIER_OOD_ACTION=refuse"
        ),
        503: _error(
            "the model is not loaded yet, too many requests in flight (overloaded) or the "
            "request's deadline passed (deadline_exceeded); retry after Retry-After"
        ),
    },
)
async def predict(request: Request) -> Response:
    """Served by `direct.DirectRoutes` (FastAPI documents it): takes the Request, returns a
    Response, and encodes the body itself (`PredictResponse` is still the documented schema)."""
    service = service_of(request)
    await require_token(request, service)  # before anything else, as a dependency would
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
    # The body stream is capped by the middleware: 413 past MAX_UPLOAD_BYTES.
    limit = settings.max_images_per_request
    if content_type == "application/json":
        images = _json_images(await _json_body(request), limit)
    else:
        images = await _multipart_images(request, limit, settings.max_upload_bytes)

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
    body = PredictResponse(predictions=predictions, model_version=card.version).model_dump_json()
    return Response(body, media_type="application/json")
