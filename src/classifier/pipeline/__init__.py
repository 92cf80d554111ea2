"""The DVC pipeline's stages (one module each) and what they share.

Importing the package pins TensorFlow's CPU kernels (`kernels.py`) before any stage module can
load TensorFlow: the same commit then trains the same weights on every supported host.
"""

from classifier.pipeline.kernels import pin_cpu_kernels

pin_cpu_kernels()
