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
"""

from percadv_jax.attacks import losses
from percadv_jax.attacks._common import CPU_UNROLL_MAX_STEPS, default_unroll
from percadv_jax.attacks.apgd import apgd
from percadv_jax.attacks.evaluation import robust_accuracy
from percadv_jax.attacks.pgd import fgsm, masked_logits_fn, pgd

__all__ = ["pgd", "fgsm", "apgd", "robust_accuracy", "masked_logits_fn", "losses",
           "CPU_UNROLL_MAX_STEPS", "default_unroll"]
