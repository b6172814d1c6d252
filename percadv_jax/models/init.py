"""Random variables for a model without compiling ``module.init``.

``module.init`` with threefry keys compiles one random kernel per parameter shape, which costs
tens of seconds for VGG-19 on a CPU. Benchmarks and tests that only need *some* weights of the
right structure use ``random_variables`` instead: shapes from ``jax.eval_shape`` (nothing is
compiled), values drawn with NumPy.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def random_variables(module: nn.Module, x: jax.Array, *, seed: int = 0,
                     gain: float = 2.0) -> dict[str, Any]:
  """Variables of ``module`` for inputs shaped like ``x`` ([N,H,W,C] float32), NumPy-filled.

  Kernels ~ N(0, gain / fan_in) (gain 2: He-normal, gain 1: LeCun-normal); BatchNorm scales and
  running variances 1; biases and running means 0. Deterministic in ``seed``.

  Returns:
    A dict of collections (``params``, and ``batch_stats`` where the model has BatchNorm) with
    float32 leaves, as ``module.init`` would return.
  """
  shapes = jax.eval_shape(module.init, jax.random.key(0), x[:1])
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = str(getattr(path[-1], "key", ""))
    if name == "kernel":
      fan_in = int(np.prod(s.shape[:-1]))
      return jnp.asarray(rng.normal(size=s.shape) * np.sqrt(gain / fan_in), s.dtype)
    if name in ("scale", "var"):
      return jnp.ones(s.shape, s.dtype)
    return jnp.zeros(s.shape, s.dtype)

  return jax.tree_util.tree_map_with_path(fill, flax.core.unfreeze(shapes))
