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


async def _service(request: Request) -> ServiceState:
    # `async` on purpose: FastAPI runs a plain `def` dependency in its thread pool, which
    # cost a thread hop per request (found by profiling the predict path).
    state: ServiceState = request.app.state.service
    return state


Service = Annotated[ServiceState, Depends(_service)]
