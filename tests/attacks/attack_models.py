"""Tiny Flax models and a separable synthetic task for the attack tests (no data/ dependency)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

NUM_CLASSES = 4
SIZE = 8


class TinyCNN(nn.Module):
  """conv3x3(8) - relu - 2x2 max pool (reshape + max) - conv3x3(16) - relu - mean - dense."""
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), padding="SAME")(x - 0.5))
    n, h, w, c = x.shape
    x = jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))
    x = nn.relu(nn.Conv(16, (3, 3), padding="SAME")(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


def synthetic_task(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Images [n, 8, 8, 3] in [0,1]: noise plus a brighter 4x4 quadrant; label = the quadrant."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
  x = rng.uniform(0.0, 0.6, (n, SIZE, SIZE, 3)).astype(np.float32)
  for i, c in enumerate(y):
    r, q = divmod(int(c), 2)
    x[i, 4 * r:4 * r + 4, 4 * q:4 * q + 4, :] += 0.25
  return np.clip(x, 0.0, 1.0), y


def init_variables(module: nn.Module, seed: int = 0):
  """He-normal kernels and small random biases drawn with NumPy.

  Same structure as ``module.init``; NumPy avoids compiling one threefry kernel per parameter
  shape, which costs seconds each on a busy 2-core machine.
  """
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
  rng = np.random.default_rng(seed)

  def draw(path, s):
    if path[-1].key == "kernel":
      fan_in = int(np.prod(s.shape[:-1]))
      return jnp.asarray(rng.normal(0.0, np.sqrt(2.0 / fan_in), s.shape), jnp.float32)
    return jnp.asarray(rng.normal(0.0, 0.1, s.shape), jnp.float32)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def random_model(seed: int = 0):
  """(module, variables, logits_fn) of an untrained TinyCNN."""
  module = TinyCNN()
  variables = init_variables(module, seed)
  return module, variables, jax.jit(lambda x: module.apply(variables, x))


@functools.lru_cache(maxsize=None)
def trained_model(steps: int = 300, seed: int = 0):
  """(module, variables, logits_fn, (x_test, y_test)) of a TinyCNN trained with Adam.

  Cached: the test modules of one session share the model (and its compiled logits_fn).
  """
  module = TinyCNN()
  x, y = synthetic_task(1024, seed)
  variables = init_variables(module, seed)
  opt = optax.adam(1e-2)
  state = opt.init(variables)

  @jax.jit
  def step(variables, state, xb, yb):
    def loss(v):
      return optax.softmax_cross_entropy_with_integer_labels(module.apply(v, xb), yb).mean()
    g = jax.grad(loss)(variables)
    upd, state = opt.update(g, state, variables)
    return optax.apply_updates(variables, upd), state

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(x), 128)
    variables, state = step(variables, state, x[idx], y[idx])
  x_test, y_test = synthetic_task(256, seed + 1)
  return module, variables, jax.jit(lambda x: module.apply(variables, x)), (x_test, y_test)


def torch_tiny_cnn(variables):
  """``TinyCNN`` in PyTorch (NCHW in, logits out, eval mode) with the Flax ``variables``.

  For golden comparisons with PyTorch attack libraries; torch is imported here, so importing
  this module needs no torch.
  """
  import torch
  from torch import nn

  p = variables["params"]

  def load(layer, name, transpose):
    layer.weight.data = torch.from_numpy(np.asarray(p[name]["kernel"]).transpose(*transpose)
                                         .copy())
    layer.bias.data = torch.from_numpy(np.asarray(p[name]["bias"]).copy())

  class Torch(nn.Module):
    def __init__(self):
      super().__init__()
      self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
      self.fc = nn.Linear(16, p["Dense_0"]["kernel"].shape[1])
      load(self.conv1, "Conv_0", (3, 2, 0, 1))
      load(self.conv2, "Conv_1", (3, 2, 0, 1))
      load(self.fc, "Dense_0", (1, 0))

    def forward(self, x):
      x = nn.functional.max_pool2d(torch.relu(self.conv1(x - 0.5)), 2)
      return self.fc(torch.relu(self.conv2(x)).mean(dim=(2, 3)))

  return Torch().eval()
