"""``Attack``: the one description of an attack, for training, evaluation, checks and sweeps.

An attack is its kind, radius, norm, iteration budget, step rule, restarts, loss and whether it
is restricted to foreground pixels. Training (``percadv_jax.train``), the catastrophic-overfitting
guard, the trust checks (``attacks.diagnostics``), ``robust_accuracy``, the sweep and both studies
all take an ``Attack``. The kinds are listed once, in ``KINDS``; adding one means adding its row
there and its branch in ``Attack.__call__``. ``attacks.autoattack`` runs AutoAttack's ensemble
as a list of them ("apgd", "apgd_t", "fab_t", "square").

The step rule (``step_size``) is the one rule of every stepped attack:
``step = step_factor * eps / steps``. The default factor of each kind is its paper's:

- ``pgd``: 2.5 (Madry et al. 2018: with 10 steps, eps 8/255 gives 2/255);
- ``fgsm``: 1 (Goodfellow et al. 2015: one step of size eps);
- ``fgsm_rs``: 1.25 (Wong, Rice and Kolter 2020, "fast is better than free": uniform random start
  in the ball, then one step of 1.25 eps);
- ``apgd``: adapts its own step (Croce and Hein 2020); the factor is not used. So do AutoAttack's
  other attacks: ``apgd_t`` (APGD-T, targeted DLR towards the ``targets`` most likely other
  classes), ``fab_t`` (FAB-T, a targeted minimum-norm attack) and ``square`` (the Square Attack,
  score-based, no gradients; ``steps`` counts its queries). Each has one objective of its own
  (the row's third entry), which is its ``loss``.

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
from percadv_jax.attacks.apgd import apgd, apgd_t
from percadv_jax.attacks.fab import fab_t
from percadv_jax.attacks.pgd import fgsm, pgd
from percadv_jax.attacks.square import square

# kind -> (default step factor or None when the kind sets its own steps, stepped: takes `steps`,
# the kind's own objective or None when it takes `loss`).
KINDS: dict[str, tuple[float | None, bool, str | None]] = {
    "fgsm": (1.0, False, None),
    "fgsm_rs": (1.25, False, None),
    "pgd": (2.5, True, None),
    "apgd": (None, True, None),
    "apgd_t": (None, True, "dlr"),
    "fab_t": (None, True, "margin"),
    "square": (None, True, "margin"),
}
# The kinds that attack the most likely other classes one after the other (``Attack.targets``).
TARGETED_KINDS = ("apgd_t", "fab_t")


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
      ``loss="dlr"``), "apgd_t" (APGD-T), "fab_t" (FAB-T), "square" (Square Attack).
    eps: radius (Linf: per pixel; L2: whole image), >= 0.
    steps: iterations of "pgd", "apgd", "apgd_t" and "fab_t" (per target), queries of "square"
      (the single-step kinds take 1).
    norm: "linf" or "l2".
    restarts: random restarts (per target for "apgd_t" and "fab_t"); the per-example worst case
      is kept.
    loss: "ce", "margin" or "dlr" (``percadv_jax.attacks.losses``); a kind with an objective of
      its own ("apgd_t": AutoAttack's targeted DLR, "fab_t" and "square": the margin) takes it
      as its loss (the default "ce" is replaced; another loss is a ValueError).
    step_factor: ``step_size``'s factor; None = the kind's default (see the module docstring).
    masked: restrict the attack to foreground pixels (the masks paper's masked setting).
    targets: "apgd_t" and "fab_t": how many of the most likely other classes are attacked;
      None = AutoAttack's 9, or ``num_classes - 1`` for a model with fewer other classes. More
      than ``num_classes - 1`` is a ValueError when called (``check_num_classes``). Other kinds:
      None.
    eot: None for a deterministic model ``logits_fn(x)``; an int >= 1 ("apgd" only) for a
      randomised model ``logits_fn(x, keys)`` (one key per example), each gradient averaged over
      ``eot`` draws (expectation over transformation; AutoAttack's "rand" version: 20).
  """
  kind: str = "pgd"
  eps: float = 8 / 255
  steps: int = 10
  norm: str = "linf"
  restarts: int = 1
  loss: str = "ce"
  step_factor: float | None = None
  masked: bool = False
  targets: int | None = None
  eot: int | None = None

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
    own_loss = KINDS[self.kind][2]
    if own_loss is not None and self.loss != own_loss:
      if self.loss != "ce":
        raise ValueError(f"attack kind {self.kind!r} has its own objective ({own_loss!r}); got "
                         f"loss={self.loss!r}")
      object.__setattr__(self, "loss", own_loss)
    if self.targets is not None:
      if self.kind not in TARGETED_KINDS:
        raise ValueError(f"targets is for the kinds {', '.join(TARGETED_KINDS)}, not "
                         f"{self.kind!r}")
      checks.check_int(self.targets, "targets", minimum=1)
    if self.eot is not None:
      if self.kind != "apgd":
        raise ValueError(f"eot (a randomised model) is for the kind 'apgd', not {self.kind!r}")
      checks.check_int(self.eot, "eot", minimum=1)
    if not KINDS[self.kind][1] and (self.steps != 1 or self.restarts != 1):
      # Single-step kinds: one description per attack (FGSM with steps=10 would be a second name
      # for the same attack).
      object.__setattr__(self, "steps", 1)
      object.__setattr__(self, "restarts", 1)

  def __repr__(self) -> str:
    # The experiments' store hashes this repr into an evaluation's id: ``targets`` and ``eot``
    # appear only when set, so the ids of attacks that use neither do not depend on them.
    fields = [f for f in dataclasses.fields(self)
              if f.name not in ("targets", "eot") or getattr(self, f.name) is not None]
    return "Attack(" + ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields) + ")"

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
    """``"PGD-10"``, ``"APGD-DLR-20"``, ``"FGSM"``, ``"FGSM-RS"``, ``"APGD-T-100"``,
    ``"SQUARE-5000"``."""
    name = self.kind.upper().replace("_", "-")
    name += "" if self.loss in ("ce", KINDS[self.kind][2]) else "-" + self.loss.upper()
    return f"{name}-{self.steps}" if KINDS[self.kind][1] else name

  def check_num_classes(self, num_classes: int) -> None:
    """Raises ValueError when this attack cannot run on a ``num_classes``-way model (more
    ``targets`` than other classes; a DLR loss with too few classes)."""
    if self.kind in TARGETED_KINDS:
      C.resolve_targets(self.targets, num_classes)
    need = 4 if self.kind == "apgd_t" else 3 if self.loss == "dlr" else 2
    if num_classes < need:
      raise ValueError(f"attack {self.label} needs at least {need} classes, the model has "
                       f"{num_classes}")

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
    if self.kind == "apgd":
      return apgd(logits_fn, x, y, key=key, steps=self.steps, restarts=self.restarts,
                  eot=self.eot, **common)
    del common["loss"]
    if self.kind == "apgd_t":
      return apgd_t(logits_fn, x, y, key=key, steps=self.steps, restarts=self.restarts,
                    targets=self.targets, **common)
    if self.kind == "fab_t":
      return fab_t(logits_fn, x, y, key=key, steps=self.steps, restarts=self.restarts,
                   targets=self.targets, **common)
    return square(logits_fn, x, y, key=key, queries=self.steps, restarts=self.restarts,
                  **common)
