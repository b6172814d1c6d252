"""Shared test settings: CPU only, float32, Keras on the JAX backend, quiet progress bars."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("PERCADV_QUIET", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
