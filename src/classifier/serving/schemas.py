"""Request and response bodies: the public API, as the OpenAPI document shows it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body."""

    code: str = Field(description="stable machine-readable error code (see docs/serving.md)")
    message: str = Field(description="what is wrong and how to fix it")
    image: str | None = Field(default=None, description="which image of the request failed")
    request_id: str | None = Field(default=None, description="the X-Request-ID of the request")
    details: list[dict[str, Any]] | None = None


class Liveness(BaseModel):
    status: Literal["alive"] = "alive"


class Readiness(BaseModel):
    ready: bool
    model_version: str | None = None
    reason: str | None = None


class OutOfDistributionFlag(BaseModel):
    reason: Literal["small_image", "aspect_ratio", "near_constant", "value_range"] = Field(
        description="which test the input failed (docs/serving.md, 'Inputs the model was not "
        "trained for'); also the `reason` label of classifier_out_of_distribution_total"
    )
    message: str = Field(description="what was measured, against which limit")


class Prediction(BaseModel):
    image: str = Field(description="the upload's filename, the JSON item's name, or its index")
    probability: float = Field(ge=0.0, le=1.0, description="P(defective)")
    label: str = Field(description="defective when probability > the model card's threshold")
    model_version: str
    out_of_distribution: list[OutOfDistributionFlag] = Field(
        default_factory=list,
        description="why this image is unlike the training images (empty when it is not); "
        "treat the probability of a flagged image with suspicion",
    )


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model_version: str


class JSONImage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: str = Field(
        description="the image file's bytes (PNG, JPEG, TIFF, BMP, WebP, GIF), base64-encoded",
        min_length=1,
    )
    name: str | None = Field(default=None, max_length=256, description="echoed in the result")


class PredictJSONRequest(BaseModel):
    """JSON alternative to multipart for clients that cannot send files (gateways, browsers)."""

    model_config = ConfigDict(extra="forbid")

    images: list[JSONImage] = Field(min_length=1)
