"""Typed errors of the service and the one place that maps them to HTTP responses.

Every error body of the native API has the same shape (`ErrorResponse`): a stable
machine-readable `code`, a sentence for people saying what is wrong and how to fix it, the
request id, and (for requests with several images) which image failed. Under `/v2` (the Open
Inference Protocol) the same errors keep their status and use that protocol's body,
`{"error": "<message>"}`, which its clients read.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from classifier.serving.observability import BodyTooLarge, current_request_id
from classifier.serving.schemas import ErrorResponse

log = logging.getLogger("classifier.serving")


class ServiceError(Exception):
    """Base of every error the service reports on purpose. Subclasses fix status and code."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self, message: str, *, image: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.image = image
        self.headers = headers or {}


class InvalidInput(ServiceError):
    """The request is well-formed HTTP but its content cannot be used."""

    status_code = 422
    code = "invalid_input"


class EmptyImage(InvalidInput):
    code = "empty_image"


class CorruptImage(InvalidInput):
    """A known image format whose data does not decode (truncated, damaged)."""

    code = "corrupt_image"


class OutOfDistribution(InvalidInput):
    """An input unlike the training images, refused because CLASSIFIER_OOD_ACTION=refuse."""

    code = "out_of_distribution"


class BadInferenceRequest(ServiceError):
    """An Open Inference Protocol request that does not follow the protocol or the model."""

    status_code = 400
    code = "bad_inference_request"


class UnknownModel(ServiceError):
    status_code = 404
    code = "unknown_model"


class UnsupportedImage(ServiceError):
    """Not an image at all, or a format / pixel mode the service does not accept."""

    status_code = 415
    code = "unsupported_image"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class Overloaded(ServiceError):
    """More predict requests in flight than the admission limit (admission.py): retry later."""

    status_code = 503
    code = "overloaded"


class DeadlineExceeded(ServiceError):
    """The request's deadline (REQUEST_TIMEOUT_S) passed before its answer was ready."""

    status_code = 503
    code = "deadline_exceeded"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class TooManyImages(ServiceError):
    status_code = 413
    code = "too_many_images"


class ImageTooLarge(ServiceError):
    """Dimensions over the pixel limit: a decompression bomb or simply a huge image."""

    status_code = 413
    code = "image_too_large"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="classifier"'})


class ModelNotReady(ServiceError):
    status_code = 503
    code = "model_not_ready"

    def __init__(self, message: str = "the model is not loaded yet; retry shortly") -> None:
        super().__init__(message, headers={"Retry-After": "1"})


V2_PREFIX = "/v2"


def is_v2(path: str) -> bool:
    """Whether `path` belongs to the Open Inference Protocol (its error body differs)."""
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def validation_problems(exc: ValidationError, most: int = 5) -> str:
    """A body's first few schema violations as one line: `images.0.data: Field required; ...`."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
        for err in exc.errors()[:most]
    )


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    image: str | None = None,
    headers: dict[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
    v2: bool = False,
) -> JSONResponse:
    if v2:
        return JSONResponse({"error": message}, status_code=status_code, headers=headers)
    body = ErrorResponse(
        code=code,
        message=message,
        image=image,
        request_id=current_request_id(),
        details=details,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status_code, headers=headers
    )


def _count(request: Request, code: str) -> None:
    service = getattr(request.app.state, "service", None)
    if service is not None:
        service.metrics.errors.labels(code).inc()


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)  # noqa: S101  (registered for ServiceError only)
    _count(request, exc.code)
    if exc.status_code >= 500:
        log.warning("request failed: %s", exc.message, extra={"error_code": exc.code})
    return error_response(
        exc.status_code,
        exc.code,
        exc.message,
        image=exc.image,
        headers=exc.headers,
        v2=is_v2(request.url.path),
    )


async def _body_too_large(request: Request, exc: Exception) -> JSONResponse:
    _count(request, PayloadTooLarge.code)
    return error_response(
        413,
        PayloadTooLarge.code,
        f"{exc}; send fewer or smaller images (limit: CLASSIFIER_MAX_UPLOAD_BYTES)",
        v2=is_v2(request.url.path),
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, f"http_{exc.status_code}")
    _count(request, code)
    return error_response(
        exc.status_code,
        code,
        str(exc.detail),
        headers=dict(exc.headers or {}),
        v2=is_v2(request.url.path),
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    _count(request, "invalid_input")
    details = [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))}
        for err in exc.errors()
    ]
    if is_v2(request.url.path):
        problems = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details[:5])
        return error_response(400, "invalid_input", f"invalid request: {problems}", v2=True)
    return error_response(
        422, "invalid_input", "the request does not match the API schema", details=details
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug, not bad input: log the traceback, tell the client nothing internal.
    _count(request, "internal_error")
    log.exception("unhandled error", exc_info=exc)
    return error_response(
        500, "internal_error", "internal error; see the server log", v2=is_v2(request.url.path)
    )


def install_error_handlers(app: FastAPI) -> None:
    """The one mapping of errors to HTTP responses."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(BodyTooLarge, _body_too_large)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
