"""The inference service: FastAPI + LiteRT, no TensorFlow.

Start it with `python -m classifier.serving` (or `classifier-serve`); see docs/serving.md.
"""

__version__ = "1.0.0"
