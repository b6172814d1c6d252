"""Adversarial attacks over a ``logits_fn(x) -> logits``: one ``Attack`` description, one
``Evaluation`` record.

Images are float32 NHWC in [0, 1]; every attack returns ``x_adv`` of the same shape with
``|x_adv - x| <= eps`` in its norm, ``0 <= x_adv <= 1`` and ``x_adv == x`` where ``mask == 0``.
All are pure, work inside an outer ``jax.jit`` and under ``jax.vmap``; a plain call jits
internally with the hyper-parameters static.

- ``Attack(kind, eps, steps, norm, restarts, loss, step_factor, masked, targets, eot)``: the one
  description of an attack (kinds in ``KINDS``: "fgsm", "fgsm_rs", "pgd", "apgd", and
  AutoAttack's "apgd_t", "fab_t", "square"), called as ``attack(logits_fn, x, y, *, key,
  mask)``; ``step_size`` is the one step rule and ``free_pixels`` the one definition of the
  pixels an attack may change (the masked setting).
- ``robust_accuracy(logits_fn, x, y, {name: Attack}, *, key, mask, batch_size, trust_checks,
  cascade)`` -> ``Evaluation`` (per-example clean / survived / worst case / norms;
  ``.summary()``).
- ``autoattack(logits_fn, x, y, *, key, eps, norm="linf", version="standard", mask=None,
  masked=False, batch_size=None, attacks=None)`` -> ``Evaluation``: AutoAttack's cascade
  (``autoattack_attacks`` gives its ``{name: Attack}``).
- The functions behind the kinds: ``pgd(logits_fn, x, y, *, key, eps, step_size, steps,
  norm="linf", mask=None, random_start=True, restarts=1, targeted=False, loss="ce",
  early_stop=False, unroll=1)``, ``fgsm(...)``, ``apgd(..., loss="ce"|"dlr", eot=None)``,
  ``apgd_t(..., targets=None)``, ``fab_t(..., targets=None)``, ``square(..., queries=5000)``.
- losses ``"ce"``, ``"margin"`` (CW), ``"dlr"`` in ``percadv_jax.attacks.losses``.
- ``checked(attack)``: the same attack with ``jax.experimental.checkify`` checks of its inputs
  and guarantees, for use inside ``jit``.
- ``bpda_masked_logits(logits_fn, segment_fn)``: the model of an adaptive attack on a masked
  model whose mask is computed from the image it receives (a host segmenter, BPDA gradient).
- ``diagnostics``: checks that say when a robustness evaluation cannot be trusted (zero or
  non-finite gradients, a random model, a stronger attack finding more, no collapse at a large
  eps); ``diagnostics.run_all`` runs them all.
- ``checklist``: a robustness checklist per evaluated model (Carlini et al. 2019, Tramer et al.
  2020): success vs eps, more iterations, more restarts, single step vs iterative, black box vs
  white box, transfer, the hyper-parameters and the trust checks, each "pass" or "flag" with its
  numbers (``checklist.run``, ``checklist.write``).
- ``core``: the shared pieces (validation, projections, keys, the objective) other attack
  families build on (``percadv_jax.perceptual.ssim_attack``).
"""

from percadv_jax.attacks import core
from percadv_jax.attacks import losses
from percadv_jax.attacks import diagnostics
from percadv_jax.attacks import checklist
from percadv_jax.attacks.adaptive import bpda_masked_logits
from percadv_jax.attacks.apgd import apgd, apgd_t
from percadv_jax.attacks.attack import KINDS, Attack, free_pixels, step_size
from percadv_jax.attacks.autoattack import autoattack, autoattack_attacks
from percadv_jax.attacks.core import checked
from percadv_jax.attacks.evaluation import Evaluation, robust_accuracy
from percadv_jax.attacks.fab import fab_t
from percadv_jax.attacks.pgd import fgsm, pgd
from percadv_jax.attacks.square import square

__all__ = ["Attack", "Evaluation", "KINDS", "apgd", "apgd_t",
           "autoattack", "autoattack_attacks", "bpda_masked_logits", "checked", "checklist",
           "core", "diagnostics", "fab_t", "fgsm", "free_pixels", "losses", "pgd",
           "robust_accuracy", "square", "step_size"]
