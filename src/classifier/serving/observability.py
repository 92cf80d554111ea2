"""Request ids, structured JSON logs and Prometheus metrics.

One pure-ASGI middleware (cheaper than BaseHTTPMiddleware, and it sees streamed bodies) does, for
every HTTP request: take or make the X-Request-ID, cap the body size, time the request, count it
by route template and status, and write one JSON access-log line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from classifier.serving.ood import REASONS as OOD_REASONS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = "x-request-id"
# Accept a caller's id only if it is short and harmless in a log line; otherwise make one.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Probes and scrapes arrive every few seconds: log them only at debug level.
QUIET_PATHS = frozenset({"/livez", "/readyz", "/metrics"})

access_log = logging.getLogger("classifier.serving.access")


def current_request_id() -> str | None:
    return _request_id.get()


def new_request_id() -> str:
    """32 random hex digits, the shape of a uuid4's hex.

    Not `uuid.uuid4()`: it reads os.urandom, which releases the GIL around a syscall, and on a
    busy server the event loop then waits for a decode thread to hand the GIL back, once per
    request (docs/serving.md, "The event loop is the serial stage"). An id correlates log
    lines; it is no secret, so the process's seeded Mersenne Twister is enough.
    """
    return f"{random.getrandbits(128):032x}"


# ---------------------------------------------------------------------------------------------
# Logs


class JSONFormatter(logging.Formatter):
    """One JSON object per line: what log pipelines (Loki, Cloud Logging, ELK) parse natively."""

    _RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Handlers format synchronously in the logging call, so the context is the request's.
        request_id = current_request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in self._RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str) -> dict[str, Any]:
    """dictConfig for our loggers and uvicorn's: JSON to stdout. Passed to uvicorn.run()."""
    level = level.upper()
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JSONFormatter"}},
        "handlers": {"stdout": handler},
        "loggers": {
            "classifier": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            # Our middleware writes the access log (with request id and route); uvicorn's is off.
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


# ---------------------------------------------------------------------------------------------
# Metrics

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per app instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Resident memory, CPU seconds, open fds, GC: the soak test and dashboards read these.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter(
            "classifier_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "classifier_http_request_duration_seconds",
            "HTTP request latency by method, route template and status code.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "classifier_http_requests_in_flight", "HTTP requests being served.", registry=r
        )
        self.errors = Counter(
            "classifier_errors", "Error responses by error code.", ["code"], registry=r
        )
        self.inference_latency = Histogram(
            "classifier_inference_duration_seconds",
            "Model call latency (one call = one batch), excluding decoding and queueing.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "classifier_inference_batch_size",
            "Images per model call (micro-batches coalesce concurrent requests).",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.images_per_request = Histogram(
            "classifier_request_images",
            "Images per predict request.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "classifier_predictions", "Predicted labels (watch for drift).", ["label"], registry=r
        )
        self.out_of_distribution = Counter(
            "classifier_out_of_distribution",
            "Inputs unlike the training images, by reason (flagged or refused; one input can "
            "count under several reasons).",
            ["reason"],
            registry=r,
        )
        for reason in OOD_REASONS:  # every series exists from the start, at 0
            self.out_of_distribution.labels(reason)
        self.model_info = Gauge(
            "classifier_model_info",
            "The loaded model (value 1); labels identify it.",
            ["name", "version", "git_revision", "data_hash"],
            registry=r,
        )
        self.model_ready = Gauge(
            "classifier_model_ready", "1 when the model is loaded and warmed up.", registry=r
        )
        self.model_load_seconds = Gauge(
            "classifier_model_load_seconds", "Time to load and warm up the model.", registry=r
        )


# ---------------------------------------------------------------------------------------------
# Middleware


class BodyTooLarge(Exception):
    """Raised from `receive` once a streamed body passes the cap (mapped to 413 by errors.py)."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class ObservabilityMiddleware:
    """Request id, body cap, metrics and the access log for every HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        too_large: Callable[[int, int], ASGIApp],
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        # Builds the 413 response for a Content-Length over the cap (from errors.py, one format).
        self.too_large = too_large
        self._label_cache: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, REQUEST_ID_HEADER.encode())
        request_id = (
            incoming if incoming and _VALID_REQUEST_ID.match(incoming) else new_request_id()
        )
        token = _request_id.set(request_id)
        started = time.perf_counter()
        status = 500
        id_header = (REQUEST_ID_HEADER.encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            declared = _header(scope, b"content-length")
            declared_len = int(declared) if declared and declared.isdigit() else None
            if declared_len is not None and declared_len > self.max_body_bytes:
                # Refuse before reading a byte of the body.
                self.metrics.errors.labels("payload_too_large").inc()
                await self.too_large(declared_len, self.max_body_bytes)(
                    scope, receive, send_with_id
                )
                return
            await self.app(scope, self._capped(receive), send_with_id)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            count, latency = self._series(method, template, status)
            count.inc()
            latency.observe(elapsed)
            path = scope.get("path", "")
            level = logging.DEBUG if path in QUIET_PATHS and status < 400 else logging.INFO
            # The line's fields cost more than the check: build them only for a line written.
            if access_log.isEnabledFor(level):
                access_log.log(
                    level,
                    "%s %s %d",
                    method,
                    path,
                    status,
                    extra={
                        "method": method,
                        "path": path,
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                        "client": (scope.get("client") or ("", 0))[0],
                        "request_id": request_id,
                    },
                )
            _request_id.reset(token)

    def _series(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """The request counter and latency histogram of these labels, looked up once: the
        client's `labels()` takes a lock and validates on every call. The label set is bounded
        (methods x route templates x statuses), as the metrics themselves are."""
        key = (method, route, status)
        series = self._label_cache.get(key)
        if series is None:
            labels = (method, route, str(status))
            series = (
                self.metrics.requests.labels(*labels),
                self.metrics.request_latency.labels(*labels),
            )
            self._label_cache[key] = series
        return series

    def _capped(self, receive: Receive) -> Receive:
        limit = self.max_body_bytes
        seen = 0

        async def receive_capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"request body exceeds {limit} bytes")
            return message

        return receive_capped
