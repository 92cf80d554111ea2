"""Probes. Liveness says the process answers; readiness says the model is loaded and warmed."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from classifier.serving.schemas import Liveness, Readiness
from classifier.serving.state import Service

router = APIRouter(tags=["health"])


@router.get("/livez", response_model=Liveness, summary="Liveness: the process answers")
async def livez() -> Liveness:
    # Deliberately checks nothing else: a slow model load must not get the pod restarted.
    return Liveness()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: 200 once the model is loaded and warmed up, 503 before",
    responses={503: {"model": Readiness, "description": "loading, or the model failed to load"}},
)
async def readyz(service: Service) -> Readiness | JSONResponse:
    model = service.model
    if model.ready:
        return Readiness(ready=True, model_version=model.card.version)
    reason = (
        f"model failed to load: {service.load_error}"
        if service.load_error
        else "loading and warming up the model"
    )
    return JSONResponse(Readiness(ready=False, reason=reason).model_dump(), status_code=503)
