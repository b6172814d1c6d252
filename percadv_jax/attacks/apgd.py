"""Auto-PGD (Croce & Hein, ICML 2020), the core of AutoAttack: APGD-CE and APGD-DLR.

Step-size free PGD with momentum, following the reference implementation (autoattack/autopgd_base):
- start ``x0`` (uniform random start in the ball or ``x``), step ``eta = 2 * eps`` per example;
- step ``z = P(x_k + eta * s(grad))``, then momentum
  ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a) (x_k - x_{k-1}))`` with ``a = 1`` at the first step,
  ``a = momentum`` (0.75) after; ``P`` = projection onto the ball, the box [0,1] and the mask;
- checkpoints after 0.22 N iterations, then windows shrinking by 0.03 N down to 0.06 N: at a
  checkpoint an example halves its step and restarts from its best point when the loss increased
  in at most ``rho`` (0.75) of the window's steps, or when its step was not reduced at the last
  checkpoint and its best loss has not improved since;
- per example the best point is kept: the first adversarial iterate if one was found, else the
  point of highest loss. ``restarts`` keep the per-example worst case.

Masking, guarantees and errors as ``percadv_jax.attacks.pgd``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from percadv_jax import checks
from percadv_jax.attacks import core as C
from percadv_jax.attacks import losses
from percadv_jax.attacks.pgd import LogitsFn


def checkpoints(steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Static checkpoint schedule of APGD for ``steps`` iterations (as AutoAttack).

  Returns:
    (is_checkpoint bool [steps], window int [steps]): iteration i (0-based) ends a window of
    ``window[i]`` steps when ``is_checkpoint[i]``.
  """
  k = max(int(0.22 * steps), 1)
  decr = max(int(0.03 * steps), 1)
  k_min = max(int(0.06 * steps), 1)
  is_ckpt = np.zeros(steps, bool)
  window = np.zeros(steps, np.int32)
  i = k - 1
  while i < steps:
    is_ckpt[i], window[i] = True, k
    k = max(k - decr, k_min)
    i += k
  return is_ckpt, window


@C.jit_logits_fn(static_argnames=(
    "steps", "norm", "random_start", "restarts", "targeted", "loss", "rho",
    "momentum", "early_stop", "unroll"))
def _apgd(logits_fn, x, y, keys, eps, mask, *, steps, norm, random_start, restarts, targeted,
          loss, rho, momentum, early_stop, unroll):
  n = x.shape[0]
  eps = C.per_example_nonneg(eps, n)
  mask = C.binary_mask(mask)
  value_and_grad = jax.value_and_grad(C.objective(logits_fn, loss, targeted, y), has_aux=True)
  is_ckpt, window = checkpoints(steps)
  xs = (jnp.arange(steps), jnp.asarray(is_ckpt), jnp.asarray(window, jnp.float32))

  def proj(v):
    return C.project(v, x, eps, norm, mask)

  def body(c, inp):
    i, ckpt, k = inp
    a = jnp.where(i == 0, 1.0, momentum)
    z1 = proj(c["x"] + c["step"] * C.direction(c["g"], norm, mask))
    x_new = proj(c["x"] + a * (z1 - c["x"]) + (1.0 - a) * (c["x"] - c["x_old"]))
    (_, (l_new, logits)), g_new = value_and_grad(x_new)
    succ = losses.is_success(logits, y, targeted=targeted)
    first = succ & ~c["found"]
    improve = l_new > c["loss_best"]
    c = dict(c,
             x_found=C.select(first, x_new, c["x_found"]), found=c["found"] | succ,
             n_incr=c["n_incr"] + (l_new > c["loss"]).astype(jnp.float32),
             x_best=C.select(improve, x_new, c["x_best"]),
             g_best=C.select(improve, g_new, c["g_best"]),
             loss_best=jnp.where(improve, l_new, c["loss_best"]),
             x_old=c["x"], x=x_new, g=g_new, loss=l_new)
    # Checkpoint: halve the step and go back to the best point where progress stalled.
    reduce = ckpt & ((c["n_incr"] <= k * rho)
                     | (~c["reduced"] & (c["loss_best_ckpt"] >= c["loss_best"])))
    return dict(c,
                step=jnp.where(reduce.reshape(n, 1, 1, 1), c["step"] / 2, c["step"]),
                x=C.select(reduce, c["x_best"], c["x"]), g=C.select(reduce, c["g_best"], c["g"]),
                reduced=jnp.where(ckpt, reduce, c["reduced"]),
                loss_best_ckpt=jnp.where(ckpt, c["loss_best"], c["loss_best_ckpt"]),
                n_incr=jnp.where(ckpt, 0.0, c["n_incr"]))

  def scan_body(c, inp):
    if early_stop:  # once every example has an adversarial point nothing returned can change
      return lax.cond(jnp.all(c["found"]), lambda c, _: c, body, c, inp), None
    return body(c, inp), None

  def run(key_r):
    x0 = C.random_start(key_r, x, eps, norm, mask) if random_start else x
    (_, (l0, logits0)), g0 = value_and_grad(x0)
    found = losses.is_success(logits0, y, targeted=targeted)
    c = dict(x=x0, x_old=x0, g=g0, loss=l0, step=2.0 * eps * jnp.ones_like(x0[:, :1, :1, :1]),
             x_best=x0, g_best=g0, loss_best=l0, x_found=x0, found=found,
             n_incr=jnp.zeros((n,), jnp.float32), reduced=jnp.zeros((n,), bool),
             loss_best_ckpt=l0)
    c, _ = lax.scan(scan_body, c, xs, unroll=unroll)
    return C.select(c["found"], c["x_found"], c["x_best"]), c["found"], c["loss_best"]

  return C.worst_over_restarts(run, keys, restarts, unroll)


