"""Adversarial attacks over a ``logits_fn(x) -> logits``: FGSM, PGD (Linf, L2, masked), APGD.

Images are float32 NHWC in [0, 1]; every attack returns ``x_adv`` of the same shape with
``|x_adv - x| <= eps`` in its norm, ``0 <= x_adv <= 1`` and ``x_adv == x`` where ``mask == 0``.
All are pure, work inside an outer ``jax.jit`` and under ``jax.vmap``; a plain call jits
internally with the hyper-parameters static.

- ``pgd(logits_fn, x, y, *, key, eps, step_size, steps, norm="linf", mask=None,
  random_start=True, restarts=1, targeted=False, loss="ce", early_stop=False, unroll=None)``
- ``fgsm(logits_fn, x, y, *, eps, ...)``; ``apgd(logits_fn, x, y, *, key, eps, steps=100,
  loss="ce"|"dlr", ...)``
- ``robust_accuracy(logits_fn, x, y, attacks, *, key=None, mask=None, batch_size=None)``
- losses ``"ce"``, ``"margin"`` (CW), ``"dlr"`` in ``percadv_jax.attacks.losses``;
  ``masked_logits_fn(logits_fn, mask)`` for a model that sees only the foreground.
- ``checked(attack)``: the same attack with ``jax.experimental.checkify`` checks of its inputs
  and guarantees, for use inside ``jit``.
- ``diagnostics``: checks that say when a robustness evaluation cannot be trusted (zero or
  non-finite gradients, a random model, a stronger attack finding more, no collapse at a large
  eps); ``diagnostics.run_all`` runs them all.
"""

from percadv_jax.attacks import losses
from percadv_jax.attacks import diagnostics
from percadv_jax.attacks._common import CPU_UNROLL_MAX_STEPS, checked, default_unroll
from percadv_jax.attacks.apgd import apgd
from percadv_jax.attacks.evaluation import Attack, robust_accuracy, step_size
from percadv_jax.attacks.pgd import fgsm, masked_logits_fn, pgd

__all__ = ["pgd", "fgsm", "apgd", "robust_accuracy", "Attack", "step_size", "masked_logits_fn", "losses", "checked",
           "diagnostics", "CPU_UNROLL_MAX_STEPS", "default_unroll"]
