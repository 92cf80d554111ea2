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
import json
import logging
import math
import time
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
from classifier.serving.observability import (
    REQUEST_ID_HEADER,
    ASGIApp,
    Message,
    Metrics,
    Receive,
    Scope,
    Send,
    new_request_id,
)
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


# How often the event loop's lag is sampled (a timer that should fire every this many seconds).
LAG_SAMPLE_S = 0.05


@dataclass
class Admission:
    """The slots, the event loop's lag and their metrics; one per app, shared by the
    middleware and the lifespan (which runs `watch_lag`)."""

    limit: int
    timeout_s: float
    registry: CollectorRegistry
    # Refuse new requests while the event loop runs this far behind (None: never).
    max_lag_s: float | None = None
    in_flight: int = 0
    lag_s: float = 0.0
    _next_sample: float = math.inf  # time.monotonic() of the watcher's next wake-up
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
        Gauge(
            "classifier_event_loop_lag_seconds",
            "How late the event loop ran its last timer: how long a request that arrives now "
            "waits before the server even reads it.",
            registry=self.registry,
        ).set_function(lambda: self.lag_s)

    @property
    def saturated(self) -> bool:
        return self.in_flight >= self.limit

    @property
    def lagging(self) -> bool:
        """The loop runs late: its last sample said so, or the next sample is overdue by more
        than `max_lag_s` now (a stall in progress, before the sample can say so)."""
        if self.max_lag_s is None:
            return False
        overdue = time.monotonic() - self._next_sample
        return max(self.lag_s, overdue) > self.max_lag_s

    def acquire(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        self._gauge.set(self.in_flight)
        return True

    def release(self) -> None:
        self.in_flight -= 1
        self._gauge.set(self.in_flight)

    async def watch_lag(self) -> None:
        """Sample the event loop's lag until cancelled: sleep `LAG_SAMPLE_S`, see how late the
        wake-up came. Under sustained overload every sample is late, so the refusals go on
        until the loop has caught up."""
        try:
            while True:
                self._next_sample = time.monotonic() + LAG_SAMPLE_S
                await asyncio.sleep(LAG_SAMPLE_S)
                self.lag_s = max(0.0, time.monotonic() - self._next_sample)
        finally:
            self._next_sample = math.inf


# The route label of requests refused before routing (bounded cardinality, unlike the path).
REFUSED_ROUTE = "refused"
_REFUSED_ROUTE = SimpleNamespace(path=REFUSED_ROUTE)
# At most one log line about refusals per this many seconds (a line per refusal would cost
# more than the refusal itself, and flood the logs exactly when the service is busiest).
REFUSAL_LOG_INTERVAL_S = 10.0


def _limited(scope: Scope) -> bool:
    return bool(scope["type"] == "http" and scope.get("method") == "POST")


def _overloaded_message(limit: int) -> str:
    return (
        f"the server is at its limit of {limit} requests in flight "
        "(CLASSIFIER_MAX_IN_FLIGHT); retry after the Retry-After delay"
    )


def _bodies(message: str) -> tuple[bytes, bytes]:
    """A refusal's bodies rendered once: the native one up to the request id, and the Open
    Inference Protocol's."""
    native = json.dumps({"code": Overloaded.code, "message": message}, separators=(",", ":"))
    return (
        native[:-1].encode() + b',"request_id":"',
        json.dumps({"error": message}, separators=(",", ":")).encode(),
    )


class AdmissionGate:
    """The outermost layer: a slot for every POST, or a 503 `overloaded` at once.

    A refusal must cost far less than a served request, or under overload the one event loop
    spends its core refusing, requests queue in the socket before they can even be refused,
    and the admitted ones wait behind them (docs/serving.md, "Backpressure"). So the refusal
    runs before any other middleware, reads nothing but the method and path, and sends a body
    rendered when the app was built (only the request id is filled in). It is still counted
    (`classifier_http_requests_total{route="refused"}`, `classifier_errors_total{code=
    "overloaded"}`, the latency histogram), and logged as one summary line at most every
    `REFUSAL_LOG_INTERVAL_S` instead of an access-log line each.

    It also refuses while the event loop runs more than `max_lag_s` behind, free slots or
    not: a request read now has already waited about that long, and one admitted now would wait
    that long again at each step of its way through the loop. Refusing (cheap) instead of
    serving (dear) lets the loop catch up, so the requests it admits keep a bounded latency
    even when the process gets less CPU than the load needs (the Fastify `under-pressure`
    plug-in sheds on the same signal).

    The admitted request keeps its slot until the whole stack inside (observability, deadline,
    routes) has returned, so the slot covers the response being sent.
    """

    def __init__(self, app: ASGIApp, *, admission: Admission, metrics: Metrics) -> None:
        self.app = app
        self.admission = admission
        self._limit_bodies = _bodies(_overloaded_message(admission.limit))
        self._lag_bodies = _bodies(
            f"the server is too busy to answer in time (its event loop runs more than "
            f"{(admission.max_lag_s or 0) * 1000:g} ms behind, CLASSIFIER_MAX_LOOP_LAG_MS); "
            "retry after the Retry-After delay"
        )
        self._counted = metrics.requests.labels("POST", REFUSED_ROUTE, "503")
        self._latency = metrics.request_latency.labels("POST", REFUSED_ROUTE, "503")
        self._errors = metrics.errors.labels(Overloaded.code)
        self._refused_since_log = 0
        self._last_log = -math.inf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _limited(scope):
            await self.app(scope, receive, send)
            return
        admission = self.admission
        if admission.lagging:
            await self._refuse(scope, send, self._lag_bodies)
            return
        if not admission.acquire():
            await self._refuse(scope, send, self._limit_bodies)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            admission.release()

    async def _refuse(self, scope: Scope, send: Send, bodies: tuple[bytes, bytes]) -> None:
        started = time.perf_counter()
        request_id = new_request_id()
        native_head, v2_body = bodies
        if is_v2(scope.get("path", "")):
            body = v2_body
        else:
            body = native_head + request_id.encode() + b'"}'
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", b"1"),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        self._counted.inc()
        self._errors.inc()
        self._latency.observe(time.perf_counter() - started)
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._last_log >= REFUSAL_LOG_INTERVAL_S:
            log.warning(
                "overloaded: refused %d predict requests since the last report (limit %d in "
                "flight, event loop %.0f ms behind)",
                self._refused_since_log,
                self.admission.limit,
                self.admission.lag_s * 1000,
                extra={
                    "refused": self._refused_since_log,
                    "max_in_flight": self.admission.limit,
                    "loop_lag_ms": round(self.admission.lag_s * 1000, 1),
                },
            )
            self._refused_since_log = 0
            self._last_log = now


class DeadlineMiddleware:
    """The deadline of every admitted POST, inside the observability middleware (so a
    `deadline_exceeded` answer is logged and counted like any other response)."""

    def __init__(self, app: ASGIApp, *, admission: Admission, metrics: Metrics) -> None:
        self.app = app
        self.admission = admission
        self.metrics = metrics

    async def _refuse(
        self, error: ServiceError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.metrics.errors.labels(error.code).inc()
        # Label it `route="refused"` in the access log and metrics (the request may not have
        # reached routing), rather than `unmatched`, which means an unknown path.
        scope.setdefault("route", _REFUSED_ROUTE)
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
        timeout_s = self.admission.timeout_s
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        deadline = asyncio.timeout(timeout_s)
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
                    f"the request did not finish within {timeout_s:g} s "
                    "(CLASSIFIER_REQUEST_TIMEOUT_S): the server is busy, or the upload was too "
                    "slow; retry later, or send fewer images per request",
                    headers={"Retry-After": "1"},
                ),
                scope,
                receive,
                send,
            )
