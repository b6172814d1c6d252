"""Flax image classifiers: MobileNetV2 and VGG-19 (Keras-compatible), a registry, and taps.

- ``get_model(name, *, num_classes, **kw)``: "mobilenet_v2" (``width`` = Keras' alpha) or
  "vgg19" (``width``, ``variant="imagenet"|"small"``, ``batch_norm``).
- Inputs: float32 NHWC RGB in [0, 1]; preprocessing is inside every model.
- ``module.apply(variables, x, train=False)`` -> logits; training:
  ``module.apply(variables, x, train=True, mutable=["batch_stats"])``.
- Named feature maps ("taps"): ``module.apply(variables, x, mutable=["intermediates"])``; each
  class's ``cam_layer`` names its default CAM layer.
- ``load_keras_weights(name, path)`` -> ``(module, variables)`` from Keras ``.h5`` /
  ``.weights.h5`` files of ``keras.applications.MobileNetV2`` / ``VGG19`` (h5py only).
- ``random_variables(module, x, seed=)``: NumPy-drawn weights without compiling ``init``.
"""

from percadv_jax.models.common import tap
from percadv_jax.models.init import random_variables
from percadv_jax.models.keras_weights import load_keras_weights
from percadv_jax.models.layers import max_pool_2x2
from percadv_jax.models.mobilenet_v2 import MobileNetV2
from percadv_jax.models.registry import MODELS, get_model
from percadv_jax.models.vgg import VGG19

__all__ = ["MODELS", "MobileNetV2", "VGG19", "get_model", "load_keras_weights", "max_pool_2x2",
           "random_variables", "tap"]
