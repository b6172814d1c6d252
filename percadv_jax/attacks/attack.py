"""``Attack``: the one description of an attack, for training, evaluation, checks and sweeps.

An attack is its kind, radius, norm, iteration budget, step rule, restarts, loss and whether it
is restricted to foreground pixels. Training (``percadv_jax.train``), the catastrophic-overfitting
guard, the trust checks (``attacks.diagnostics``), ``robust_accuracy``, the sweep and both studies
all take an ``Attack``. The kinds are listed once, in ``KINDS``; adding one means adding its row
there and its branch in ``Attack.__call__``.

The step rule (``step_size``) is the one rule of every stepped attack:
``step = step_factor * eps / steps``. The default factor of each kind is its paper's:

- ``pgd``: 2.5 (Madry et al. 2018: with 10 steps, eps 8/255 gives 2/255);
- ``fgsm``: 1 (Goodfellow et al. 2015: one step of size eps);
- ``fgsm_rs``: 1.25 (Wong, Rice and Kolter 2020, "fast is better than free": uniform random start
  in the ball, then one step of 1.25 eps);
- ``apgd``: adapts its own step (Croce and Hein 2020); the factor is not used.

The masked setting (masks paper): the adversary may change only foreground pixels.
``free_pixels(mask, masked)`` is the one function that says which pixels an attack may change.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import checks
from percadv_jax.attacks import core as C
from percadv_jax.attacks import losses
from percadv_jax.attacks.apgd import apgd
from percadv_jax.attacks.pgd import fgsm, pgd

# kind -> (default step factor or None when the kind sets its own steps, stepped: takes `steps`).
KINDS: dict[str, tuple[float | None, bool]] = {
    "fgsm": (1.0, False),
    "fgsm_rs": (1.25, False),
    "pgd": (2.5, True),
    "apgd": (None, True),
}


def step_size(eps: float | jax.Array, steps: int, *, factor: float = KINDS["pgd"][0]
              ) -> float | jax.Array:
  """The step rule of every stepped attack: ``factor * eps / steps`` (scalar or [N])."""
  steps = checks.check_int(steps, "steps", minimum=1)
  return factor * eps / steps


def free_pixels(mask: Any, masked: bool, shape: tuple[int, ...]) -> jax.Array:
  """Where an attack may change pixels: float32 [N,H,W,1] in {0, 1} (traceable).

  The masked setting (``masked=True``) frees the foreground (``mask``, [N,H,W,1] or broadcastable
  to ``shape[:3] + (1,)``); the full-image setting frees every pixel (ones). An attack with a
  mask of ones equals the unmasked attack bit for bit, so both settings can run one compiled
  attack with this mask as an input.

  Args:
    mask: {0, 1} foreground masks, or None (only with ``masked=False``).
    masked: the masked setting.
    shape: the images' shape [N,H,W,C].
  """
  masked = checks.check_bool(masked, "masked")
  out_shape = tuple(shape[:3]) + (1,)
  if not masked:
    return jnp.ones(out_shape, jnp.float32)
  if mask is None:
    raise ValueError("the masked setting (masked=True) needs the foreground mask=")
  if checks.is_concrete(mask):
    checks.check_mask(mask, tuple(shape), "mask")
  return jnp.broadcast_to(jnp.asarray(mask, jnp.float32), out_shape)


@dataclasses.dataclass(frozen=True)
class Attack:
  """One attack (hashable: equal attacks share one compile).

  Called as ``attack(logits_fn, x, y, *, key=None, mask=None, eps=None) -> x_adv``; ``eps``
  overrides ``self.eps`` (a traced radius: one compile serves every radius, as the
  accuracy-vs-eps curves need). With ``masked=True`` only pixels where ``mask == 1`` change;
  with ``masked=False`` the mask is ignored (every pixel is free: ``free_pixels``). A concrete
  radius of 0 returns ``x`` (float32).

  Attributes:
    kind: one of ``KINDS``: "fgsm", "fgsm_rs", "pgd", "apgd" (APGD-CE, or APGD-DLR with
      ``loss="dlr"``).
    eps: radius (Linf: per pixel; L2: whole image), >= 0.
    steps: iterations of "pgd" and "apgd" (the single-step kinds take 1).
    norm: "linf" or "l2".
    restarts: random restarts ("pgd", "apgd"); the per-example worst case is kept.
    loss: "ce", "margin" or "dlr" (``percadv_jax.attacks.losses``).
    step_factor: ``step_size``'s factor; None = the kind's default (see the module docstring).
    masked: restrict the attack to foreground pixels (the masks paper's masked setting).
  """
  kind: str = "pgd"
  eps: float = 8 / 255
  steps: int = 10
  norm: str = "linf"
  restarts: int = 1
  loss: str = "ce"
  step_factor: float | None = None
  masked: bool = False

  def __post_init__(self):
    checks.check_choice(self.kind, "attack kind", tuple(KINDS))
    checks.check_float(self.eps, "eps", minimum=0.0)
    checks.check_int(self.steps, "steps", minimum=1)
    checks.check_choice(self.norm, "norm", C.NORMS)
    checks.check_int(self.restarts, "restarts", minimum=1)
    checks.check_choice(self.loss, "loss", losses.LOSSES)
    if self.step_factor is not None:
      checks.check_float(self.step_factor, "step_factor", minimum=0.0, min_inclusive=False)
    checks.check_bool(self.masked, "masked")
    if not KINDS[self.kind][1] and (self.steps != 1 or self.restarts != 1):
      # Single-step kinds: one description per attack (FGSM with steps=10 would be a second name
      # for the same attack).
      object.__setattr__(self, "steps", 1)
      object.__setattr__(self, "restarts", 1)

  @property
  def factor(self) -> float | None:
    """The step factor in use (``step_factor`` or the kind's default; None for APGD)."""
    return self.step_factor if self.step_factor is not None else KINDS[self.kind][0]

  @property
  def step(self) -> float | None:
    """The absolute step at ``self.eps`` (None for APGD)."""
    return None if self.factor is None else step_size(self.eps, self.steps, factor=self.factor)

  @property
  def label(self) -> str:
    """``"PGD-10"``, ``"APGD-DLR-20"``, ``"FGSM"``, ``"FGSM-RS"``."""
    name = self.kind.upper().replace("_", "-")
    name += "" if self.loss == "ce" else "-" + self.loss.upper()
    return f"{name}-{self.steps}" if KINDS[self.kind][1] else name

  def __call__(self, logits_fn: Callable, x: jax.Array, y: jax.Array, *,
               key: jax.Array | None = None, mask: jax.Array | None = None,
               eps: Any = None) -> jax.Array:
    eps = self.eps if eps is None else eps
    mask = free_pixels(mask, self.masked, tuple(np.shape(x)))
    if checks.is_concrete(eps) and np.ndim(eps) == 0 and float(eps) == 0.0:
      return jnp.asarray(x, jnp.float32)  # radius 0: the identity (a step of 0 is no step)
    common = dict(eps=eps, norm=self.norm, mask=mask, loss=self.loss)
    if self.kind in ("fgsm", "fgsm_rs"):
      return fgsm(logits_fn, x, y, key=key, step_size=step_size(eps, 1, factor=self.factor),
                  random_start=self.kind == "fgsm_rs", **common)
    if self.kind == "pgd":
      return pgd(logits_fn, x, y, key=key, steps=self.steps, restarts=self.restarts,
                 step_size=step_size(eps, self.steps, factor=self.factor), **common)
    return apgd(logits_fn, x, y, key=key, steps=self.steps, restarts=self.restarts, **common)
