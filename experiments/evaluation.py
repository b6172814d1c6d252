"""The experiments' evaluation store: ``attacks.robust_accuracy`` with finished records on disk.

Every attack evaluation of the binaries (Table 4, the accuracy-vs-eps curves, the sweep's cells,
the perceptual study's attacks) is one call of ``evaluate``: it runs
``percadv_jax.attacks.robust_accuracy`` (sharded over every device of every host) and saves the
``attacks.Evaluation`` it returns, exactly: ``<store>/<id>.npz`` holds ``Evaluation.to_arrays()``,
``<id>.checks.json`` the trust checks, ``<id>.json`` what the record is. The id is a hash of
everything the result depends on: the caller's description (model, checkpoint step, data, seed),
the attacks' reprs, and a hash of the model's weights (the arrays of a ``jax.tree_util.Partial``
logits_fn), so a rerun finds finished evaluations, a changed setting or a replaced checkpoint
never reuses a stale one, and nothing is deleted when a grid changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from percadv_jax import attacks as attacks_lib
from percadv_jax import checks, io, parallel


def evaluation_id(spec: Mapping[str, Any]) -> str:
  """A short stable hash of a JSON-able description."""
  text = json.dumps(spec, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights_hash(logits_fn: Callable) -> str:
  """SHA-256 (16 hex digits) of the arrays a ``jax.tree_util.Partial`` logits_fn carries (its
  weights), or of a plain function's qualified name (whose weights are compiled in)."""
  h = hashlib.sha256()
  if isinstance(logits_fn, jax.tree_util.Partial):
    fn = logits_fn.func
    h.update(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}".encode())
    for leaf in jax.tree_util.tree_leaves((logits_fn.args, logits_fn.keywords)):
      a = np.asarray(leaf)
      h.update(f"{a.dtype}{a.shape}".encode())
      h.update(np.ascontiguousarray(a).tobytes())
  else:
    h.update(f"{getattr(logits_fn, '__module__', '')}.{getattr(logits_fn, '__qualname__', '')}"
             .encode())
  return h.hexdigest()[:16]


