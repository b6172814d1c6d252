"""Array-level class activation maps: from activations and gradients to maps.

Everything here is a pure function of arrays (jit/vmap friendly). Conventions:
- ``activations`` ``A``: float ``[N, h, w, K]`` (NHWC) — a layer's feature map.
- ``grads`` ``G``: float ``[N, h, w, K]`` — the gradient of each image's target score (its logit
  for the target class) w.r.t. ``A``.
- A *raw map* is float ``[N, h, w]`` (any sign); :func:`postprocess` turns it into the final
  ``[N, H, W]`` map in [0, 1].

The formulas are those of pytorch-grad-cam (jacobgil/pytorch-grad-cam), written for NHWC:

===============  ========================================================================
CAM              ``sum_k W[k, c] A_k`` (Zhou et al. 2016; GAP + linear head weights)
Grad-CAM         weights ``mean_ij G``; map ``sum_k w_k A_k`` (Selvaraju et al. 2017)
Grad-CAM++       ``alpha = G^2 / (2 G^2 + sum_ij(A) G^3 + 1e-6)``, zero where ``G == 0``;
                 weights ``sum_ij alpha relu(G)`` (Chattopadhay et al. 2018, eq. 19)
XGradCAM         weights ``sum_ij G A / (sum_ij A + 1e-7)`` (Fu et al. 2020)
LayerCAM         map ``sum_k relu(G) A`` (Jiang et al. 2021)
HiResCAM         map ``sum_k G A`` (Draelos & Carin 2020)
Score-CAM        weights ``softmax_k(score(x * norm(up(A_k))))`` (Wang et al. 2020)
===============  ========================================================================

Post-processing (pytorch-grad-cam's ``BaseCAM``): ReLU, per-image min-max scaling
``(m - min) / (max - min + 1e-7)``, bilinear resize to the input size with half-pixel centres
(``cv2.resize`` ``INTER_LINEAR``: no antialiasing, edges clamped), then min-max scaling again.
An all-zero map stays all zero.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

GRADPP_EPS = 1e-6
XGRAD_EPS = 1e-7
SCALE_EPS = 1e-7
SCORE_EPS = 1e-8


def _check_pair(activations: jax.Array, grads: jax.Array) -> None:
  a, g = tuple(np.shape(activations)), tuple(np.shape(grads))
  if len(a) != 4:
    raise ValueError(f"activations must be [N, h, w, K] (NHWC), got shape {a}")
  if a != g:
    raise ValueError(f"activations {a} and grads {g} must have the same shape [N, h, w, K]")


def weighted_sum(activations: jax.Array, weights: jax.Array) -> jax.Array:
  """``sum_k weights[n, k] * A[n, :, :, k]``: ``[N,h,w,K]``, ``[N,K]`` (or ``[K]``) -> ``[N,h,w]``."""
  weights = jnp.asarray(weights)
  if weights.ndim == 1:
    weights = jnp.broadcast_to(weights, (activations.shape[0], weights.shape[0]))
  if weights.shape != (activations.shape[0], activations.shape[-1]):
    raise ValueError(f"weights must have shape [N, K] = "
                     f"{(activations.shape[0], activations.shape[-1])}, got {weights.shape}")
  return jnp.einsum("nhwk,nk->nhw", activations, weights)


def class_activation_map(activations: jax.Array, head_weights: jax.Array) -> jax.Array:
  """CAM: the activations weighted by the linear head's weights of the target class.

  Args:
    activations: ``[N, h, w, K]``, the feature map that is globally average-pooled.
    head_weights: ``[N, K]`` (per image, i.e. ``kernel[:, target].T``) or ``[K]``.
  Returns:
    raw map ``[N, h, w]``.
  """
  return weighted_sum(activations, head_weights)


def grad_cam_weights(activations: jax.Array, grads: jax.Array) -> jax.Array:
  """Grad-CAM channel weights ``mean_ij G``: ``[N, K]``."""
  _check_pair(activations, grads)
  return jnp.mean(grads, axis=(1, 2))


def grad_cam_pp_weights(activations: jax.Array, grads: jax.Array) -> jax.Array:
  """Grad-CAM++ channel weights (closed form for an exponential output): ``[N, K]``."""
  _check_pair(activations, grads)
  g2 = grads * grads
  g3 = g2 * grads
  sum_a = jnp.sum(activations, axis=(1, 2), keepdims=True)
  alpha = g2 / (2.0 * g2 + sum_a * g3 + GRADPP_EPS)
  alpha = jnp.where(grads != 0, alpha, 0.0)
  return jnp.sum(alpha * jnp.maximum(grads, 0.0), axis=(1, 2))


def xgrad_cam_weights(activations: jax.Array, grads: jax.Array) -> jax.Array:
  """XGradCAM channel weights ``sum_ij G A / (sum_ij A + 1e-7)``: ``[N, K]``."""
  _check_pair(activations, grads)
  sum_a = jnp.sum(activations, axis=(1, 2), keepdims=True)
  return jnp.sum(grads * activations / (sum_a + XGRAD_EPS), axis=(1, 2))


def grad_cam_map(activations: jax.Array, grads: jax.Array) -> jax.Array:
  """Raw Grad-CAM map ``[N, h, w]``."""
  return weighted_sum(activations, grad_cam_weights(activations, grads))


def grad_cam_pp_map(activations: jax.Array, grads: jax.Array) -> jax.Array:
  """Raw Grad-CAM++ map ``[N, h, w]``."""
  return weighted_sum(activations, grad_cam_pp_weights(activations, grads))


def xgrad_cam_map(activations: jax.Array, grads: jax.Array) -> jax.Array:
  """Raw XGradCAM map ``[N, h, w]``."""
  return weighted_sum(activations, xgrad_cam_weights(activations, grads))


def layer_cam_map(activations: jax.Array, grads: jax.Array) -> jax.Array:
  """Raw LayerCAM map ``sum_k relu(G) A``: ``[N, h, w]``."""
  _check_pair(activations, grads)
  return jnp.sum(jnp.maximum(grads, 0.0) * activations, axis=-1)


def hires_cam_map(activations: jax.Array, grads: jax.Array) -> jax.Array:
  """Raw HiResCAM map ``sum_k G A``: ``[N, h, w]``."""
  _check_pair(activations, grads)
  return jnp.sum(grads * activations, axis=-1)


def gradient_cam_map(activations: jax.Array, grads: jax.Array) -> jax.Array:
  """Raw CAM from gradients: weights ``sum_ij G``.

  For a GAP + linear head, ``dlogit_c / dA[i, j, k] = W[k, c] / (h w)``, so ``sum_ij G`` is
  exactly the head's weight vector and this is CAM; for other heads it is ``h w`` times Grad-CAM.
  """
  _check_pair(activations, grads)
  return weighted_sum(activations, jnp.sum(grads, axis=(1, 2)))


def score_cam_weights(scores: jax.Array) -> jax.Array:
  """Score-CAM channel weights: softmax over channels of the masked-input scores ``[N, K]``."""
  return jax.nn.softmax(scores, axis=-1)


# Methods whose raw map is a function of (activations, grads).
GRADIENT_METHODS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "cam": gradient_cam_map,
    "grad_cam": grad_cam_map,
    "grad_cam_pp": grad_cam_pp_map,
    "xgrad_cam": xgrad_cam_map,
    "layer_cam": layer_cam_map,
    "hires_cam": hires_cam_map,
}
METHODS = tuple(GRADIENT_METHODS) + ("score_cam",)


@functools.lru_cache(maxsize=256)
def interpolation_matrix(out_size: int, in_size: int, *, align_corners: bool = False) -> np.ndarray:
  """Linear interpolation weights ``[out_size, in_size]`` (float32, rows sum to 1).

  ``align_corners=False``: half-pixel centres, ``src = (i + 0.5) in/out - 0.5`` clamped to
  ``[0, in - 1]`` (``cv2.resize`` INTER_LINEAR, no antialiasing, also when shrinking).
  ``align_corners=True``: ``src = i (in - 1) / (out - 1)`` (torch ``UpsamplingBilinear2d``).
  """
  if out_size < 1 or in_size < 1:
    raise ValueError(f"sizes must be >= 1, got out={out_size}, in={in_size}")
  i = np.arange(out_size, dtype=np.float64)
  if align_corners:
    src = i * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros_like(i)
  else:
    src = (i + 0.5) * (in_size / out_size) - 0.5
  src = np.clip(src, 0.0, in_size - 1)
  lo = np.floor(src).astype(np.int64)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  m = np.zeros((out_size, in_size), np.float64)
  np.add.at(m, (np.arange(out_size), lo), 1.0 - frac)
  np.add.at(m, (np.arange(out_size), hi), frac)
  return m.astype(np.float32)


def resize_bilinear(maps: jax.Array, size: tuple[int, int], *,
                    align_corners: bool = False) -> jax.Array:
  """Bilinear resize of ``[N, h, w]`` or ``[N, h, w, C]`` maps to ``size = (H, W)``.

  Separable (two small matrix products), exact for any up/down factor; see
  :func:`interpolation_matrix` for the two coordinate conventions.
  """
  h, w = maps.shape[1], maps.shape[2]
  mh = jnp.asarray(interpolation_matrix(int(size[0]), h, align_corners=align_corners))
  mw = jnp.asarray(interpolation_matrix(int(size[1]), w, align_corners=align_corners))
  if maps.ndim == 3:
    return jnp.einsum("Hh,nhw,Ww->nHW", mh, maps, mw, precision=jax.lax.Precision.HIGHEST)
  return jnp.einsum("Hh,nhwc,Ww->nHWc", mh, maps, mw, precision=jax.lax.Precision.HIGHEST)


def minmax_scale(maps: jax.Array, *, eps: float = SCALE_EPS) -> jax.Array:
  """Per-image ``(m - min) / (max - min + eps)`` over the spatial axes of ``[N, H, W]``."""
  lo = jnp.min(maps, axis=(1, 2), keepdims=True)
  m = maps - lo
  return m / (jnp.max(m, axis=(1, 2), keepdims=True) + eps)


def postprocess(raw: jax.Array, *, size: tuple[int, int] | None = None) -> jax.Array:
  """Raw ``[N, h, w]`` map -> ``[N, H, W]`` float32 in [0, 1] (pytorch-grad-cam's pipeline).

  ReLU, min-max scaling, bilinear resize with half-pixel centres to ``size`` (skipped when
  ``None`` or equal), min-max scaling again.
  """
  m = minmax_scale(jnp.maximum(raw.astype(jnp.float32), 0.0))
  if size is not None and tuple(size) != tuple(m.shape[1:3]):
    m = resize_bilinear(m, tuple(size))
  return jnp.clip(minmax_scale(m), 0.0, 1.0)