def apgd(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array | None = None,
         eps: float | jax.Array, steps: int = 100, norm: str = "linf",
         mask: jax.Array | None = None, random_start: bool = True, restarts: int = 1,
         targeted: bool = False, loss: str = "ce", rho: float = 0.75, momentum: float = 0.75,
         early_stop: bool = True, unroll: int | bool | None = None) -> jax.Array:
  """APGD (Croce & Hein 2020): ``loss="ce"`` is APGD-CE, ``loss="dlr"`` APGD-DLR.

  Args:
    logits_fn, x, y, key, eps, norm, mask, random_start, restarts, targeted, loss, unroll: as
      ``percadv_jax.attacks.pgd`` (``targeted=True`` with ``loss="dlr"`` is APGD-T's loss,
      see ``losses.dlr``).
    steps: iterations (AutoAttack uses 100), >= 1.
    rho: fraction of loss increases in a window below which the step is halved.
    momentum: momentum weight ``a`` of the update (0.75 in the paper).
    early_stop: skip the remaining iterations once every example has an adversarial point. The
      returned points do not depend on it (it only saves work).
  Returns:
    x_adv float32 [N,H,W,C]: per example the first adversarial iterate found, else the iterate
    of highest loss; within eps of x in ``norm``, in [0, 1], equal to x where mask is 0.
  Raises:
    ValueError: on bad input (see ``pgd``).
  """
  x, y, keys, mask, steps, restarts = C.prepare(
      logits_fn, x, y, key=key, eps=eps, step_size=None, steps=steps, norm=norm, mask=mask,
      random_start=random_start, restarts=restarts, targeted=targeted, loss=loss)
  rho = checks.check_float(rho, "rho", minimum=0.0, maximum=1.0, min_inclusive=False)
  momentum = checks.check_float(momentum, "momentum", minimum=0.0, maximum=1.0,
                                min_inclusive=False)
  early_stop = checks.check_bool(early_stop, "early_stop")
  unroll = C.resolve_unroll(unroll, steps * restarts)
  return _apgd(logits_fn, x, y, keys, eps, mask, steps=steps, norm=norm,
               random_start=bool(random_start), restarts=restarts, targeted=bool(targeted),
               loss=loss, rho=float(rho), momentum=float(momentum), early_stop=bool(early_stop),
               unroll=unroll)
