"""One router per resource: health (probes), model (metadata), predict, metrics, and the Open
Inference Protocol's v2_health (server) and v2_models (model metadata, readiness, inference)."""
