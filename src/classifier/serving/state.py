"""What the routes share, kept on `app.state.service` and reached through a dependency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from classifier.serving.batching import Predictor
from classifier.serving.observability import Metrics
from classifier.serving.runtime import LiteRTModel
from classifier.serving.settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    model: LiteRTModel
    predictor: Predictor
    # Decoding + preprocessing run here, off the event loop, in parallel with inference.
    decode_pool: ThreadPoolExecutor
    load_error: str | None = field(default=None)


def service_of(request: Request) -> ServiceState:
    """The service state, for routes on the inference path: they call this (and
    `auth.require_token`) themselves rather than declaring dependencies, because FastAPI's
    dependency solving was a fifth of the event loop's CPU per request (docs/serving.md)."""
    state: ServiceState = request.app.state.service
    return state


async def _service(request: Request) -> ServiceState:
    # `async` on purpose: FastAPI runs a plain `def` dependency in its thread pool, which
    # cost a thread hop per request (found by profiling the predict path).
    return service_of(request)


Service = Annotated[ServiceState, Depends(_service)]
