"""A tiny CNN (conv + BatchNorm + dense) and a deterministic toy dataset for the sharding tests.

Shared by the in-process tests and the subprocess scripts (8 CPU devices; two processes).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax.models.common import tap

NUM_CLASSES = 4
SIZE = 8


class TinyCNN(nn.Module):
  """[N,H,W,3] in [0,1] -> logits [N,num_classes]; BatchNorm so train mode updates batch_stats."""
  num_classes: int = NUM_CLASSES
  cam_layer = "features"

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = (x - 0.5) * 2.0
    x = nn.Conv(8, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x)
    x = nn.Conv(8, (3, 3))(x)
    x = nn.relu(x)
    x = tap(self, "features", x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


def toy_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
  """n images whose class sets the mean colour: {"image","mask","label"} (numpy, float32/int32)."""
  rng = np.random.default_rng(seed)
  label = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
  colours = np.array([[0.8, 0.2, 0.2], [0.2, 0.8, 0.2], [0.2, 0.2, 0.8], [0.7, 0.7, 0.2]],
                     np.float32)
  image = colours[label][:, None, None, :] + 0.15 * rng.standard_normal((n, SIZE, SIZE, 3))
  image = np.clip(image, 0.0, 1.0).astype(np.float32)
  mask = np.zeros((n, SIZE, SIZE, 1), np.float32)
  mask[:, 2:6, 2:6] = 1.0
  return {"image": image, "mask": mask, "label": label}


def init_variables(seed: int = 0):
  module = TinyCNN()
  variables = jax.jit(lambda k: module.init(k, jnp.zeros((1, SIZE, SIZE, 3)), train=False))(
      jax.random.PRNGKey(seed))
  return module, variables
