"""Shared test settings: CPU only, float32, Keras on the JAX backend, quiet progress bars, XLA's
default fusion emitters."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("PERCADV_QUIET", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite is bound by XLA compile time, and XLA's default fusion emitters compile about 1.7x
# faster than the older ones that percadv_jax.compiler.OPTIONS selects for speed at run time
# (same values up to float rounding). Naming the option here leaves it to XLA's default in the
# tests and in the binaries they start; tests/test_compiler.py checks the shipped options.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
