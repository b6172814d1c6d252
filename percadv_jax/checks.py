"""Input validation shared by every public entry point.

The rule: a user's mistake (shape, dtype, range, NaN, bad hyper-parameter) raises a ``ValueError``
that names the argument and the problem *before* anything is traced, never an XLA traceback.
Value checks (range, NaN, membership in {0,1}) run only on concrete arrays: inside ``jit`` the
values are abstract, so only shapes and dtypes are checked there.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
  """True when ``x`` holds values (NumPy array or a committed jax.Array), not a tracer."""
  return not isinstance(x, jax.core.Tracer)


def check_images(x: Any, name: str = "x", *, channels: int | None = 3, rank: int = 4,
                 check_range: bool = True) -> None:
  """Checks ``x`` is float NHWC (rank 4) with ``channels`` channels and values in [0, 1].

  Raises:
    ValueError: naming ``name`` and what is wrong (rank, channels, dtype, NaN/inf, range).
  """
  shape = getattr(x, "shape", None)
  if shape is None:
    raise ValueError(f"{name} must be an array, got {type(x).__name__}")
  if len(shape) != rank:
    raise ValueError(f"{name} must have rank {rank} (NHWC), got shape {tuple(shape)}")
  if channels is not None and shape[-1] != channels:
    raise ValueError(f"{name} must have {channels} channels in the last axis (NHWC RGB), "
                     f"got shape {tuple(shape)}")
  dtype = np.dtype(x.dtype)
  if not np.issubdtype(dtype, np.floating):
    raise ValueError(f"{name} must be a float array with values in [0, 1], got dtype {dtype}"
                     + (" (convert uint8 images with x.astype(np.float32) / 255)"
                        if dtype == np.uint8 else ""))
  if check_range and is_concrete(x):
    a = np.asarray(x)
    if a.size and not np.all(np.isfinite(a)):
      raise ValueError(f"{name} contains NaN or inf values")
    if a.size and (a.min() < 0.0 or a.max() > 1.0):
      raise ValueError(f"{name} must lie in [0, 1] (pixel space), got values in "
                       f"[{a.min():.4g}, {a.max():.4g}]")


def check_finite(x: Any, name: str) -> None:
  """Raises ValueError if a concrete ``x`` contains NaN or inf."""
  if is_concrete(x):
    a = np.asarray(x)
    if a.size and not np.all(np.isfinite(a)):
      raise ValueError(f"{name} contains NaN or inf values")


def check_mask(mask: Any, x_shape: tuple[int, ...], name: str = "mask") -> None:
  """Checks ``mask`` broadcasts to ``x_shape`` and (if concrete) holds only 0 and 1."""
  shape = tuple(getattr(mask, "shape", ()))
  try:
    out = np.broadcast_shapes(shape, tuple(x_shape))
  except ValueError:
    out = None
  if out != tuple(x_shape) or len(shape) != len(x_shape):
    raise ValueError(f"{name} of shape {shape} does not broadcast to the images' shape "
                     f"{tuple(x_shape)}; expected [N,H,W,1] or [N,H,W,C]")
  if is_concrete(mask):
    a = np.asarray(mask)
    if not np.all((a == 0) | (a == 1)):
      raise ValueError(f"{name} must contain only 0 and 1")


def check_labels(y: Any, n: int, num_classes: int | None = None, name: str = "y") -> None:
  """Checks integer labels of shape [n], and (if concrete and ``num_classes``) their range."""
  shape = tuple(getattr(y, "shape", ()))
  if shape != (n,):
    raise ValueError(f"{name} must have shape ({n},) to match the batch, got {shape}")
  if not np.issubdtype(np.dtype(y.dtype), np.integer):
    raise ValueError(f"{name} must be integer class labels, got dtype {y.dtype}")
  if num_classes is not None and is_concrete(y):
    a = np.asarray(y)
    if a.size and (a.min() < 0 or a.max() >= num_classes):
      raise ValueError(f"{name} must lie in [0, {num_classes}), got [{a.min()}, {a.max()}]")


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> None:
  """Raises ValueError unless ``value`` (a number or concrete array) is > 0 (or >= 0)."""
  if not is_concrete(value):
    return
  a = np.asarray(value)
  bad = (a < 0) if allow_zero else (a <= 0)
  if not np.all(np.isfinite(a)) or np.any(bad):
    raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def check_choice(value: Any, name: str, choices) -> None:
  """Raises ValueError unless ``value`` is one of ``choices`` (listed in the message)."""
  if value not in choices:
    raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")


def as_float(x: Any) -> jax.Array:
  """Returns ``x`` as a float32 jax array (no copy when it already is one)."""
  return jnp.asarray(x, jnp.float32)
