"""One router per resource: health (probes), model (metadata), predict, metrics."""
