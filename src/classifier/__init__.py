"""Solar-cell defect classifier: the DVC pipeline (`classifier.pipeline`) and the service
(`classifier.serving`). Modules at this level are shared by both and must not import TensorFlow."""
