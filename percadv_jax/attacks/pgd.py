"""FGSM and PGD (Linf, L2), masked, targeted or not, with restarts; jittable and vmappable.

PGD (Madry et al. 2018) as in Foolbox's ``LinfPGD`` / ``L2PGD``: from ``x`` (or a uniform random
start in the ball) repeat ``x <- P(x + step_size * s(grad))`` with ``s`` the sign (linf) or the
L2-normalised gradient (l2) and ``P`` the projection onto the eps-ball, then the box [0, 1].

Masked PGD (masks paper): with ``mask`` [N,H,W,1] (or anything broadcastable to x) in {0, 1} the
gradient is zeroed where ``mask == 0`` *before* the sign / L2 normalisation, the random start is
masked, and after every projection ``x_adv`` is reset to ``x`` where ``mask == 0``.

Guarantees on every output: ``|x_adv - x| <= eps`` in the chosen norm (up to float rounding,
< 1e-6), ``0 <= x_adv <= 1``, ``x_adv == x`` exactly where ``mask == 0``. They hold whatever
the model returns and under ``jit`` too, where values cannot be checked:

- a NaN or inf entry of the input gradient counts as 0 (no step along it), and a non-finite
  iterate coordinate is reset to ``x``: a ``logits_fn`` returning NaN never gives a NaN ``x_adv``;
- a traced ``eps`` or ``step_size`` below 0 (or NaN) acts as 0 (no perturbation), never as its
  absolute value;
- a traced mask is read as ``mask > 0.5``: pixels with 0.5 (or NaN) are left unchanged.

Concrete arguments are validated before tracing (a ValueError names the problem); to have the
same checks raised from inside ``jit``, wrap an attack with ``percadv_jax.attacks.checked`` and
run it under ``jax.experimental.checkify.checkify``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from percadv_jax import checks
from percadv_jax.attacks import core as C
from percadv_jax.attacks import losses

LogitsFn = Callable[[jax.Array], jax.Array]


@C.jit_logits_fn(static_argnames=(
    "steps", "norm", "random_start", "restarts", "targeted", "loss", "early_stop",
    "unroll"))
def _pgd(logits_fn, x, y, keys, eps, step_size, mask, *, steps, norm, random_start, restarts,
         targeted, loss, early_stop, unroll):
  n = x.shape[0]
  eps = C.per_example_nonneg(eps, n)
  step = C.per_example_nonneg(step_size, n)
  mask = C.binary_mask(mask)
  objective = C.objective(logits_fn, loss, targeted, y)
  value_and_grad = jax.value_and_grad(objective, has_aux=True)

  def step_fn(xa, g):
    xa = xa + step * C.direction(g, norm, mask)
    return C.project(xa, x, eps, norm, mask)

  def plain_body(xa, _):
    _, g = value_and_grad(xa)
    return step_fn(xa, g), None

  def evaluate(xa):
    per_ex, z = objective(xa)[1]
    return per_ex, losses.is_success(z, y, targeted=targeted)

  def early_body(carry, _):
    # Freezes, per example, the first iterate that is adversarial; the others keep going. When
    # every example of the batch is frozen the step is skipped (no work, same results).
    def active(c):
      xa, done = c
      (_, (_, z)), g = value_and_grad(xa)
      done = done | losses.is_success(z, y, targeted=targeted)
      return C.select(done, xa, step_fn(xa, g)), done
    return lax.cond(jnp.all(carry[1]), lambda c: c, active, carry), None

  def run(key_r):
    xa = C.random_start(key_r, x, eps, norm, mask) if random_start else x
    if early_stop:
      (xa, done), _ = lax.scan(early_body, (xa, jnp.zeros((n,), bool)), None, length=steps,
                               unroll=unroll)
    else:
      xa, _ = lax.scan(plain_body, xa, None, length=steps, unroll=unroll)
    if restarts == 1:
      return xa, None, None
    per_ex, succ = evaluate(xa)
    return xa, succ, per_ex

  return C.worst_over_restarts(run, keys, restarts, unroll)


def pgd(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array | None = None,
        eps: float | jax.Array, step_size: float | jax.Array, steps: int, norm: str = "linf",
        mask: jax.Array | None = None, random_start: bool = True, restarts: int = 1,
        targeted: bool = False, loss: str = "ce", early_stop: bool = False,
        unroll: int | bool = 1) -> jax.Array:
  """Projected gradient descent (Madry et al. 2018); see the module docstring.

  Args:
    logits_fn: ``x [N,H,W,C] -> logits [N,K]``, examples independent of each other (e.g. a model
      in eval mode). A plain function is compiled in (a new closure per call means a new
      compile, so define it once and reuse it); a ``jax.tree_util.Partial(apply, variables)``
      (``apply(variables, x) -> logits`` defined once; ``train.make_logits_fn`` builds one) has
      its arrays traced, so models of one architecture share one compile.
    x: float [N,H,W,C] in [0, 1].
    y: int [N] true labels (untargeted) or target classes (``targeted=True``).
    key: jax.random key (one for the batch, or one per example: typed [N] or raw [N,2]; per-example
      keys make each example's result independent of the batch). Needed if ``random_start``.
    eps: radius of the ball, >= 0, a scalar or float [N] (per example); a traced value below 0
      or NaN acts as 0.
    step_size: absolute step, > 0, scalar or [N] (e.g. ``2.5 * eps / steps``).
    steps: number of gradient steps, >= 1.
    norm: "linf" or "l2".
    mask: optional {0,1} array broadcastable to x's shape ([N,H,W,1]): masked PGD (a traced
      mask is read as ``mask > 0.5``).
    random_start: start from a uniform sample of the (masked) ball instead of ``x``.
    restarts: runs from independent random starts; per example the worst case is returned
      (an adversarial one if any run found one, else the one with the highest loss).
    targeted: ``y`` are targets; the attack pushes the prediction towards them.
    loss: "ce", "margin" (CW) or "dlr" (see ``percadv_jax.attacks.losses``).
    early_stop: freeze each example at its first adversarial iterate (checked before each step
      and at the end) and skip steps once the whole batch is frozen. It never turns a success
      into a failure; without it the last iterate is returned (Foolbox / Madry semantics).
    unroll: unrolling of the step loop (``lax.scan``): 1 (default) a plain loop, True = full,
      an int k = k steps per loop iteration (more compile time; see ``core.resolve_unroll``).
  Returns:
    x_adv float32 [N,H,W,C], within eps of x in ``norm``, in [0, 1], equal to x where mask is 0.
  Raises:
    ValueError: on bad input (shapes, dtypes, x outside [0,1] or NaN, eps < 0, steps < 1, mask
      not in {0,1} or of the wrong shape, unknown norm/loss, missing key).
  """
  x, y, keys, mask, steps, restarts = C.prepare(
      logits_fn, x, y, key=key, eps=eps, step_size=step_size, steps=steps, norm=norm, mask=mask,
      random_start=random_start, restarts=restarts, targeted=targeted, loss=loss,
      needs_step=True)
  early_stop = checks.check_bool(early_stop, "early_stop")
  unroll = C.resolve_unroll(unroll)
  return _pgd(logits_fn, x, y, keys, eps, step_size, mask, steps=steps, norm=norm,
              random_start=bool(random_start), restarts=restarts, targeted=bool(targeted),
              loss=loss, early_stop=bool(early_stop), unroll=unroll)


@C.jit_logits_fn(static_argnames=("norm", "random_start", "targeted", "loss"))
def _fgsm(logits_fn, x, y, keys, eps, step_size, mask, *, norm, random_start, targeted, loss):
  n = x.shape[0]
  eps = C.per_example_nonneg(eps, n)
  step = C.per_example_nonneg(step_size, n)
  mask = C.binary_mask(mask)
  xa = C.random_start(keys, x, eps, norm, mask) if random_start else x
  g = jax.grad(lambda v: C.objective(logits_fn, loss, targeted, y)(v)[0])(xa)
  return C.project(xa + step * C.direction(g, norm, mask), x, eps, norm, mask)


def fgsm(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, eps: float | jax.Array,
         key: jax.Array | None = None, step_size: float | jax.Array | None = None,
         norm: str = "linf", mask: jax.Array | None = None, random_start: bool = False,
         targeted: bool = False, loss: str = "ce") -> jax.Array:
  """Fast gradient sign method (Goodfellow et al. 2015): one step of size ``step_size``.

  ``step_size`` defaults to ``eps`` (classic FGSM; with ``norm="l2"`` the fast gradient method);
  with ``random_start=True`` it is the RS-FGSM of Wong et al. 2020 (they use 1.25 * eps).
  Arguments, guarantees and errors as ``pgd``; returns x_adv float32 [N,H,W,C].
  """
  x, y, keys, mask, _, _ = C.prepare(
      logits_fn, x, y, key=key, eps=eps, step_size=step_size, steps=1, norm=norm, mask=mask,
      random_start=random_start, restarts=1, targeted=targeted, loss=loss)
  if step_size is None:
    step_size = eps
  return _fgsm(logits_fn, x, y, keys, eps, step_size, mask, norm=norm,
               random_start=bool(random_start), targeted=bool(targeted), loss=loss)
