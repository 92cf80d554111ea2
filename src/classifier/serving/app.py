"""The app factory: builds state, wires middleware, error handlers and one router per resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from classifier.serving import __version__
from classifier.serving.admission import (
    Admission,
    AdmissionGate,
    DeadlineMiddleware,
    decode_pool_bytes,
    max_in_flight_for,
    request_bytes,
)
from classifier.serving.auth import log_mode
from classifier.serving.batching import Predictor
from classifier.serving.direct import DirectRoutes
from classifier.serving.errors import (
    PayloadTooLarge,
    error_response,
    install_error_handlers,
    is_v2,
)
from classifier.serving.observability import (
    ASGIApp,
    Metrics,
    ObservabilityMiddleware,
    Receive,
    Scope,
    Send,
)
from classifier.serving.oip import InferenceRequest
from classifier.serving.routes import health, metrics, model, predict, v2_health, v2_models
from classifier.serving.runtime import LiteRTModel, ModelLoadError
from classifier.serving.schemas import PredictJSONRequest
from classifier.serving.settings import MiB, Settings
from classifier.serving.state import ServiceState

log = logging.getLogger("classifier.serving")

DESCRIPTION = """\
Classifies electroluminescence images of solar cells (ELPV) as functional or defective.

`POST /v1/predict` takes one or several images as multipart (`files` parts) or as JSON with
base64 data; every error is a JSON body with a stable `code` (see docs/serving.md).

`/v2/...` is the Open Inference Protocol (KServe v2 REST), for KServe, Triton and Seldon
clients: `POST /v2/models/{name}/infer` takes encoded images (BYTES input `image`) or
preprocessed rows (FP32 input `input`); errors there are `{"error": "..."}`.
"""


def _too_large(declared: int, limit: int) -> ASGIApp:
    message = (
        f"request body is {declared} bytes, over the limit of {limit} bytes "
        "(CLASSIFIER_MAX_UPLOAD_BYTES); send fewer or smaller images per request"
    )

    async def respond(scope: Scope, receive: Receive, send: Send) -> None:
        v2 = is_v2(str(scope.get("path", "")))
        await error_response(413, PayloadTooLarge.code, message, v2=v2)(scope, receive, send)

    return respond


async def _load_model(service: ServiceState) -> None:
    """Load off the event loop, so /livez answers and /readyz says 503 while this runs."""
    try:
        await asyncio.to_thread(service.model.load)
    except ModelLoadError as exc:
        service.load_error = str(exc)
        log.error("model failed to load; the service will stay unready", extra={"error": str(exc)})
        return
    card = service.model.card
    service.metrics.model_info.labels(
        card.name, card.version, card.git_revision, card.data_hash
    ).set(1)
    service.metrics.model_ready.set(1)
    service.metrics.model_load_seconds.set(service.model.load_seconds or 0.0)


def _document_raw_bodies(app: FastAPI) -> None:
    """Add the schemas of bodies that routes parse themselves (to map every failure to their
    own errors) to the OpenAPI components their request bodies refer to."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for body in (PredictJSONRequest, InferenceRequest):
                schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[body.__name__] = schema
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    threads = settings.threads
    metrics_ = Metrics()
    # The largest model call: a micro-batch, or one request's images (with batching off, and a
    # request larger than a micro-batch is never split); the warm-up plans the arena for it.
    largest_call = max(settings.max_batch_size, settings.max_images_per_request)
    model_ = LiteRTModel(settings.model_dir, threads=settings.model_threads, max_batch=largest_call)
    admission = Admission(
        limit=max_in_flight_for(settings),
        timeout_s=settings.request_timeout_s,
        registry=metrics_.registry,
        max_lag_s=settings.max_loop_lag_ms / 1000 or None,
    )
    service = ServiceState(
        settings=settings,
        metrics=metrics_,
        model=model_,
        predictor=Predictor(
            model_,
            metrics_,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_batch_wait_ms,
            max_queue=admission.limit,
        ),
        decode_pool=ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode"),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Thread pools are made per run of the lifespan, so the app can be started again.
        service.decode_pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")
        log_mode(settings)
        memory_limit = settings.memory_limit_bytes
        log.info(
            "backpressure: at most %d predict requests in flight, %g s each, none while "
            "the event loop lags over %g ms",
            admission.limit,
            admission.timeout_s,
            settings.max_loop_lag_ms,
            extra={
                "max_in_flight": admission.limit,
                "request_timeout_s": admission.timeout_s,
                "memory_limit_mib": None if memory_limit is None else memory_limit // MiB,
                "request_mib": request_bytes(settings) // MiB,
                "decode_pool_mib": decode_pool_bytes(settings) // MiB,
            },
        )
        service.predictor.start()
        watching = asyncio.create_task(admission.watch_lag(), name="watch-loop-lag")
        loading = asyncio.create_task(_load_model(service), name="load-model")
        app.state.loading = loading
        try:
            yield
        finally:
            # uvicorn gets here after in-flight requests finished (graceful shutdown).
            watching.cancel()
            await loading
            await service.predictor.stop()
            service.model.close()
            service.decode_pool.shutdown(wait=True)
            log.info("service stopped")

    app = FastAPI(
        title="ELPV solar-cell defect classifier",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.admission = admission
    install_error_handlers(app)
    for router in (
        health.router,
        model.router,
        predict.router,
        metrics.router,
        v2_health.router,
        v2_models.router,
    ):
        app.include_router(router)
    _document_raw_bodies(app)
    # Innermost: the inference routes without FastAPI's per-request machinery (direct.py).
    inference_routes = [*predict.router.routes, *v2_models.router.routes]
    app.add_middleware(
        DirectRoutes,
        routes=[
            r
            for r in inference_routes
            if isinstance(r, APIRoute) and r.endpoint in (predict.predict, v2_models.infer)
        ],
        handlers=app.exception_handlers,
    )
    # Last added runs first. The deadline runs inside the observability middleware, so a
    # request past it is logged and counted like any other; the admission gate runs before
    # everything, so a refusal costs as little as possible (it counts itself).
    app.add_middleware(DeadlineMiddleware, admission=admission, metrics=metrics_)
    app.add_middleware(
        ObservabilityMiddleware,
        metrics=metrics_,
        max_body_bytes=settings.max_upload_bytes,
        too_large=_too_large,
    )
    app.add_middleware(AdmissionGate, admission=admission, metrics=metrics_)
    return app
