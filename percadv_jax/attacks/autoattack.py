"""AutoAttack (Croce & Hein, ICML 2020): the parameter-free ensemble, as ``Attack`` kinds run in
one cascaded ``robust_accuracy``.

``autoattack(logits_fn, x, y, key=..., eps=...)`` is AutoAttack's ``run_standard_evaluation``:
each attack of the version runs, in order, only on the examples still robust, and the
``Evaluation`` it returns holds per example the clean prediction, the survival after each attack
(the cascade's: AutoAttack's "robust accuracy after APGD-CE / APGD-T / ..." lines are
``summary()["per_attack"]``) and the worst case (``robust``). ``autoattack_attacks`` gives the
same ``{name: Attack}`` for ``robust_accuracy(..., cascade=True)`` directly, e.g. through the
experiments' evaluation store.

Versions (AutoAttack's budgets):

- ``"standard"``: APGD-CE (100 iterations, 1 restart), APGD-T (100 iterations, 9 targets),
  FAB-T (100 iterations, 9 targets), Square (5000 queries, p_init 0.8); the targets are
  ``num_classes - 1`` on a model with fewer than 10 classes.
- ``"rand"`` (randomised models, ``logits_fn(x, keys)`` with one key per example): APGD-CE and
  APGD-DLR, 100 iterations, each gradient the mean over 20 draws (EoT).
- ``"custom"``: the ``attacks`` given, by AutoAttack's names ("apgd-ce", "apgd-dlr",
  "apgd-t", "fab-t", "square"; the standard budgets) or as ``Attack`` instances (own budgets).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax

from percadv_jax import checks
from percadv_jax.attacks import core as C
from percadv_jax.attacks.attack import Attack
from percadv_jax.attacks.evaluation import Evaluation, robust_accuracy

VERSIONS = ("standard", "rand", "custom")
# AutoAttack's budgets: iterations of the APGDs and FAB-T, Square's queries, EoT draws of "rand".
ITERATIONS = 100
QUERIES = 5000
EOT_DRAWS = 20
# AutoAttack's attack names -> (record name, kind, loss, steps) at the standard budgets.
NAMED = {
    "apgd-ce": ("apgd_ce", "apgd", "ce", ITERATIONS),
    "apgd-dlr": ("apgd_dlr", "apgd", "dlr", ITERATIONS),
    "apgd-t": ("apgd_t", "apgd_t", "ce", ITERATIONS),
    "fab-t": ("fab_t", "fab_t", "ce", ITERATIONS),
    "square": ("square", "square", "ce", QUERIES),
}
STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
RAND = ("apgd-ce", "apgd-dlr")


def autoattack_attacks(eps: float, *, norm: str = "linf", version: str = "standard",
                       masked: bool = False, attacks: Sequence[Any] | None = None
                       ) -> dict[str, Attack]:
  """The attacks of an AutoAttack version, in AutoAttack's order: ``{name: Attack}``.

  Args:
    eps: radius, >= 0 (Linf per pixel, L2 per image).
    norm: "linf" or "l2".
    version: "standard", "rand" or "custom" (see the module docstring).
    masked: the masked setting (only foreground pixels change).
    attacks: "custom" only: AutoAttack names (``NAMED``) and / or ``Attack`` instances (their
      ``eps``, ``norm`` and ``masked`` are replaced by this call's); named after AutoAttack
      (``apgd_ce``, ...) or the ``Attack``'s label.
  Returns:
    ``{"apgd_ce": Attack("apgd", ...), "apgd_t": ..., "fab_t": ..., "square": ...}`` for
    "standard".
  Raises:
    ValueError: an unknown version or attack name, ``attacks`` without version "custom" (or
      "custom" without ``attacks``), a duplicate name, eps < 0, an unknown norm.
  """
  checks.check_choice(version, "version", VERSIONS)
  eps = checks.check_float(eps, "eps", minimum=0.0)
  checks.check_choice(norm, "norm", C.NORMS)
  masked = checks.check_bool(masked, "masked")
  if (attacks is not None) != (version == "custom"):
    raise ValueError("attacks= lists the attacks of version='custom' (and that version needs "
                     f"them); got version={version!r} with attacks={attacks!r}")
  if version == "custom":
    if isinstance(attacks, (str, Attack)) or not isinstance(attacks, Sequence) or not attacks:
      raise ValueError(f"attacks must be a non-empty list of AutoAttack names ({', '.join(NAMED)})"
                       f" or Attack instances, got {attacks!r}")
    items = list(attacks)
  else:
    items = list(STANDARD if version == "standard" else RAND)
  eot = EOT_DRAWS if version == "rand" else None
  out: dict[str, Attack] = {}
  for item in items:
    if isinstance(item, Attack):
      name = item.label
      attack = dataclasses.replace(item, eps=eps, norm=norm, masked=masked)
    elif isinstance(item, str) and item in NAMED:
      name, kind, loss, steps = NAMED[item]
      attack = Attack(kind, eps=eps, steps=steps, norm=norm, loss=loss, masked=masked, eot=eot)
    else:
      raise ValueError(f"unknown AutoAttack attack {item!r}: use one of {', '.join(NAMED)} or "
                       "an Attack")
    if name in out:
      raise ValueError(f"attack {name!r} is listed twice")
    out[name] = attack
  return out


def autoattack(logits_fn: Callable, x: Any, y: Any, *, key: jax.Array, eps: float,
               norm: str = "linf", version: str = "standard", mask: Any = None,
               masked: bool = False, batch_size: int | None = None,
               attacks: Sequence[Any] | None = None) -> Evaluation:
  """AutoAttack's robust accuracy of ``logits_fn`` at radius ``eps`` (see the module docstring).

  Runs ``robust_accuracy(logits_fn, x, y, autoattack_attacks(...), cascade=True)``: sharded over
  the devices, deterministic from ``key`` (each attack ``fold_in(key, i)``, each batch and
  example its own key), per-example worst case.

  Deviations from AutoAttack's code (``autoattack.AutoAttack``), each for a reason:
  - randomness comes from ``key``, never from the clock or a global seed (reproducibility);
  - within an attack every batch keeps its shape and each example has its own keys (one compile
    per shape; an example's result does not depend on its batch); the per-attack deviations are
    in ``apgd.apgd_t``, ``fab.fab_t`` and ``square.square``;
  - the model checks AutoAttack runs first (randomness, output range, dynamic graph) are
    ``attacks.diagnostics`` (``robust_accuracy``'s ``trust_checks``), not run here;
  - "rand" takes a randomised model as ``logits_fn(x, keys)`` (JAX has no hidden global RNG);
  - AutoAttack's "plus" version and its L1 attacks are not provided (the library's attacks are
    Linf and L2); "custom" runs any list of the kinds, with any budgets.

  Args:
    logits_fn: ``x [N,H,W,C] -> logits [N,K]`` in eval mode (a ``jax.tree_util.Partial`` shares
      compiles); for version "rand" a randomised model ``logits_fn(x, keys [N]) -> logits``
      drawing example i's randomness from ``keys[i]``.
    x: float [N,H,W,C] in [0, 1]; y: int [N] true labels.
    key: jax.random key (required: every version is random).
    eps: radius, >= 0.
    norm: "linf" or "l2".
    version: "standard", "rand" or "custom" (with ``attacks``).
    mask: {0,1} [N,H,W,1] foreground masks (needed with ``masked``).
    masked: change only pixels where ``mask == 1``.
    batch_size: examples per batch (None: all at once).
    attacks: version "custom": see ``autoattack_attacks``.
  Returns:
    an ``Evaluation`` (``.summary()``: clean, robust, the cascade's accuracy after each attack).
  Raises:
    ValueError: before any work, on bad input: an unknown version, more targets than classes - 1,
      a budget < 1, eps < 0, a mask of the wrong shape, no key, and ``robust_accuracy``'s checks.
  """
  if key is None:
    raise ValueError("autoattack needs key= (its attacks start at random"
                     + ("; the 'rand' version also draws the randomised model from it)"
                        if version == "rand" else ")"))
  named = autoattack_attacks(eps, norm=norm, version=version, masked=masked, attacks=attacks)
  return robust_accuracy(logits_fn, x, y, named, key=key, mask=mask, batch_size=batch_size,
                         cascade=True)
