"""VGG-19 (Simonyan & Zisserman 2015) in flax.linen: Keras' ``VGG19`` and a small-input variant.

``variant="imagenet"`` is layer for layer ``keras.applications.VGG19(include_top=True)``: 16 3x3
"same" convolutions with bias and ReLU in five blocks (64, 64 | 128, 128 | 256 x4 | 512 x4 |
512 x4 channels, times ``width``), a 2x2/stride-2 max pool after each block, flatten (in NHWC
order, as Keras), Dense "fc1" and "fc2" (``fc_features`` = 4096, ReLU) and Dense "predictions"
(logits, no softmax). Preprocessing inside is Keras' "caffe" mode: RGB -> BGR, ``x * 255`` minus
the ImageNet mean [103.939, 116.779, 123.68] (BGR order), no scaling. The flatten size depends on
the input size (``(H // 32) * (W // 32) * 512 * width``), so weights fix it: 224 px for ImageNet.

``variant="small"`` is the masks paper's model for 32-64 px inputs: the same 16-conv / 5-pool
layout with channels scaled by ``width`` (e.g. 0.25 -> 16, 32, 64, 128, 128), optional BatchNorm
after each convolution (``batch_norm=True``: conv without bias -> BN (eps 1e-3, momentum 0.99) ->
ReLU), global average pooling and one Dense "predictions" layer. Its preprocessing is a fixed
per-channel standardisation with the ImageNet RGB statistics,
``(x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]`` (Keras' "torch" mode), so inputs stay
RGB in [0, 1].

Initialisation (``initializer``): "lecun" (Flax's default: every kernel LeCun-normal, variance
1 / fan_in) or "he" (He et al. 2015 for the ReLU layers: every convolution and fc1 / fc2
He-normal, variance 2 / fan_in, the first convolution's variance divided further by the variance
of its inputs under the variant's preprocessing, ``INPUT_STD[variant] ** 2``, so its outputs start
as if the inputs were standardised; "predictions", which has no ReLU, LeCun-normal). Biases start
at zero in both. Without BatchNorm, "lecun" halves the activations' second moment at every ReLU
(2^-18 over VGG-19's 18), and the "imagenet" variant's caffe inputs (pixel std about 57) start
fc1 / fc2 far from unit scale; "he" keeps every layer near unit scale.

Max pooling is reshape + max (``layers.max_pool_2x2``): same values as Keras' MaxPooling2D, and
a far cheaper input gradient on CPU than XLA's select_and_scatter.

Submodules: "block{b}_conv{k}_conv" (and "..._bn"), "fc1", "fc2", "predictions" (the tap names
below cannot double as submodule names in Flax). Taps: "block{b}_conv{k}" after every
convolution's ReLU (Keras' names, e.g. "block5_conv4", the default CAM layer) and
"block{b}_pool" after every pool.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import checks
from percadv_jax.models.common import tap
from percadv_jax.models.layers import compute_input, conv_fn, max_pool_2x2

# Channels and number of convolutions of VGG-19's five blocks.
BLOCKS: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
SMALL_MEAN_RGB = (0.485, 0.456, 0.406)
SMALL_STD_RGB = (0.229, 0.224, 0.225)
VARIANTS = ("imagenet", "small")
INITS = ("lecun", "he")
# Standard deviation of one input channel after each variant's preprocessing (ImageNet statistics):
# caffe mode keeps the 0-255 scale (255 x the mean of the RGB std), the small variant standardises.
INPUT_STD = {"imagenet": 255.0 * float(np.mean(SMALL_STD_RGB)), "small": 1.0}


def scaled(channels: int, width: float) -> int:
  """Channels of a convolution with base ``channels`` at width multiplier ``width`` (>= 1)."""
  return max(1, int(round(channels * width)))


def preprocess(x: jax.Array, variant: str) -> jax.Array:
  """The model's preprocessing of RGB inputs in [0, 1] (see module docstring)."""
  if variant == "imagenet":
    return x[..., ::-1] * 255.0 - jnp.asarray(CAFFE_MEAN_BGR, x.dtype)
  return (x - jnp.asarray(SMALL_MEAN_RGB, x.dtype)) / jnp.asarray(SMALL_STD_RGB, x.dtype)


