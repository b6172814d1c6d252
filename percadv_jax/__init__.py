"""percadv_jax: perceptual adversarial examples, CAMs and foreground attention masks in JAX.

Subpackages: ``models``, ``attacks``, ``perceptual``, ``cam``, ``data``, ``train``; modules
``parallel`` (sharded evaluation over devices and hosts) and ``compiler`` (``compiler.jit``:
``jax.jit`` with the XLA options measured best on CPU). Images everywhere are float32 NHWC RGB in
[0, 1]; preprocessing lives inside models.
"""

__version__ = "0.1.0"
