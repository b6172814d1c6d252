"""The SSIM-constrained (perceptual quality ball) attack.

Two methods, both keeping every iterate exactly inside the quality ball around the ORIGINAL ``x``:

* ``"linear"`` (the paper's convex step, iterated): Frank-Wolfe. At step ``k`` the loss is
  linearised at ``x + d_k`` and the linear program ``s_k = argmax_{s in ball} <grad, s>`` is
  solved over the whole ball (``solve_linear``, warm-started from the previous step's ADMM
  state); then ``d_{k+1} = d_k + gamma_k (s_k - d_k)`` with ``gamma_k = 2 / (k + 2)`` (so the
  first step is the full LP solution). Convex combinations of feasible points stay feasible.
* ``"pgd"``: ``d_{k+1} = P_ball(d_k + step_size * grad / rms(grad))`` with the Euclidean
  projection ``QualityBall.project``.

Per example the attack stops (its ``d`` frozen) once it succeeds (misclassified, or classified as
the target when ``targeted``) if ``early_stop``; the loop ends when all have succeeded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from percadv_jax import checks
from percadv_jax.attacks._common import jit_logits_fn
from percadv_jax.perceptual import admm
from percadv_jax.perceptual.ball import QualityBall, box


def _loss(logits, y, *, loss, targeted):
  """Per-example objective to MAXIMISE."""
  num = logits.shape[-1]
  onehot = jax.nn.one_hot(y, num, dtype=logits.dtype)
  if loss == "ce":
    ce = -jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1)
    return -ce if targeted else ce
  zy = jnp.sum(onehot * logits, axis=-1)
  other = jnp.max(jnp.where(onehot > 0, -jnp.inf, logits), axis=-1)
  return zy - other if targeted else other - zy


def _success(logits, y, targeted):
  pred = jnp.argmax(logits, axis=-1)
  return pred == y if targeted else pred != y


@jit_logits_fn(static_argnames=("ball", "steps", "method", "loss", "targeted", "early_stop",
                                "solver_tol", "solver_iters"))
def _attack(logits_fn, x, y, mask, step_size, *, ball, steps, method, loss, targeted, early_stop,
            solver_tol, solver_iters):
  n = x.shape[0]
  lo, hi = box(x, mask)

  def objective(d):
    logits = logits_fn(x + d)
    return jnp.sum(_loss(logits, y, loss=loss, targeted=targeted)), logits

  grad_fn = jax.value_and_grad(objective, has_aux=True)
  st0 = admm.init_state(x, ball, jnp.full((n,), 3.0, jnp.float32))

  def cond(c):
    k, _, done, _ = c
    return jnp.logical_and(k < steps, jnp.logical_not(jnp.all(done)) if early_stop else True)

  def body(c):
    k, d, done, st = c
    (_, logits), g = grad_fn(d)
    succ = _success(logits, y, targeted)
    done = jnp.logical_or(done, succ) if early_stop else done
    g = g * mask
    if method == "linear":
      s, _, st = admm.solve(x, g, mask, st, st.rho, ball=ball, mode="lp", max_iters=solver_iters,
                            tol=solver_tol, check_every=10, alpha=1.9, repair=2, max_blocks=4)
      gamma = 2.0 / (k.astype(jnp.float32) + 2.0)
      d_new = d + gamma * (s - d)
    else:
      rms = jnp.sqrt(jnp.mean(g * g, axis=(1, 2, 3), keepdims=True))
      d_new = d + step_size * g / jnp.maximum(rms, 1e-30)
      d_new, _, _ = admm.solve(x, d_new, mask, None, jnp.ones((n,), jnp.float32), ball=ball,
                               mode="proj", max_iters=solver_iters, tol=1e-5, check_every=10,
                               alpha=1.6, repair=3)
    keep = done.reshape(-1, 1, 1, 1)
    d = jnp.where(keep, d, d_new)
    return k + 1, d, done, st

  c0 = (jnp.asarray(0, jnp.int32), jnp.zeros_like(x), jnp.zeros((n,), bool), st0)
  _, d, _, _ = jax.lax.while_loop(cond, body, c0)
  # Exact feasibility (convex combinations can drift by float round-off) and the box.
  d = ball.make_feasible(x, jnp.clip(d, lo, hi), None, mask)
  x_adv = jnp.clip(x + d, 0.0, 1.0)
  return jnp.where(mask > 0, x_adv, x)


def ssim_attack(logits_fn, x: jax.Array, y: jax.Array, *, ball: QualityBall, steps: int,
                method: str = "linear", step_size: float = 0.05, targeted: bool = False,
                loss: str = "ce", mask: jax.Array | None = None, early_stop: bool = True,
                solver_tol: float = 1e-3, solver_iters: int = 1000) -> jax.Array:
  """Adversarial examples inside the SSIM quality ball around ``x``.

  Args:
    logits_fn: ``logits_fn(x) -> logits`` [N, K] for images [N,H,W,C] in [0,1] (jit-traceable;
      compiled once per distinct function object, or per function of a
      ``jax.tree_util.Partial``, whose arrays are traced: see ``attacks.pgd``).
    x: [N,H,W,C] float images in [0, 1]; y: [N] int labels (the target classes if ``targeted``).
    ball: the :class:`QualityBall` (window, stride, e1, e2).
    steps: maximum number of iterations.
    method: "linear" (Frank-Wolfe over LP steps) or "pgd" (gradient step + projection).
    step_size: for "pgd": step length per pixel in units of the RMS-normalised gradient.
    targeted: maximise the target's score instead of the loss of the true class.
    loss: "ce" (cross-entropy) or "margin" (logit margin).
    mask: optional [N,H,W,1] (or broadcastable) in {0,1}; the perturbation is 0 where it is 0.
    early_stop: freeze an example once it is misclassified (or hits the target).
    solver_tol, solver_iters: tolerance and iteration budget of the inner LP / projection solves.

  Returns:
    x_adv [N,H,W,C] float32 in [0,1] with ``ball.violation(x, x_adv - x) <= 1e-5`` and
    ``x_adv == x`` where ``mask == 0``.
  """
  checks.check_images(x, "x", channels=None)
  checks.check_labels(y, x.shape[0])
  checks.check_choice(method, "method", ("linear", "pgd"))
  checks.check_choice(loss, "loss", ("ce", "margin"))
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
  checks.check_positive(step_size, "step_size")
  ball.check(x)
  x = jnp.asarray(x, jnp.float32)
  if mask is None:
    m = jnp.ones_like(x)
  else:
    checks.check_mask(mask, x.shape)
    m = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), x.shape)
  return _attack(logits_fn, x, jnp.asarray(y), m, jnp.float32(step_size), ball=ball,
                 steps=int(steps), method=method, loss=loss, targeted=bool(targeted),
                 early_stop=bool(early_stop), solver_tol=float(solver_tol),
                 solver_iters=int(solver_iters))
