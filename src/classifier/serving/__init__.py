"""The inference service: FastAPI + LiteRT, no TensorFlow. Start with `python -m classifier.serving`."""

__version__ = "1.0.0"
