"""One router per resource: health (probes), model (metadata), predict, metrics, and the Open
Inference Protocol's v2_health (server) and v2_models (model metadata, readiness, inference).

Importing this package first makes FastAPI's pydantic.v1 check lazy (pydantic_v1_check.py),
before any route here is declared."""

from classifier.serving import pydantic_v1_check as _pydantic_v1_check  # noqa: F401
