"""Shared test settings: CPU only, float32, Keras on the JAX backend, quiet progress bars, XLA's
default fusion emitters, and one XLA compilation cache shared by the test processes of a run."""

import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("PERCADV_QUIET", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite is bound by XLA compile time, and XLA's default fusion emitters compile about 1.7x
# faster than the older ones that percadv_jax.compiler.OPTIONS selects for speed at run time
# (same values up to float rounding). Naming the option here leaves it to XLA's default in the
# tests and in the binaries they start; tests/test_compiler.py checks the shipped options.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
# The suite compiles the same programs in many processes (both xdist workers and every binary a
# test starts): JAX's persistent compilation cache, in a directory made by the controller
# process for this run (the workers and binaries inherit the variable), compiles each once.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="percadv-jax-xla-cache-")


def pytest_sessionfinish(session):
  if _OWN_CACHE and not hasattr(session.config, "workerinput"):  # the controller only
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

