"""Shared by the cam tests: a tiny tapped CNN and a compile-free initialiser."""

import flax.linen as nn

from percadv_jax.models import random_variables
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
  """LeCun-normal NumPy-filled variables (see percadv_jax.models.random_variables)."""
  return random_variables(module, x, seed=seed, gain=1.0)
