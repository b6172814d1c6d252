"""Small building blocks shared by the models: the input's compute dtype, fast max pooling,
Keras-style padding and convolution implementations (``conv_impl``)."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp


def compute_input(x: jax.Array) -> jax.Array:
  """A model's input as float32, or kept in bfloat16 / float16.

  Mixed precision (``percadv_jax.precision``) hands a model bf16 inputs and variables; keeping
  the input's half dtype makes every layer compute in it (Flax layers compute in the promoted
  dtype of inputs and parameters). Any other float input becomes float32.
  """
  x = jnp.asarray(x)
  return x if x.dtype in (jnp.bfloat16, jnp.float16) else x.astype(jnp.float32)


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


# --------------------------------------------------------------------------------------------
# Convolution implementations (``conv_impl`` of the models).
# --------------------------------------------------------------------------------------------

CONV_IMPLS = ("auto", "xla", "patches")
# "auto" on CPU: XLA's convolution only for dense k x k convolutions (k > 1) whose output has
# more than this many pixels per image; everything else as ``conv_patches``.
AUTO_XLA_MIN_PIXELS = 5


def _pad_nhwc(x: jax.Array, padding: Sequence[tuple[int, int]]) -> jax.Array:
  (t, b), (l, r) = padding
  if t == b == l == r == 0:
    return x
  return jnp.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))


def _windows(x: jax.Array, kh: int, kw: int, strides: tuple[int, int],
             out_hw: tuple[int, int]) -> list[jax.Array]:
  """The ``kh * kw`` strided views ``x[:, i::sh, j::sw]`` of a padded input, each [N,Ho,Wo,C]."""
  sh, sw = strides
  ho, wo = out_hw
  return [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
          for i in range(kh) for j in range(kw)]


def _out_hw(shape: Sequence[int], kh: int, kw: int, strides: tuple[int, int],
            padding: Sequence[tuple[int, int]]) -> tuple[int, int]:
  (t, b), (l, r) = padding
  return ((shape[1] + t + b - kh) // strides[0] + 1, (shape[2] + l + r - kw) // strides[1] + 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_matmul(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                 padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  y, _ = _conv_matmul_fwd(x, kernel, strides, padding)
  return y


def _conv_matmul_fwd(x, kernel, strides, padding):
  kh, kw, cin, cout = kernel.shape
  out_hw = _out_hw(x.shape, kh, kw, strides, padding)
  if kh == kw == 1 and strides == (1, 1) and padding == ((0, 0), (0, 0)):
    patches = x
  else:
    patches = jnp.concatenate(_windows(_pad_nhwc(x, padding), kh, kw, strides, out_hw), axis=-1)
  y = jnp.dot(patches, kernel.reshape(kh * kw * cin, cout),
              preferred_element_type=jnp.float32).astype(x.dtype)
  # An empty array carries the input's shape statically through the residuals.
  return y, (patches, kernel, jnp.zeros(x.shape[:3] + (0,), x.dtype))


def _conv_matmul_bwd(strides, padding, res, dy):
  patches, kernel, x_like = res
  x_shape = x_like.shape[:3] + (kernel.shape[2],)
  kh, kw, cin, cout = kernel.shape
  k2 = kernel.reshape(kh * kw * cin, cout)
  dk = jnp.einsum("nhwp,nhwc->pc", patches, dy).reshape(kernel.shape).astype(kernel.dtype)
  dpatches = jnp.dot(dy, k2.T)
  if patches.shape == x_shape and kh == kw == 1:
    return dpatches.astype(patches.dtype), dk
  (t, b), (l, r) = padding
  sh, sw = strides
  ho, wo = dy.shape[1:3]
  hp, wp = x_shape[1] + t + b, x_shape[2] + l + r
  # Each window's gradient goes back where its strided slice came from: a pad with interior
  # padding (the transpose of the strided slice); XLA fuses the kh * kw pads and adds.
  dxp = None
  for idx in range(kh * kw):
    i, j = divmod(idx, kw)
    part = jax.lax.pad(dpatches[..., idx * cin:(idx + 1) * cin], jnp.zeros((), dpatches.dtype),
                       ((0, 0, 0), (i, hp - i - sh * (ho - 1) - 1, sh - 1),
                        (j, wp - j - sw * (wo - 1) - 1, sw - 1), (0, 0, 0)))
    dxp = part if dxp is None else dxp + part
  dx = dxp[:, t:t + x_shape[1], l:l + x_shape[2], :]
  return dx.astype(patches.dtype), dk


_conv_matmul.defvjp(_conv_matmul_fwd, _conv_matmul_bwd)


def _depthwise_shifted(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                       padding: Sequence[tuple[int, int]]) -> jax.Array:
  """Depthwise convolution as ``kh * kw`` shifted multiply-adds (kernel [kh,kw,1,C])."""
  kh, kw, _, c = kernel.shape
  out_hw = _out_hw(x.shape, kh, kw, strides, padding)
  views = _windows(_pad_nhwc(x, padding), kh, kw, strides, out_hw)
  k = kernel.reshape(kh * kw, c)
  y = views[0] * k[0]
  for idx in range(1, kh * kw):
    y = y + views[idx] * k[idx]
  return y


_NHWC = ("NHWC", "HWIO", "NHWC")


def _xla_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
              padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_xla_loop_safe(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                        padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """XLA's dense convolution whose input gradient is a canonical forward convolution.

  JAX's transpose of a convolution is a convolution with the kernel's in/out features swapped
  (``01oi``). XLA:CPU rewrites that into its fast (Eigen / YNNPACK) form in straight-line code,
  but not inside a while-loop body (``lax.scan`` / ``fori_loop`` / ``while_loop``), where it
  falls back to a naive loop nest: measured 8x slower on one 32x32x16 3x3 convolution (forward +
  input gradient, PGD-10 in a ``fori_loop``) and 3.6x on a whole small VGG-19. Here the input
  gradient is written as the forward convolution of the flipped, transposed kernel in NHWC/HWIO
  (the same sums), so loops run at the speed of unrolled code. Stride 1 only; the kernel
  gradient is JAX's.
  """
  return _xla_conv(x, kernel, strides, padding)


def _conv_xla_loop_safe_fwd(x, kernel, strides, padding):
  return _xla_conv(x, kernel, strides, padding), (x, kernel)


def _forward_form_vjp(input_grad_conv: Callable, strides, padding, res, dy):
  """The VJP of a stride-1 convolution, its input gradient as a forward convolution.

  ``input_grad_conv(dy, kernel, padding)`` convolves ``dy`` with the flipped, transposed kernel
  at the transposed padding (the same sums as JAX's ``01oi`` transpose); the kernel gradient is
  JAX's of the plain convolution."""
  x, kernel = res
  kh, kw = kernel.shape[:2]
  (t, b), (l, r) = padding
  flipped = jnp.swapaxes(jnp.flip(kernel, (0, 1)), 2, 3)
  dx = input_grad_conv(dy, flipped, ((kh - 1 - t, kh - 1 - b), (kw - 1 - l, kw - 1 - r)))
  _, kernel_vjp = jax.vjp(lambda k: _xla_conv(x, k, strides, padding), kernel)
  return dx.astype(x.dtype), kernel_vjp(dy)[0]


def _conv_xla_loop_safe_bwd(strides, padding, res, dy):
  return _forward_form_vjp(lambda d, k, p: _xla_conv(d, k, (1, 1), p), strides, padding, res, dy)


_conv_xla_loop_safe.defvjp(_conv_xla_loop_safe_fwd, _conv_xla_loop_safe_bwd)


# XLA:CPU hands a convolution to YNNPACK only when it has more than 16 input or output channels
# (``IsConvolutionOpSupportedByYnn``); smaller ones run on Eigen's spatial convolution.
YNN_MIN_CHANNELS = 17
# Column groups tried for such convolutions, smallest first (``_column_group_size``).
COLUMN_GROUPS = (2, 4)


def _column_group_size(cin: int, cout: int, width: int) -> int:
  """The smallest of ``COLUMN_GROUPS`` that takes a ``cin -> cout`` convolution to YNNPACK and
  divides ``width``; 1 where none does or it is there already."""
  channels = max(cin, cout)
  if channels >= YNN_MIN_CHANNELS:
    return 1
  return next((g for g in COLUMN_GROUPS if g * channels >= YNN_MIN_CHANNELS and width % g == 0),
              1)


def _column_group_kernel(kernel: jax.Array, g: int) -> jax.Array:
  """A ``[kh, 3, cin, cout]`` kernel as the ``[kh, 2, g cin, g cout]`` kernel of column groups.

  Input group ``j`` holds columns ``g j - 1 ... g j + g - 2`` (channels ``r * cin + c``), output
  group ``j`` columns ``g j ... g j + g - 1`` (channels ``s * cout + o``): output column
  ``g j + s`` reads input column ``g (j + b) - 1 + r`` with the tap ``g b + r - s``, zero where
  that is outside 0..2.
  """
  kh, _, cin, cout = kernel.shape
  zero = jnp.zeros((kh, cin, cout), kernel.dtype)
  groups = [jnp.concatenate([
      jnp.concatenate([kernel[:, g * b + r - s] if 0 <= g * b + r - s <= 2 else zero
                       for s in range(g)], axis=-1) for r in range(g)], axis=1)
      for b in range(2)]
  return jnp.stack(groups, axis=1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_column_groups(x: jax.Array, kernel: jax.Array,
                        padding: tuple[tuple[int, int], tuple[int, int]], g: int) -> jax.Array:
  """A stride-1 convolution of width 3 ("SAME" columns) on groups of ``g`` columns.

  XLA:CPU runs convolutions with at most 16 channels (``YNN_MIN_CHANNELS``) on Eigen's spatial
  convolution, about 4x slower per multiply-add than YNNPACK. Folding groups of ``g`` columns
  into the channels (a free reshape in NHWC, after a pad) makes a ``cin -> cout`` convolution a
  ``g cin -> g cout`` one with a ``kh x 2`` kernel (``_column_group_kernel``; 2g/3 of the
  multiply-adds) that YNNPACK takes. Measured forward, batch 128, 32 px, one core: 3 -> 16 in
  pairs 3.9x and 16 -> 16 1.3x faster, 3 -> 8 in fours 5.2x and 8 -> 8 1.5x faster. The input
  gradient is the same construction on the flipped kernel, so it is a forward convolution too
  (loop-safe, as ``_conv_xla_loop_safe``); the kernel gradient is JAX's of the plain
  convolution. Same sums as XLA's convolution, in another order. ``x``'s width must divide by g;
  ``padding`` is ``((top, bottom), (1, 1))``.
  """
  n, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (0, 0), (1, g - 1), (0, 0))).reshape(n, h, w // g + 1, g * c)
  y = _xla_conv(xp, _column_group_kernel(kernel, g), (1, 1), (padding[0], (0, 0)))
  return y.reshape(y.shape[0], y.shape[1], w, kernel.shape[-1])


def _conv_column_groups_fwd(x, kernel, padding, g):
  return _conv_column_groups(x, kernel, padding, g), (x, kernel)


def _conv_column_groups_bwd(padding, g, res, dy):
  return _forward_form_vjp(lambda d, k, p: _conv_column_groups(d, k, p, g), (1, 1), padding,
                           res, dy)


_conv_column_groups.defvjp(_conv_column_groups_fwd, _conv_column_groups_bwd)


def conv_patches(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                 padding: Any, lhs_dilation: Any = None, rhs_dilation: Any = None,
                 dimension_numbers: Any = None, feature_group_count: int = 1,
                 precision: Any = None, **unused: Any) -> jax.Array:
  """A drop-in for ``lax.conv_general_dilated`` (NHWC input, HWIO kernel) without XLA's conv.

  Dense convolutions are im2col patches (``kh * kw`` strided slices concatenated along the
  channels, [N,Ho,Wo,kh*kw*Cin]) times the kernel as a [kh*kw*Cin, Cout] matrix, with a custom
  VJP: the input gradient is one matmul with the kernel's transpose followed by ``kh * kw``
  padded adds (fused by XLA), the kernel gradient one matmul with the saved patches. Depthwise
  convolutions (``feature_group_count == Cin``, kernel [kh,kw,1,C]) are ``kh * kw`` shifted
  multiply-adds (plain autodiff). Same values as XLA's convolution up to float32 summation order.

  Args:
    lhs: float [N,H,W,Cin].
    rhs: float [kh,kw,Cin/groups,Cout].
    window_strides: (sh, sw).
    padding: ((top, bottom), (left, right)) explicit zero padding, "VALID" or "SAME".
    lhs_dilation, rhs_dilation: must be None or all ones.
    dimension_numbers: ignored beyond the NHWC / HWIO layout the models use.
    feature_group_count: 1 (dense) or Cin (depthwise).
    precision: ignored (float32 matmuls).
  Returns:
    [N,Ho,Wo,Cout].
  """
  del dimension_numbers, precision, unused
  for d in (lhs_dilation, rhs_dilation):
    if d is not None and any(v != 1 for v in d):
      raise ValueError("conv_patches supports no dilation")
  kh, kw, cin_g, cout = rhs.shape
  strides = tuple(int(s) for s in window_strides)
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), strides, padding)
  padding = tuple((int(a), int(b)) for a, b in padding)
  cin = lhs.shape[-1]
  if feature_group_count == 1:
    return _conv_matmul(lhs, rhs, strides, padding)
  if feature_group_count == cin and cin_g == 1 and cout == cin:
    return _depthwise_shifted(lhs, rhs, strides, padding)
  raise ValueError(f"conv_patches supports dense and depthwise convolutions, got "
                   f"feature_group_count={feature_group_count} for {cin} input channels")


