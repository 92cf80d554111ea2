"""Open Inference Protocol: server liveness, readiness and metadata (`/v2`, `/v2/health/*`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from classifier.serving import __version__
from classifier.serving.oip import EXTENSIONS, ServerLive, ServerMetadata, ServerReady
from classifier.serving.state import Service

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

SERVER_NAME = "elpv-classifier"
_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ServerReady, "description": "the model is loading, or failed to load"}
}


@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)


@router.get("/health/live", response_model=ServerLive, summary="Liveness (as /livez)")
async def live() -> ServerLive:
    return ServerLive(live=True)


@router.get(
    "/health/ready",
    response_model=ServerReady,
    summary="Readiness: 200 once the model is loaded and warmed up (as /readyz), 503 before",
    responses=_NOT_READY,
)
async def ready(service: Service) -> ServerReady | JSONResponse:
    if service.model.ready:
        return ServerReady(ready=True)
    return JSONResponse(ServerReady(ready=False).model_dump(), status_code=503)
