"""Small building blocks shared by the models: fast max pooling and Keras-style padding."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2 and "valid" padding, as reshape + max.

  Same values as ``flax.linen.max_pool(x, (2, 2), strides=(2, 2))`` (and Keras'
  ``MaxPooling2D((2, 2))``: an odd trailing row/column is dropped), but its gradient is a cheap
  elementwise mask instead of XLA's ``select_and_scatter``, which on CPU costs ~50x the forward
  pass. With ties inside a window the gradient is split equally among the tied maxima.

  Args:
    x: float [N, H, W, C], H, W >= 2.
  Returns:
    [N, H // 2, W // 2, C].
  """
  n, h, w, c = x.shape
  h2, w2 = h // 2, w // 2
  x = x[:, :2 * h2, :2 * w2, :]
  return jnp.max(x.reshape(n, h2, 2, w2, 2, c), axis=(2, 4))


def stride2_pad(size: int, kernel: int = 3) -> tuple[int, int]:
  """Keras' ``imagenet_utils.correct_pad`` for one spatial axis of a stride-2 convolution.

  Returns ``(before, after)`` zero padding: ``(k//2 - 1, k//2)`` for even ``size`` and
  ``(k//2, k//2)`` for odd ``size`` — identical to TensorFlow's "SAME" padding at stride 2.
  """
  adjust = 1 - size % 2
  return (kernel // 2 - adjust, kernel // 2)