def _read(npz: str, checks_path: str | None, names: Sequence[str], n: int,
          adversarial: bool) -> attacks_lib.Evaluation:
  """The record at ``npz`` (and its trust checks), checked to be the one asked for: the attacks
  ``names`` on ``n`` examples, with their adversarial images when ``adversarial``.

  Raises:
    ValueError: a corrupt file, or one of another schema or another evaluation (naming the
      file and what differs; deleting it makes the rerun compute that evaluation again).
  """
  try:
    with np.load(npz, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
    raise ValueError(f"{npz} is corrupt ({type(e).__name__}: {e}); delete it to recompute "
                     "that evaluation") from None
  checks = io.read_json(checks_path) if checks_path else None
  if checks_path and not isinstance(checks, dict):
    raise ValueError(f"{checks_path} is not a record of trust checks (a JSON object expected, "
                     f"got {type(checks).__name__}); delete it to recompute that evaluation")
  try:
    ev = attacks_lib.Evaluation.from_arrays(arrays, checks=checks)
  except ValueError as e:
    raise ValueError(f"{npz} is not an evaluation record ({e}); delete it to recompute that "
                     "evaluation") from None
  if sorted(ev.names) != sorted(names) or ev.clean.size != n:
    raise ValueError(f"{npz} is not this evaluation (it holds attacks {sorted(ev.names)} on "
                     f"{ev.clean.size} examples, this one runs {sorted(names)} on {n}); delete "
                     "it to recompute that evaluation")
  if adversarial and sorted(ev.x_adv or {}) != sorted(names):
    raise ValueError(f"{npz} lacks the adversarial images of {sorted(names)} (it holds "
                     f"{sorted(ev.x_adv or {})}); delete it to recompute that evaluation")
  return ev


def evaluate(store: str | None, spec: Mapping[str, Any], *, logits_fn: Callable,
             data: Mapping[str, np.ndarray], attacks: Mapping[str, Any],
             key: jax.Array | None = None, batch_size: int = 128,
             return_adversarial: bool = False, mesh: Any = None, desc: str | None = None,
             trust_checks: attacks_lib.diagnostics.Options | None = None,
             cascade: bool = False) -> attacks_lib.Evaluation:
  """The ``Evaluation`` of one model under ``attacks``, kept in ``store`` under ``spec``.

  Args:
    store: directory of finished evaluations (None: no caching).
    spec: JSON-able description of everything besides the weights, the arrays and the attacks
      that the result depends on (model / checkpoint and its step, data selection, seed); the
      weights' hash and the attacks' reprs (``Attack`` is a frozen dataclass: its repr names
      every field) are added here.
    logits_fn: eval-mode ``x -> logits`` (a ``jax.tree_util.Partial`` shares compiles).
    data: ``{"image": [N,H,W,C], "label": [N], "mask": [N,H,W,1]}``; a masked ``Attack``
      changes only pixels where the mask is 1.
    attacks: ``{name: attacks.Attack}`` (see ``attacks.robust_accuracy``).
    key, batch_size, return_adversarial, mesh, desc, trust_checks, cascade: see
      ``attacks.robust_accuracy`` (``cascade=True`` with ``attacks.autoattack_attacks(...)`` is
      AutoAttack).
  """
  full_spec = {**spec, "weights": weights_hash(logits_fn),
               "attacks": {n: repr(a) for n, a in attacks.items()},
               "n": int(len(data["label"])), "batch_size": batch_size,
               "return_adversarial": bool(return_adversarial),
               "trust_checks": None if trust_checks is None else dataclasses.asdict(trust_checks)}
  if cascade:  # only when set: a plain evaluation's id does not depend on the option
    full_spec["cascade"] = True
  eid = evaluation_id(full_spec)
  npz = None if store is None else os.path.join(store, f"{eid}.npz")
  checks_path = None if store is None or trust_checks is None else os.path.join(
      store, f"{eid}.checks.json")
  if npz is not None and os.path.exists(npz) and (checks_path is None
                                                 or os.path.exists(checks_path)):
    return _read(npz, checks_path, list(attacks), int(len(data["label"])),
                 bool(return_adversarial))
  ev = attacks_lib.robust_accuracy(logits_fn, data["image"], data["label"], attacks, key=key,
                                   mask=data.get("mask"), batch_size=batch_size, mesh=mesh,
                                   return_adversarial=return_adversarial, desc=desc,
                                   trust_checks=trust_checks, cascade=cascade)
  if npz is not None and parallel.is_main_process():
    with io.atomic_open(npz, "wb") as f:
      np.savez(f, **ev.to_arrays())
    if checks_path is not None:
      io.write_json(checks_path, ev.checks)
    io.write_json(os.path.join(store, f"{eid}.json"), full_spec)
  return ev


def curve(store: str | None, spec: Mapping[str, Any], *, attack: attacks_lib.Attack,
          eps_values: Sequence[float], **kw: Any) -> list[dict[str, Any]]:
  """Accuracy vs eps: one ``evaluate`` of ``attack`` at each radius (traced: one compile).

  Returns:
    ``[{"eps": e, **Evaluation.summary()}]`` in the order of ``eps_values``; the attack is named
    ``attack.kind`` in each record.
  """
  return [{"eps": float(e), **evaluate(
      store, spec, attacks={attack.kind: dataclasses.replace(attack, eps=float(e))},
      **kw).summary()} for e in eps_values]


def checklist_options(section: Any, field: str) -> attacks_lib.checklist.Options:
  """The robustness checklist's budgets from a config section ``{enabled, examples, restarts,
  square_queries}`` named ``field`` (e.g. ``"eval.checklist"``), checked.

  The trust items reuse the evaluated attack's trust checks (``trust=None``: with the study's
  diagnostics off they are skipped).

  Raises:
    TypeError / ValueError: naming ``<field>.<name>``.
  """
  checks.check_bool(section.enabled, f"{field}.enabled")
  try:
    return attacks_lib.checklist.Options(examples=section.examples, restarts=section.restarts,
                                         square_queries=section.square_queries, trust=None)
  except (TypeError, ValueError) as err:
    raise type(err)(f"{field}.{err}") from None


def checklist_evaluate(store: str | None, spec: Mapping[str, Any], *, logits_fn: Callable,
                       data: Mapping[str, np.ndarray], batch_size: int, desc: str
                       ) -> attacks_lib.checklist.EvaluateFn:
  """``attacks.checklist.run``'s ``evaluate`` callback: the checklist's attacks on ``data`` (the
  checked examples, ``{"image", "label", "mask"}`` of length n) through ``evaluate`` in
  ``store`` under ``spec`` with ``"data": "checklist<n>"`` (a resumed run finds them)."""
  n = int(len(data["label"]))

  def run(named, *, key, return_adversarial):
    return evaluate(store, {**spec, "data": f"checklist{n}"}, logits_fn=logits_fn, data=data,
                    attacks=named, key=key, batch_size=min(batch_size, n),
                    return_adversarial=return_adversarial, desc=desc)
  return run
