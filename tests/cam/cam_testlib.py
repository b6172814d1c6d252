"""Shared by the cam tests: a tiny tapped CNN and a compile-free initialiser."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax.models.common import tap


class TinyCNN(nn.Module):
  """conv -> tap -> conv -> tap -> GAP -> Dense (so CAM applies to "features")."""
  num_classes: int = 5
  channels: int = 8
  cam_layer: str = "features"

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Conv(6, (3, 3), name="c1")(x))
    x = tap(self, "conv1", x)
    x = nn.Conv(self.channels, (3, 3), strides=2, name="c2")(x)
    x = tap(self, "features", nn.relu(x) - 0.05)   # some negative activations
    return nn.Dense(self.num_classes, name="head")(x.mean(axis=(1, 2)))


def numpy_init(module, x, seed=0):
  """Variables of ``module`` for inputs like ``x``, filled with NumPy (LeCun-normal kernels, zero
  biases, unit scales/variances): shapes come from ``jax.eval_shape``, so nothing is compiled
  (``module.init`` compiles one random kernel per parameter shape, slow on a busy CPU)."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = str(path[-1].key)
    if name == "kernel":
      fan_in = int(np.prod(s.shape[:-1]))
      return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(fan_in), s.dtype)
    if name in ("scale", "var"):
      return jnp.ones(s.shape, s.dtype)
    return jnp.zeros(s.shape, s.dtype)

  return jax.tree_util.tree_map_with_path(fill, flax.core.unfreeze(shapes))
