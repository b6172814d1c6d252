"""An adaptive attack's model: a pipeline that computes its foreground mask from its own input.

A masked model (the masks paper's setting) sees ``x * mask``. When the mask comes from a
segmenter run on the image the pipeline receives, an attacker who may change every pixel also
changes the mask. ``bpda_masked_logits(logits_fn, segment_fn)`` is that pipeline as a
``logits_fn`` for any attack:

    logits(x) = logits_fn(x * m(x)),   m(x) = segment_fn(x) run on the host,

with the gradient of BPDA (Athalye, Carlini and Wagner 2018, "backward pass differentiable
approximation"): the mask is a constant in the backward pass, so the gradient at ``x`` is the
gradient of ``logits_fn(x * m)`` with ``m = m(x)`` fixed. The segmenter (e.g. GrabCut, not
differentiable and not JAX) runs through ``jax.pure_callback`` inside the jitted attack, once per
forward pass: clean accuracy uses the mask of the clean image, each attack step the mask of the
current adversarial image.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

SegmentFn = Callable[[np.ndarray], Any]


def host_mask(segment_fn: SegmentFn, x: jax.Array) -> jax.Array:
  """``segment_fn(x)`` computed on the host, outside differentiation: float32 [N,H,W,1].

  Args:
    segment_fn: ``images float32 [N,H,W,C] (NumPy, in [0, 1]) -> masks [N,H,W,1]`` (any real
      dtype, values in [0, 1]); called by ``jax.pure_callback`` (under ``vmap``: once per
      mapped element, each with its own [N,H,W,C]).
    x: float [N,H,W,C], concrete or traced.
  Raises:
    ValueError: from the callback when ``segment_fn`` returns another shape.
  """
  x = jax.lax.stop_gradient(jnp.asarray(x, jnp.float32))
  out = jax.ShapeDtypeStruct(tuple(x.shape[:-1]) + (1,), jnp.float32)

  def host(images: np.ndarray) -> np.ndarray:
    m = np.asarray(segment_fn(np.asarray(images)), np.float32)
    if m.shape != tuple(images.shape[:-1]) + (1,):
      raise ValueError(f"segment_fn returned masks of shape {m.shape} for images of shape "
                       f"{images.shape}; expected {tuple(images.shape[:-1]) + (1,)}")
    return m
  return jax.lax.stop_gradient(jax.pure_callback(host, out, x, vmap_method="sequential"))


@functools.lru_cache(maxsize=64)
def _bpda_apply(segment_fn: SegmentFn) -> Callable:
  """``apply(logits_fn, x)`` of one segmenter (cached: pipelines of one segmenter and model
  architecture share one compiled attack)."""
  def apply(logits_fn: Callable, x: jax.Array) -> jax.Array:
    return logits_fn(x * host_mask(segment_fn, x))
  return apply


def bpda_masked_logits(logits_fn: Callable, segment_fn: SegmentFn) -> jax.tree_util.Partial:
  """The pipeline ``x -> logits_fn(x * stop_gradient(segment_fn(x)))`` (see the module docstring).

  Args:
    logits_fn: ``x [N,H,W,C] -> logits [N,K]`` of the masked model (it sees ``x * mask``); a
      ``jax.tree_util.Partial`` keeps its weights traced (one compile per architecture).
    segment_fn: the host segmenter, ``images float32 [N,H,W,C] in [0, 1] -> [N,H,W,1]`` in
      [0, 1] (e.g. ``percadv_jax.data.segment.batch_segmenter("centre")``); hashable (a
      module-level function or a cached ``functools.partial``: the compile is keyed on it).
  Returns:
    a ``jax.tree_util.Partial`` ``x [N,H,W,C] -> logits [N,K]``, usable wherever a
    ``logits_fn`` is (``Attack``, ``robust_accuracy``, the experiments' store, whose weights
    hash covers ``logits_fn``'s arrays but not the segmenter: name it in the store's spec).
  Raises:
    TypeError: a ``logits_fn`` or ``segment_fn`` that is not callable, or an unhashable
      ``segment_fn``.
  """
  if not callable(logits_fn):
    raise TypeError(f"logits_fn must be callable, got {type(logits_fn).__name__}")
  if not callable(segment_fn):
    raise TypeError(f"segment_fn must be callable, got {type(segment_fn).__name__}")
  try:
    hash(segment_fn)
  except TypeError:
    raise TypeError("segment_fn must be hashable (the compiled pipeline is keyed on it), got "
                    f"{type(segment_fn).__name__}") from None
  return jax.tree_util.Partial(_bpda_apply(segment_fn), logits_fn)