def conv_auto(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: Any,
              lhs_dilation: Any = None, rhs_dilation: Any = None, dimension_numbers: Any = None,
              feature_group_count: int = 1, precision: Any = None, **extra: Any) -> jax.Array:
  """Per convolution, the faster of XLA's convolution and ``conv_patches`` on XLA:CPU.

  Measured on XLA:CPU (forward + input gradient, one core): XLA's depthwise convolutions are
  17-200x slower than shifted multiply-adds, its 1x1 convolutions up to 10x slower than a
  matmul, and its 3x3 convolutions on 2x2 feature maps 10-50x slower than patches + matmul;
  on larger maps XLA's dense 3x3 convolutions are 1.5-5x faster than patches. So on the CPU
  backend depthwise, 1x1 and small-output (< ``AUTO_XLA_MIN_PIXELS`` pixels) dense
  convolutions use ``conv_patches`` and the others XLA's, stride 1 with the loop-safe input
  gradient of ``_conv_xla_loop_safe``, or, for width-3 "SAME"-column convolutions with 5-16
  channels, which XLA would leave on Eigen, on groups of 2 or 4 columns
  (``_conv_column_groups``, YNNPACK); on other backends every convolution is XLA's plain.
  Arguments as ``lax.conv_general_dilated``.
  """
  args = dict(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
              dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
              precision=precision)
  kh, kw = rhs.shape[:2]
  dilated = any(d is not None and any(v != 1 for v in d) for d in (lhs_dilation, rhs_dilation))
  if jax.default_backend() != "cpu" or dilated:
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **args, **extra)
  strides = tuple(int(s) for s in window_strides)
  pads = tuple((int(a), int(b)) for a, b in (
      jax.lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), strides, padding)
      if isinstance(padding, str) else padding))
  ho, wo = _out_hw(lhs.shape, kh, kw, strides, pads)
  if feature_group_count == 1 and (kh, kw) != (1, 1) and ho * wo >= AUTO_XLA_MIN_PIXELS:
    (t, b), (l, r) = pads
    if strides == (1, 1) and max(t, b) < kh and max(l, r) < kw and precision is None \
        and not extra:
      g = _column_group_size(*rhs.shape[2:], lhs.shape[2]) if (kw, l, r) == (3, 1, 1) else 1
      if g > 1:
        return _conv_column_groups(lhs, rhs, pads, g)
      return _conv_xla_loop_safe(lhs, rhs, strides, pads)
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **args, **extra)
  return conv_patches(lhs, rhs, window_strides, padding, **args)


def conv_fn(impl: str) -> Callable | None:
  """The ``conv_general_dilated`` argument of ``flax.linen.Conv`` for ``conv_impl``.

  ``"auto"``: ``conv_auto`` (the faster per convolution on CPU, XLA's elsewhere); ``"xla"``:
  None (XLA's convolution everywhere); ``"patches"``: ``conv_patches`` everywhere.
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f"unknown conv_impl {impl!r}; choose one of {list(CONV_IMPLS)}")
  return {"auto": conv_auto, "xla": None, "patches": conv_patches}[impl]