class VGG19(nn.Module):
  """VGG-19 classifier; ``apply(variables, x, train=False) -> logits [N, num_classes]``.

  Attributes:
    num_classes: number of logits.
    width: channel multiplier of the convolutions (1.0 = Keras' VGG19).
    variant: "imagenet" (Keras' VGG19 with flatten + fc1/fc2 head, caffe preprocessing) or
      "small" (global-average-pool + Dense head, mean/std preprocessing; for 32-64 px).
    batch_norm: BatchNorm after every convolution (only for ``variant="small"``).
    fc_features: width of fc1 and fc2 (only for ``variant="imagenet"``).
    conv_impl: how convolutions are computed (``layers.CONV_IMPLS``): "auto" (default: on CPU
      the faster per convolution of XLA's and patches, ``layers.conv_auto``; XLA's elsewhere),
      "xla" (XLA's convolution) or "patches" (im2col patches times a matrix, custom VJP); same
      parameters and the same values up to float32 rounding.
    initializer: kernel initialisation, "lecun" (Flax's default) or "he" (He-normal for the ReLU
      layers, the first convolution scaled to its inputs' standard deviation; module docstring).
  Input: float [N, H, W, 3] RGB in [0, 1], H, W >= 32. Output: float32 logits (bfloat16 when
  the inputs and variables are, as under ``percadv_jax.precision``: ``layers.compute_input``).
  """
  num_classes: int
  width: float = 1.0
  variant: str = "imagenet"
  batch_norm: bool = False
  fc_features: int = 4096
  conv_impl: str = "auto"
  initializer: str = "lecun"
  cam_layer: ClassVar[str] = "block5_conv4"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    checks.check_images(x, "x")
    checks.check_choice(self.variant, "variant", VARIANTS)
    checks.check_choice(self.initializer, "initializer", INITS)
    if self.batch_norm and self.variant != "small":
      raise ValueError("batch_norm=True is only available for variant='small' "
                       "(Keras' VGG19 has no BatchNorm)")
    if x.shape[1] < 32 or x.shape[2] < 32:
      raise ValueError(f"VGG19 needs inputs of at least 32x32 pixels (five 2x2 poolings), got "
                       f"shape {tuple(x.shape)}")
    conv = conv_fn(self.conv_impl)
    x = preprocess(compute_input(x), self.variant)
    for b, (channels, n_convs) in enumerate(BLOCKS, start=1):
      for k in range(1, n_convs + 1):
        name = f"block{b}_conv{k}"
        x = nn.Conv(scaled(channels, self.width), (3, 3), padding=((1, 1), (1, 1)),
                    use_bias=not self.batch_norm, conv_general_dilated=conv,
                    kernel_init=self._relu_init(INPUT_STD[self.variant] if b == k == 1 else 1.0),
                    name=f"{name}_conv")(x)
        if self.batch_norm:
          x = nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3,
                           name=f"{name}_bn")(x)
        x = tap(self, name, nn.relu(x))
      x = tap(self, f"block{b}_pool", max_pool_2x2(x))
    if self.variant == "imagenet":
      x = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))
      x = nn.relu(nn.Dense(self.fc_features, kernel_init=self._relu_init(1.0), name="fc1")(x))
      x = nn.relu(nn.Dense(self.fc_features, kernel_init=self._relu_init(1.0), name="fc2")(x))
    else:
      x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="predictions")(x)

  def _relu_init(self, input_std: float):
    """Kernel initialiser of a layer followed by a ReLU whose inputs have std ``input_std``."""
    if self.initializer == "lecun":
      return nn.initializers.lecun_normal()
    return nn.initializers.variance_scaling(2.0 / input_std ** 2, "fan_in", "truncated_normal")
