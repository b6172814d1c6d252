"""Input validation shared by every public entry point.

The rule: a user's mistake (shape, dtype, range, NaN, bad hyper-parameter) raises a ``ValueError``
that names the argument and the problem *before* anything is traced, never an XLA traceback.
Value checks (range, NaN, membership in {0,1}) run only on concrete arrays: inside ``jit`` the
values are abstract, so only shapes and dtypes are checked there.

Scalar types are handled uniformly: wherever a Python ``int`` is accepted so is a NumPy integer
scalar (``np.int64``), wherever a ``float`` is accepted so is any real scalar (``np.float32``,
an int, a 0-d array); ``bool`` is never accepted as a number, and NaN / inf are rejected unless a
check says otherwise.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
  """True when ``x`` holds values (NumPy array or a committed jax.Array), not a tracer."""
  return not isinstance(x, jax.core.Tracer)


def check_int(value: Any, name: str, *, minimum: int | None = None,
              maximum: int | None = None, allow_none: bool = False) -> int | None:
  """``value`` as a Python int: an ``int`` or NumPy integer scalar (0-d integer array) in range.

  ``None`` is returned as is when ``allow_none``.

  Raises:
    ValueError: a bool, a float (even 3.0), a string, a tracer, ``None`` (unless
      ``allow_none``) or a value outside ``[minimum, maximum]``, naming ``name``.
  """
  if value is None and allow_none:
    return None
  if isinstance(value, np.ndarray) and value.ndim == 0 and np.issubdtype(value.dtype,
                                                                        np.integer):
    value = value[()]
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    what = "an integer or None" if allow_none else "an integer"
    raise ValueError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
  value = int(value)
  if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
    bounds = (f">= {minimum}" if maximum is None else f"<= {maximum}" if minimum is None
              else f"in [{minimum}, {maximum}]")
    raise ValueError(f"{name} must be an integer {bounds}, got {value}")
  return value


def check_float(value: Any, name: str, *, minimum: float | None = None,
                maximum: float | None = None, min_inclusive: bool = True,
                max_inclusive: bool = True, allow_inf: bool = False) -> float:
  """``value`` as a Python float: any real scalar (int, float, NumPy scalar, 0-d array).

  Raises:
    ValueError: a bool, a non-number, NaN, inf (unless ``allow_inf``) or a value outside the
      bounds (inclusive unless ``min_inclusive`` / ``max_inclusive`` is False), naming ``name``.
  """
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value[()]
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                   np.floating)):
    raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
  v = float(value)
  if np.isnan(v) or (np.isinf(v) and not allow_inf):
    raise ValueError(f"{name} must be a finite number, got {v}")
  low_bad = minimum is not None and (v < minimum if min_inclusive else v <= minimum)
  high_bad = maximum is not None and (v > maximum if max_inclusive else v >= maximum)
  if low_bad or high_bad:
    parts = []
    if minimum is not None:
      parts.append(f"{'>=' if min_inclusive else '>'} {minimum:g}")
    if maximum is not None:
      parts.append(f"{'<=' if max_inclusive else '<'} {maximum:g}")
    raise ValueError(f"{name} must be {' and '.join(parts)}, got {v:g}")
  return v


def check_bool(value: Any, name: str) -> bool:
  """``value`` as a Python bool (``bool`` or ``np.bool_`` only; 0/1 and strings are refused)."""
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
  return bool(value)


def check_nonempty(x: Any, name: str = "x") -> None:
  """Raises ValueError when the batch ``x`` (leading axis N) holds no examples."""
  shape = tuple(getattr(x, "shape", ()))
  if shape and shape[0] == 0:
    raise ValueError(f"{name} is an empty batch (shape {shape}); give at least one example")


def check_images(x: Any, name: str = "x", *, channels: int | None = 3, rank: int = 4,
                 check_range: bool = True, allow_empty: bool = True) -> None:
  """Checks ``x`` is float NHWC (rank 4) with ``channels`` channels and values in [0, 1].

  Raises:
    ValueError: naming ``name`` and what is wrong (rank, channels, dtype, NaN/inf, range, an
      empty batch when ``allow_empty`` is False).
  """
  shape = getattr(x, "shape", None)
  if shape is None:
    raise ValueError(f"{name} must be an array, got {type(x).__name__}")
  if len(shape) != rank:
    raise ValueError(f"{name} must have rank {rank} (NHWC), got shape {tuple(shape)}")
  if not allow_empty:
    check_nonempty(x, name)
  if channels is not None and shape[-1] != channels:
    raise ValueError(f"{name} must have {channels} channels in the last axis (NHWC RGB), "
                     f"got shape {tuple(shape)}")
  dtype = np.dtype(x.dtype)
  if not jnp.issubdtype(dtype, jnp.floating):  # bfloat16 included
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
  """Checks integer class labels ``y`` of shape [n] and (when concrete) ``0 <= y < num_classes``.

  Args:
    y: int [n] labels (a jax/NumPy array, or a list / tuple of ints). Under ``jit`` (a tracer)
      only the shape and dtype are checked.
    n: the batch size the labels must match (an int or NumPy integer).
    num_classes: the number of classes K (an int or NumPy integer >= 1); None skips the range
      check.
    name: the argument's name in messages.
  Raises:
    ValueError: wrong shape, a non-integer dtype (floats and bools included), or a label
      outside [0, num_classes) (the offending value and its position are named).
  """
  n = check_int(n, "n", minimum=0)
  if num_classes is not None:
    num_classes = check_int(num_classes, "num_classes", minimum=1)
  if isinstance(y, (list, tuple)):
    y = np.asarray(y)
  shape = tuple(getattr(y, "shape", ()))
  if not hasattr(y, "dtype") or shape != (n,):
    raise ValueError(f"{name} must have shape ({n},) to match the batch, got "
                     f"{shape if hasattr(y, 'shape') else type(y).__name__}")
  dtype = np.dtype(y.dtype)
  if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
    raise ValueError(f"{name} must be integer class labels, got dtype {dtype}")
  if num_classes is not None and is_concrete(y):
    a = np.asarray(y)
    bad = np.flatnonzero((a < 0) | (a >= num_classes))
    if bad.size:
      i = int(bad[0])
      raise ValueError(f"{name} must lie in [0, {num_classes}) (the model has {num_classes} "
                       f"classes), got {a[i]} at index {i} ({bad.size} label(s) out of range)")


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> None:
  """Raises ValueError unless ``value`` (a number or concrete array) is > 0 (or >= 0) and finite.

  Bools and non-numeric values are refused; a tracer passes unchecked.
  """
  if not is_concrete(value):
    return
  if isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be a number, got {value!r}")
  try:
    a = np.asarray(value)
  except Exception:  # pylint: disable=broad-except
    a = np.asarray(None, object)
  if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer)
                                 or np.issubdtype(a.dtype, np.floating)):
    raise ValueError(f"{name} must be a number or a numeric array, got {value!r}")
  bad = (a < 0) if allow_zero else (a <= 0)
  if not np.all(np.isfinite(a)) or np.any(bad):
    raise ValueError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}, got {value}")


def check_choice(value: Any, name: str, choices) -> None:
  """Raises ValueError unless ``value`` is one of ``choices`` (listed in the message)."""
  if value not in choices:
    raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")


def as_float(x: Any) -> jax.Array:
  """Returns ``x`` as a float32 jax array (no copy when it already is one)."""
  return jnp.asarray(x, jnp.float32)
