"""Robust accuracy under several attacks, with the pointwise worst case per example."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import checks
from percadv_jax.attacks import _common as C

Attack = Callable[..., jax.Array]


def _named(attacks: Mapping[str, Attack] | Sequence[Attack]) -> dict[str, Attack]:
  if isinstance(attacks, Mapping):
    named = dict(attacks)
  elif isinstance(attacks, (list, tuple)):
    named = {}
    for i, a in enumerate(attacks):
      base = getattr(getattr(a, "func", a), "__name__", "attack")
      named[f"{i}_{base}"] = a
  else:
    raise ValueError("attacks must be a dict {name: attack} or a list of attacks, got "
                     f"{type(attacks).__name__}")
  if not named:
    raise ValueError("attacks is empty: give at least one attack")
  for name, a in named.items():
    if not callable(a):
      raise ValueError(f"attack {name!r} is not callable")
  return named


def robust_accuracy(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, y: jax.Array,
                    attacks: Mapping[str, Attack] | Sequence[Attack], *,
                    key: jax.Array | None = None, mask: jax.Array | None = None,
                    batch_size: int | None = None) -> dict[str, Any]:
  """Accuracy under a set of untargeted attacks, worst case per example.

  An example counts as robust only if it is classified correctly clean *and* after every attack
  (the pointwise worst case, as AutoAttack). Each attack's output is re-evaluated with
  ``logits_fn`` and checked to lie in [0, 1] and equal ``x`` where ``mask == 0``.

  Args:
    logits_fn: ``x [N,H,W,C] -> logits [N,K]`` (eval mode).
    x: float [N,H,W,C] in [0, 1]; y: int [N] true labels.
    attacks: dict ``{name: attack}`` or a list (named ``"{i}_{function name}"``). An attack is
      called as ``attack(logits_fn, x, y, key=key)`` (plus ``mask=mask`` when ``mask`` is
      given) and returns x_adv [N,H,W,C], e.g. ``functools.partial(pgd, eps=8/255,
      step_size=2/255, steps=10)`` or ``functools.partial(apgd, eps=8/255, loss="dlr")``.
    key: jax.random key, split per attack and per batch (needed by random attacks).
    mask: optional {0,1} [N,H,W,1] foreground masks, passed to every attack (masked PGD).
    batch_size: attack this many examples at a time (the last batch is padded, so every call has
      the same shapes and compiles once); None = all at once.
  Returns:
    dict with ``"clean"`` (float accuracy on x), ``"robust"`` (float, worst case over attacks),
    ``"per_attack"`` ({name: float accuracy under that attack alone}), ``"clean_correct"``
    (bool np.ndarray [N]), ``"robust_flags"`` (bool [N], True = survived every attack) and
    ``"flags"`` ({name: bool [N], True = correct clean and after that attack}).
  Raises:
    ValueError: on bad input or an attack output outside [0, 1] / changed outside the mask.
  """
  named = _named(attacks)
  checks.check_images(x, "x", channels=None)
  n = x.shape[0]
  checks.check_labels(y, n, None, "y")
  if mask is not None:
    checks.check_mask(mask, tuple(x.shape), "mask")
  x = np.asarray(x, np.float32)
  y = np.asarray(y, np.int32)
  mask_np = None if mask is None else np.broadcast_to(np.asarray(mask, np.float32),
                                                      x.shape[:3] + (np.shape(mask)[-1],))
  bs = n if batch_size is None else C.check_int(batch_size, "batch_size")
  bs = min(bs, n)
  flags = {name: np.zeros(n, bool) for name in named}
  clean = np.zeros(n, bool)
  for b, start in enumerate(range(0, n, bs)):
    idx = np.arange(start, start + bs) % n  # wraps around: the last batch is padded
    real = idx[:min(bs, n - start)]
    xb, yb = jnp.asarray(x[idx]), jnp.asarray(y[idx])
    clean[real] = np.asarray(C.correct(logits_fn, xb, yb))[:len(real)]
    for i, (name, attack) in enumerate(named.items()):
      kw = {}
      if key is not None:
        kw["key"] = jax.random.fold_in(jax.random.fold_in(key, i), b)
      if mask_np is not None:
        kw["mask"] = jnp.asarray(mask_np[idx])
      x_adv = attack(logits_fn, xb, yb, **kw)
      a = np.asarray(x_adv)
      if a.shape != xb.shape:
        raise ValueError(f"attack {name!r} returned shape {a.shape}, expected {xb.shape}")
      if not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0:
        raise ValueError(f"attack {name!r} returned values outside [0, 1]")
      if mask_np is not None and np.any((mask_np[idx] == 0) & (a != x[idx])):
        raise ValueError(f"attack {name!r} changed pixels outside the mask")
      flags[name][real] = np.asarray(C.correct(logits_fn, x_adv, yb))[:len(real)]
  flags = {name: clean & f for name, f in flags.items()}
  robust = clean.copy()
  for f in flags.values():
    robust &= f
  return {"clean": float(clean.mean()), "robust": float(robust.mean()),
          "per_attack": {name: float(f.mean()) for name, f in flags.items()},
          "clean_correct": clean, "robust_flags": robust, "flags": flags}
