"""Backpressure: a bound on the predict work in flight, and a deadline for each request.

Every POST (the inference routes; probes, metrics and the model card are GETs and never wait
here) takes a slot before it reaches the app. With all slots taken the request is refused at
once with 503 `overloaded` and `Retry-After`, before a byte of its body is read: under
overload the service answers fewer requests at a bounded latency instead of queueing all of
them until the pod runs out of memory. An admitted request has `REQUEST_TIMEOUT_S` from
admission to response (body upload included, so a slow sender cannot hold a slot for long);
past it the client gets 503 `deadline_exceeded` and the request's work still queued (images
not yet decoding, rows waiting for the batcher) is dropped. An image already decoding on a
pool thread finishes, which the pool size and the pixel limit bound.

The slot count comes from the memory limit (`max_in_flight_for`): each admitted request may
hold its body twice over, each decode-pool thread one image at the pixel limit, on top of the
memory of a ready, idle server. docs/serving.md ("Backpressure") has the derivation and the
load test that checks it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Gauge

from classifier.serving.errors import (
    DeadlineExceeded,
    Overloaded,
    ServiceError,
    error_response,
    is_v2,
)
from classifier.serving.observability import ASGIApp, Message, Metrics, Receive, Scope, Send
from classifier.serving.settings import MiB, Settings

log = logging.getLogger("classifier.serving")

# A ready, idle server (interpreter, FastAPI, LiteRT with its arena at the largest batch)
# plus allocator slack; docs/serving.md "Backpressure" shows the measured figure it covers.
BASELINE_BYTES = 160 * MiB
# One admitted request holds at most its body twice: the received bytes and the images
# parsed out of them (multipart parts stay in memory; JSON base64 is decoded image by image).
BODY_COPIES = 2
# One image being decoded, per pixel at the pixel limit, worst mode: a palette image with
# transparency is composited on black through three RGBA copies (4 bytes each) plus the
# 8-bit original and result (1 each): 14, rounded up.
DECODE_BYTES_PER_PIXEL = 16
# Without a known memory limit (a laptop, a test), this many requests in flight.
UNBOUNDED_DEFAULT = 16
# Never more than this, whatever the memory allows: past it, latency, not memory, is the limit.
MAX_SLOTS = 256


def request_bytes(settings: Settings) -> int:
    """Most memory one admitted request holds outside the decode pool."""
    return BODY_COPIES * settings.max_upload_bytes


def decode_pool_bytes(settings: Settings) -> int:
    """Most memory the decode pool holds: every thread decoding an image at the pixel limit."""
    return settings.threads * DECODE_BYTES_PER_PIXEL * settings.max_image_pixels


def max_in_flight_for(settings: Settings) -> int:
    """The explicit setting, else what the memory limit holds, else `UNBOUNDED_DEFAULT`.

    slots = (memory limit - baseline - decode pool) // (2 x MAX_UPLOAD_BYTES), in [1, 256].
    """
    if settings.max_in_flight is not None:
        return settings.max_in_flight
    limit = settings.memory_limit_bytes
    if limit is None:
        return UNBOUNDED_DEFAULT
    budget = limit - BASELINE_BYTES - decode_pool_bytes(settings)
    slots = math.floor(budget / request_bytes(settings))
    if slots < 1:
        log.warning(
            "the memory limit does not hold one request of the largest allowed size; lower "
            "CLASSIFIER_MAX_UPLOAD_BYTES, CLASSIFIER_MAX_IMAGE_PIXELS or the decode threads, "
            "or raise the pod's memory limit",
            extra={"memory_limit_mib": limit // MiB, "budget_mib": budget // MiB},
        )
    return max(1, min(MAX_SLOTS, slots))


@dataclass
class Admission:
    """The slots and their metrics; one per app, shared by the middleware and the routes."""

    limit: int
    timeout_s: float
    registry: CollectorRegistry
    in_flight: int = 0
    _gauge: Gauge = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._gauge = Gauge(
            "classifier_admission_in_flight",
            "Predict requests admitted and not finished (at most classifier_admission_limit).",
            registry=self.registry,
        )
        Gauge(
            "classifier_admission_limit",
            "Predict requests served at once; beyond it requests get 503 overloaded.",
            registry=self.registry,
        ).set(self.limit)

    @property
    def saturated(self) -> bool:
        return self.in_flight >= self.limit

    def acquire(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        self._gauge.set(self.in_flight)
        return True

    def release(self) -> None:
        self.in_flight -= 1
        self._gauge.set(self.in_flight)


# The route label of requests refused before routing (bounded cardinality, unlike the path).
_REFUSED_ROUTE = SimpleNamespace(path="refused")


def _set_route(scope: Scope) -> None:
    """Label a request refused before routing `route="refused"` in the access log and the
    request metrics (rather than `unmatched`, which means an unknown path)."""
    scope.setdefault("route", _REFUSED_ROUTE)


def _limited(scope: Scope) -> bool:
    return bool(scope["type"] == "http" and scope.get("method") == "POST")


class AdmissionMiddleware:
    """Slots and deadlines for POST requests (pure ASGI: runs before the body is read)."""

    def __init__(self, app: ASGIApp, *, admission: Admission, metrics: Metrics) -> None:
        self.app = app
        self.admission = admission
        self.metrics = metrics

    async def _refuse(
        self, error: ServiceError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.metrics.errors.labels(error.code).inc()
        _set_route(scope)
        # The Open Inference Protocol's routes answer with its error body, refusals included.
        v2 = is_v2(scope.get("path", ""))
        response = error_response(
            error.status_code, error.code, error.message, headers=error.headers, v2=v2
        )
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _limited(scope):
            await self.app(scope, receive, send)
            return
        admission = self.admission
        if not admission.acquire():
            await self._refuse(
                Overloaded(
                    f"the server is at its limit of {admission.limit} requests in flight "
                    "(CLASSIFIER_MAX_IN_FLIGHT); retry after the Retry-After delay",
                    headers={"Retry-After": "1"},
                ),
                scope,
                receive,
                send,
            )
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        deadline = asyncio.timeout(admission.timeout_s)
        try:
            async with deadline:
                await self.app(scope, receive, send_tracking)
        except TimeoutError:
            if not deadline.expired():  # raised by the app itself, not our deadline
                raise
            if started:  # the response is on its way; nothing sensible to add
                log.warning("request deadline passed while the response was being sent")
                return
            await self._refuse(
                DeadlineExceeded(
                    f"the request did not finish within {admission.timeout_s:g} s "
                    "(CLASSIFIER_REQUEST_TIMEOUT_S): the server is busy, or the upload was too "
                    "slow; retry later, or send fewer images per request",
                    headers={"Retry-After": "1"},
                ),
                scope,
                receive,
                send,
            )
        finally:
            admission.release()
