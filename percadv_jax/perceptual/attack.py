"""The SSIM-constrained (perceptual quality ball) attack.

Two methods, both keeping every iterate exactly inside the quality ball around the ORIGINAL ``x``:

* ``"linear"`` (the paper's convex step, iterated): Frank-Wolfe. At step ``k`` the loss is
  linearised at ``x + d_k`` and the linear program ``s_k = argmax_{s in ball} <grad, s>`` is
  solved over the whole ball (``solve_linear``, warm-started from the previous step's ADMM
  state); then ``d_{k+1} = d_k + gamma_k (s_k - d_k)`` with ``gamma_k = 2 / (k + 2)`` (so the
  first step is the full LP solution). Convex combinations of feasible points stay feasible.
* ``"pgd"``: ``d_{k+1} = P_ball(d_k + step_size * grad / rms(grad))`` with the Euclidean
  projection ``solver.project``.

The objective and the success test are those of ``attacks.losses``. Per example the attack stops
(its ``d`` frozen) once it succeeds (misclassified, or classified as the target when
``targeted``) if ``early_stop``; the loop ends when all have succeeded.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import checks
from percadv_jax.attacks import losses
from percadv_jax.attacks.core import jit_logits_fn, logits_shape
from percadv_jax.perceptual import solver
from percadv_jax.perceptual.ball import QualityBall, box, check_ball

# The inner solves' iteration budget (each LP and each projection), and the tolerance of the
# "pgd" method's projections (its LP counterpart is ``solver_tol``, by default ``solver.LP_TOL``).
SOLVER_ITERS = 1000
PGD_PROJECTION_TOL = 1e-5


@jit_logits_fn(static_argnames=("ball", "steps", "method", "loss", "targeted", "early_stop",
                                "solver_tol", "solver_iters"))
def _attack(logits_fn, x, y, mask, step_size, *, ball, steps, method, loss, targeted, early_stop,
            solver_tol, solver_iters):
  n = x.shape[0]
  lo, hi = box(x, mask=mask)
  loss_fn = losses.get_loss(loss)

  def objective(d):
    logits = logits_fn(x + d)
    return jnp.sum(loss_fn(logits, y, targeted=targeted)), logits

  grad_fn = jax.value_and_grad(objective, has_aux=True)
  st0 = solver.init_state(x, ball)

  def cond(c):
    k, _, done, _ = c
    return jnp.logical_and(k < steps, jnp.logical_not(jnp.all(done)) if early_stop else True)

  def body(c):
    k, d, done, st = c
    (_, logits), g = grad_fn(d)
    succ = losses.is_success(logits, y, targeted=targeted)
    done = jnp.logical_or(done, succ) if early_stop else done
    g = g * mask
    if method == "linear":
      s, st = solver.solve_linear(x, g, ball, mask=mask, tol=solver_tol, max_iters=solver_iters,
                                  init=st, return_state=True)
      gamma = 2.0 / (k.astype(jnp.float32) + 2.0)
      d_new = d + gamma * (s - d)
    else:
      rms = jnp.sqrt(jnp.mean(g * g, axis=(1, 2, 3), keepdims=True))
      d_new = d + step_size * g / jnp.maximum(rms, 1e-30)
      d_new = solver.project(x, d_new, ball, mask=mask, tol=PGD_PROJECTION_TOL,
                             max_iters=solver_iters)
    keep = done.reshape(-1, 1, 1, 1)
    d = jnp.where(keep, d, d_new)
    return k + 1, d, done, st

  c0 = (jnp.asarray(0, jnp.int32), jnp.zeros_like(x), jnp.zeros((n,), bool), st0)
  _, d, _, _ = jax.lax.while_loop(cond, body, c0)
  # Exact feasibility (convex combinations can drift by float round-off) and the box.
  d = ball.make_feasible(x, jnp.clip(d, lo, hi), mask=mask)
  x_adv = jnp.clip(x + d, 0.0, 1.0)
  return jnp.where(mask > 0, x_adv, x)


def ssim_attack(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, y: jax.Array, *,
                ball: QualityBall, steps: int, method: str = "linear", step_size: float = 0.05,
                targeted: bool = False, loss: str = "ce", mask: jax.Array | None = None,
                early_stop: bool = True, solver_tol: float = solver.LP_TOL,
                solver_iters: int = SOLVER_ITERS) -> jax.Array:
  """Adversarial examples inside the SSIM quality ball around ``x``.

  Args:
    logits_fn: ``logits_fn(x) -> logits`` [N, K] for images [N,H,W,C] in [0,1] (jit-traceable;
      compiled once per distinct function object, or per function of a
      ``jax.tree_util.Partial``, whose arrays are traced: see ``attacks.pgd``).
    x: [N,H,W,C] float images in [0, 1], N >= 1, whose every pixel the ball's windows cover
      (``QualityBall.check_size``).
    y: [N] int labels in [0, K) (the target classes if ``targeted``).
    ball: the :class:`QualityBall` (window, stride, e1, e2).
    steps: maximum number of iterations (an integer >= 1).
    method: "linear" (Frank-Wolfe over LP steps) or "pgd" (gradient step + projection).
    step_size: for "pgd": step length per pixel in units of the RMS-normalised gradient.
    targeted: maximise the target's score instead of the loss of the true class (a bool).
    loss: an objective of ``attacks.losses``: "ce" (cross-entropy), "margin" (logit margin) or
      "dlr" (difference of logits ratio; needs K >= 3, targeted K >= 4).
    mask: optional [N,H,W,1] (or broadcastable) in {0,1}; the perturbation is 0 where it is 0.
    early_stop: freeze an example once it is misclassified (or hits the target) (a bool).
    solver_tol: certified relative gap of each LP ("linear"); the "pgd" projections use
      ``PGD_PROJECTION_TOL``.
    solver_iters: iteration budget of each inner LP / projection solve.

  Returns:
    x_adv [N,H,W,C] float32 in [0,1] with ``ball.violation(x, x_adv - x) <= 1e-5`` and
    ``x_adv == x`` where ``mask == 0``.

  Raises:
    ValueError: on a bad argument, e.g. labels outside [0, K) of ``logits_fn``'s K logits.
  """
  if not callable(logits_fn):
    raise ValueError(f"logits_fn must be callable, got {type(logits_fn).__name__}")
  check_ball(ball)
  checks.check_images(x, "x", channels=None, allow_empty=False)
  targeted = checks.check_bool(targeted, "targeted")
  early_stop = checks.check_bool(early_stop, "early_stop")
  if not hasattr(y, "shape"):
    y = np.asarray(y)
  n = x.shape[0]
  checks.check_labels(y, n)
  checks.check_choice(method, "method", ("linear", "pgd"))
  checks.check_choice(loss, "loss", losses.LOSSES)
  steps = checks.check_int(steps, "steps", minimum=1)
  solver_iters = checks.check_int(solver_iters, "solver_iters", minimum=1)
  solver_tol = checks.check_float(solver_tol, "solver_tol", minimum=0.0, maximum=1.0,
                                  min_inclusive=False, max_inclusive=False)
  step_size = checks.check_float(step_size, "step_size", minimum=0.0, min_inclusive=False)
  ball.check(x)
  if checks.is_concrete(x) and checks.is_concrete(y):
    out = logits_shape(logits_fn, tuple(x.shape))
    if len(out) != 2 or out[0] != n:
      raise ValueError(f"logits_fn must return logits of shape [N, num_classes] = [{n}, K], "
                       f"got {out}")
    checks.check_labels(y, n, out[1])
  x = jnp.asarray(x, jnp.float32)
  if mask is None:
    m = jnp.ones_like(x)
  else:
    checks.check_mask(mask, x.shape)
    m = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), x.shape)
  return _attack(logits_fn, x, jnp.asarray(y), m, jnp.float32(step_size), ball=ball,
                 steps=steps, method=method, loss=loss, targeted=targeted,
                 early_stop=early_stop, solver_tol=solver_tol, solver_iters=solver_iters)
