"""Mixed precision: bf16 compute, f32 parameters, f32 perturbations, f32 logits and losses.

One mechanism for training and attacks: ``mixed_precision(fn)`` wraps an ``apply``-style function
so that, inside it, every floating-point array argument (the variables pytree and the input images)
is cast to the compute dtype, and every floating-point output is cast back to float32.

- Training: ``apply = mixed_precision(module.apply)``; the optimiser still holds float32 params
  and the gradient flows back through the cast, so updates are float32 (the master weights).
  BatchNorm statistics returned through ``mutable=["batch_stats"]`` come back as float32.
- Attacks: ``logits_fn = lambda x: apply(variables, x, train=False)``; the perturbation, the
  projection and the loss live in float32 (the attack only ever sees float32 logits), so the
  ``|x_adv - x| <= eps`` and box guarantees are exact; only the network runs in bf16.

Flax layers with ``dtype=None`` compute in the promoted dtype of their inputs and parameters, so
bf16 inputs and bf16 parameters give bf16 convolutions and matmuls without changing the model.

Stated tolerance (checked in tests/parallel/test_precision.py on a small CNN): bf16 logits are
within ``BF16_LOGIT_RTOL`` = 5% of the float32 logits' scale (max |difference| / max |f32 logit|),
and input gradients have cosine similarity >= 0.98 with the float32 ones. bf16 pays off on
accelerators (GPU tensor cores, TPU); on CPU it is usually slower than float32.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

BF16_LOGIT_RTOL = 0.05
BF16_GRAD_COSINE = 0.98

_NAMES = {"float32": jnp.float32, "f32": jnp.float32, "fp32": jnp.float32,
          "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16,
          "float16": jnp.float16, "f16": jnp.float16, "fp16": jnp.float16}


def compute_dtype(name: Any) -> Any:
  """``"float32" | "bfloat16" | "float16"`` (or short forms, or a dtype) -> a JAX dtype."""
  if isinstance(name, str):
    if name not in _NAMES:
      raise ValueError(f"unknown precision {name!r}; choose one of {sorted(_NAMES)}")
    return _NAMES[name]
  try:
    dt = jnp.dtype(name)
  except TypeError:
    dt = None
  if name is None or dt is None or not jnp.issubdtype(dt, jnp.floating):
    raise ValueError(f"precision must be a floating-point dtype or one of {sorted(_NAMES)}, "
                     f"got {name!r}")
  return dt.type


def cast_floating(tree: Any, dtype: Any) -> Any:
  """Casts every floating-point array leaf of ``tree`` to ``dtype``; other leaves untouched."""
  def cast(x):
    if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
      return jnp.asarray(x).astype(dtype)
    return x
  return jax.tree.map(cast, tree)


def mixed_precision(fn: Callable, *, dtype: Any = "bfloat16",
                    output_dtype: Any = jnp.float32) -> Callable:
  """Wraps ``fn(*args, **kw)`` to compute in ``dtype`` and return ``output_dtype`` floats.

  Floating array leaves of all positional arguments (e.g. ``variables``, images) are cast to
  ``dtype``; keyword arguments (``train=...``, ``mutable=...``) pass through unchanged; every
  floating leaf of the result (logits, or ``(logits, new_state)``) is cast to ``output_dtype``.
  With ``dtype`` float32 the wrapper returns ``fn`` itself, so one code path serves both.

  Args:
    fn: an ``apply``-style function, e.g. ``module.apply`` or ``lambda v, x: ...``.
    dtype: compute dtype (name or dtype), default bfloat16.
    output_dtype: dtype of the returned floating leaves, default float32.

  Returns:
    The wrapped function (differentiable: gradients w.r.t. float32 arguments are float32).
  """
  dt = compute_dtype(dtype)
  out_dt = compute_dtype(output_dtype) if isinstance(output_dtype, str) else output_dtype
  if np.dtype(dt) == np.dtype(jnp.float32) and np.dtype(out_dt) == np.dtype(jnp.float32):
    return fn

  @functools.wraps(fn)
  def wrapped(*args, **kw):
    return cast_floating(fn(*cast_floating(args, dt), **kw), out_dt)
  return wrapped


def mixed_precision_logits_fn(apply_fn: Callable, variables: Any, *, dtype: Any = "bfloat16",
                              **apply_kw) -> Callable[[jax.Array], jax.Array]:
  """``x -> float32 logits`` of ``apply_fn(variables, x, **apply_kw)`` computed in ``dtype``.

  The attack-side shorthand: ``pgd(mixed_precision_logits_fn(module.apply, variables,
  train=False), x, y, ...)``. ``x`` stays float32 outside. The variables are cast once, here
  (outside any attack loop that later calls the function); gradients flow to ``x`` only.
  The returned function maps ``[N,H,W,C]`` float32 images to float32 ``[N, num_classes]`` logits
  (whatever shape ``apply_fn`` returns, cast to float32).
  """
  dt = compute_dtype(dtype)
  cast_vars = cast_floating(variables, dt)
  f = mixed_precision(apply_fn, dtype=dt)
  return lambda x: f(cast_vars, x, **apply_kw)
