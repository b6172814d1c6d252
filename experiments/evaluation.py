"""The experiments' one evaluation engine: ``robust_accuracy`` with finished results kept on disk.

Every attack evaluation of the binaries (Table 4, the accuracy-vs-eps curves, the sweep's cells,
the perceptual study's attacks) is one call of ``evaluate``: it runs
``percadv_jax.attacks.robust_accuracy`` (sharded over every device of every host, one compile per
architecture and attack set; PGD's step size is ``attacks.step_size``, the one rule) and keeps the
per-example results in ``<store>/<id>.npz`` beside a JSON of what they are. The id is a hash of
everything the result depends on (model and checkpoint step, attacks, eps, data, seed), so a rerun
finds finished evaluations, a changed setting never reuses a stale one, and nothing is deleted
when a grid changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from typing import Any, Callable, Mapping

import jax
import numpy as np

from percadv_jax import attacks as attacks_lib
from percadv_jax import io, parallel


def evaluation_id(spec: Mapping[str, Any]) -> str:
  """A short stable hash of a JSON-able description."""
  text = json.dumps(spec, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(attack: Any) -> str:
  """A stable text of an attack (no memory addresses): part of an evaluation's id."""
  import functools
  if isinstance(attack, functools.partial):
    kw = ", ".join(f"{k}={v!r}" for k, v in sorted(attack.keywords.items()))
    return f"{describe(attack.func)}({kw})"
  if callable(attack) and hasattr(attack, "__qualname__"):
    return f"{attack.__module__}.{attack.__qualname__}"
  return repr(attack)


def _read(npz: str) -> dict[str, np.ndarray]:
  try:
    with np.load(npz, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
    raise ValueError(f"{npz} is corrupt ({type(e).__name__}: {e}); delete it to recompute "
                     "that evaluation") from None


def _summary(flat: Mapping[str, np.ndarray], names: list[str]) -> dict:
  clean = flat["clean_correct"].astype(bool)
  out = {"n": int(clean.size), "clean": float(clean.mean()),
         "robust": float(flat["robust_flags"].astype(bool).mean()),
         "per_attack": {n: float(flat[f"flags/{n}"].astype(bool).mean()) for n in names},
         "linf_mean": {n: float(flat[f"linf/{n}"].mean()) for n in names},
         "l2_mean": {n: float(flat[f"l2/{n}"].mean()) for n in names}}
  return out


def evaluate(store: str | None, spec: Mapping[str, Any], *, logits_fn: Callable,
             data: Mapping[str, np.ndarray], attacks: Mapping[str, Callable],
             eps: float | Mapping[str, float] | None = None, key: jax.Array | None = None,
             masked: bool = False, batch_size: int = 128, return_adversarial: bool = False,
             mesh: Any = None, desc: str | None = None,
             diagnostics: bool | Mapping[str, Any] = False) -> dict[str, Any]:
  """Robust accuracy of one model under ``attacks``, cached in ``store`` under ``spec``.

  Args:
    store: directory of finished evaluations (None: no caching).
    spec: JSON-able description of everything besides the arrays that the result depends on
      (model / checkpoint and its step, data selection, seed, anything the attacks close over);
      the attacks' names and reprs and ``eps`` are added here.
    logits_fn: eval-mode ``x -> logits`` (a ``jax.tree_util.Partial`` shares compiles).
    data: ``{"image": [N,H,W,C], "label": [N], "mask": [N,H,W,1]}``; with ``masked`` the
      attacks change only pixels where the mask is 1 (the images are expected to be the masked
      model inputs already); without, the full-image setting uses a mask of ones (the same
      result, and full and masked models share one compile).
    attacks: ``{name: attack}`` (e.g. ``attacks.Attack("pgd", steps=10)``).
    eps: passed to every attack (traced), or None.
    key: PRNG key of the random starts.
    masked, batch_size, return_adversarial, mesh, desc, diagnostics: see
      ``attacks.robust_accuracy``.

  Returns:
    ``{"summary": {...}, "clean_correct", "robust_flags": bool [N], "flags", "linf", "l2":
    {name: [N]}, ["adversarial": {name: [N,H,W,C]}], ["diagnostics", "diagnostics_summary"]}``.
  """
  names = list(attacks)
  full_spec = {**spec, "attacks": {n: describe(a) for n, a in attacks.items()}, "eps": eps,
               "masked": masked, "n": int(len(data["label"])), "batch_size": batch_size,
               "return_adversarial": bool(return_adversarial),
               "diagnostics": diagnostics if isinstance(diagnostics, bool) else dict(diagnostics)}
  eid = evaluation_id(full_spec)
  npz = None if store is None else os.path.join(store, f"{eid}.npz")
  diag_path = None if store is None else os.path.join(store, f"{eid}.diagnostics.json")
  diag = None
  if npz is not None and os.path.exists(npz) and (not diagnostics or os.path.exists(diag_path)):
    flat = _read(npz)
    diag = io.read_json(diag_path) if diagnostics else None
  else:
    mask = data["mask"] if masked else np.ones_like(data["mask"])
    r = attacks_lib.robust_accuracy(logits_fn, data["image"], data["label"], attacks, key=key,
                                    mask=mask, eps=eps, batch_size=batch_size, mesh=mesh,
                                    return_adversarial=return_adversarial, desc=desc,
                                    diagnostics=diagnostics)
    if diagnostics:
      diag = {"checks": r["diagnostics"], "summary": r["diagnostics_summary"]}
    flat = {"clean_correct": r["clean_correct"], "robust_flags": r["robust_flags"]}
    for n in names:
      flat[f"flags/{n}"] = r["flags"][n]
      flat[f"linf/{n}"] = r["linf"][n]
      flat[f"l2/{n}"] = r["l2"][n]
      if return_adversarial:
        flat[f"adversarial/{n}"] = np.asarray(r["adversarial"][n], np.float32)
    if npz is not None and parallel.is_main_process():
      with io.atomic_open(npz, "wb") as f:
        np.savez(f, **flat)
      if diag is not None:
        io.write_json(diag_path, diag)
      io.write_json(os.path.join(store, f"{eid}.json"), full_spec)
  out: dict[str, Any] = {"summary": _summary(flat, names),
                         "clean_correct": flat["clean_correct"].astype(bool),
                         "robust_flags": flat["robust_flags"].astype(bool)}
  if diag is not None:
    out["diagnostics"], out["diagnostics_summary"] = diag["checks"], diag["summary"]
  for group in ("flags", "linf", "l2") + (("adversarial",) if return_adversarial else ()):
    out[group] = {n: flat[f"{group}/{n}"] for n in names}
  return out
