"""Model metadata: the model card exported with the model (version, data hash, metrics...)."""

from __future__ import annotations

from fastapi import APIRouter

from classifier.model_card import ModelCard
from classifier.serving.schemas import ErrorResponse
from classifier.serving.state import Service

router = APIRouter(prefix="/v1", tags=["model"])


@router.get(
    "/model",
    response_model=ModelCard,
    summary="The model card of the model being served",
    responses={503: {"model": ErrorResponse, "description": "the model is not loaded yet"}},
)
async def model_card(service: Service) -> ModelCard:
    return service.model.card  # raises ModelNotReady (503) before the model is loaded
