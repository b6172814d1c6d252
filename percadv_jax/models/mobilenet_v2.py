"""MobileNetV2 (Sandler et al. 2018) in flax.linen, layer for layer Keras' ``MobileNetV2``.

Same channel counts (width multiplier ``width`` = Keras' ``alpha`` with Keras' ``_make_divisible``
rules), ReLU6, BatchNorm (epsilon 1e-3, momentum 0.999), Keras' asymmetric zero padding before
every stride-2 depthwise convolution, a last 1x1 convolution of 1280 channels (scaled when
``width > 1``), global average pooling and a Dense head of ``num_classes`` logits (no softmax).
Preprocessing is inside: inputs are RGB in [0, 1] and become ``x * 2 - 1`` (Keras' "tf" mode).
Submodules carry Keras' layer names ("Conv1", "block_3_expand_BN", "predictions", ...).

Taps (see ``percadv_jax.models.common.tap``): "Conv1_relu", "block_0" ... "block_16" (the output of
each inverted-residual block, after the residual add) and "out_relu" (the last convolution after
ReLU6, the default CAM layer: 7x7 at 224 px input).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from percadv_jax import checks
from percadv_jax.models.common import tap
from percadv_jax.models.layers import compute_input, conv_fn, stride2_pad

# (filters, stride, expansion) of Keras' 17 inverted-residual blocks, block_id 0..16.
BLOCKS: tuple[tuple[int, int, int], ...] = (
    (16, 1, 1),
    (24, 2, 6), (24, 1, 6),
    (32, 2, 6), (32, 1, 6), (32, 1, 6),
    (64, 2, 6), (64, 1, 6), (64, 1, 6), (64, 1, 6),
    (96, 1, 6), (96, 1, 6), (96, 1, 6),
    (160, 2, 6), (160, 1, 6), (160, 1, 6),
    (320, 1, 6),
)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
  """Keras' ``_make_divisible``: rounds ``v`` to a multiple of ``divisor`` (never < 90% of v)."""
  if min_value is None:
    min_value = divisor
  new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v:
    new_v += divisor
  return new_v


def channel_plan(width: float) -> dict:
  """Channel counts of Keras' MobileNetV2 for ``alpha = width``.

  Returns:
    dict with "first" (Conv1 filters), "blocks" (list of (in, expanded, out, stride) per block)
    and "last" (Conv_1 filters).
  """
  first = make_divisible(32 * width, 8)
  blocks = []
  c = first
  for i, (filters, stride, expansion) in enumerate(BLOCKS):
    out = make_divisible(int(filters * width), 8)
    expanded = expansion * c if i else c
    blocks.append((c, expanded, out, stride))
    c = out
  last = make_divisible(1280 * width, 8) if width > 1.0 else 1280
  return {"first": first, "blocks": blocks, "last": last}


def _relu6(x: jax.Array) -> jax.Array:
  return jnp.clip(x, 0.0, 6.0)


class MobileNetV2(nn.Module):
  """MobileNetV2 classifier; ``apply(variables, x, train=False) -> logits [N, num_classes]``.

  Attributes:
    num_classes: number of logits of the Dense head ("predictions").
    width: Keras' ``alpha`` (0.35 ... 1.4 for ImageNet weights; any value > 0 works).
    conv_impl: how convolutions are computed (``layers.CONV_IMPLS``): "auto" (default: on CPU
      depthwise and 1x1 convolutions as ``layers.conv_patches``, the others XLA's; XLA's
      elsewhere), "xla" (XLA's convolution) or "patches" (dense convolutions as im2col patches
      times a matrix with a custom VJP, depthwise ones as shifted multiply-adds); same
      parameters and the same values up to float32 rounding.
  Input: float [N, H, W, 3] RGB in [0, 1], H, W >= 32. Output: float32 logits (bfloat16 when
  the inputs and variables are, as under ``percadv_jax.precision``: ``layers.compute_input``).
  """
  num_classes: int
  width: float = 1.0
  conv_impl: str = "auto"
  cam_layer: ClassVar[str] = "out_relu"

  def _bn(self, name: str, train: bool) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.999, epsilon=1e-3, name=name)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    checks.check_images(x, "x")
    if x.shape[1] < 32 or x.shape[2] < 32:
      raise ValueError(f"MobileNetV2 needs inputs of at least 32x32 pixels, got shape "
                       f"{tuple(x.shape)}")
    plan = channel_plan(self.width)
    conv = conv_fn(self.conv_impl)
    x = compute_input(x) * 2.0 - 1.0
    pad = (stride2_pad(x.shape[1]), stride2_pad(x.shape[2]))
    x = nn.Conv(plan["first"], (3, 3), strides=(2, 2), padding=pad, use_bias=False,
                conv_general_dilated=conv, name="Conv1")(x)
    x = _relu6(self._bn("bn_Conv1", train)(x))
    x = tap(self, "Conv1_relu", x)
    for i, (c_in, expanded, c_out, stride) in enumerate(plan["blocks"]):
      inputs = x
      prefix = f"block_{i}_" if i else "expanded_conv_"
      if i:
        x = nn.Conv(expanded, (1, 1), use_bias=False, conv_general_dilated=conv,
                    name=f"{prefix}expand")(x)
        x = _relu6(self._bn(f"{prefix}expand_BN", train)(x))
      if stride == 2:
        pad = (stride2_pad(x.shape[1]), stride2_pad(x.shape[2]))
      else:
        pad = ((1, 1), (1, 1))
      x = nn.Conv(expanded, (3, 3), strides=(stride, stride), padding=pad,
                  feature_group_count=expanded, use_bias=False, conv_general_dilated=conv,
                  name=f"{prefix}depthwise")(x)
      x = _relu6(self._bn(f"{prefix}depthwise_BN", train)(x))
      x = nn.Conv(c_out, (1, 1), use_bias=False, conv_general_dilated=conv,
                  name=f"{prefix}project")(x)
      x = self._bn(f"{prefix}project_BN", train)(x)
      if c_in == c_out and stride == 1:
        x = inputs + x
      x = tap(self, f"block_{i}", x)
    x = nn.Conv(plan["last"], (1, 1), use_bias=False, conv_general_dilated=conv,
                name="Conv_1")(x)
    x = _relu6(self._bn("Conv_1_bn", train)(x))
    x = tap(self, "out_relu", x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="predictions")(x)
