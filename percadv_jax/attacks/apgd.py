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

``apgd_t`` is AutoAttack's APGD-T: targeted runs of this core (AutoAttack's targeted DLR loss)
towards the most likely other classes, one after the other, per example until one misclassifies.

Masking, guarantees and errors as ``percadv_jax.attacks.pgd``.
"""

from __future__ import annotations

import functools

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


def _model_keys(keys: jax.Array | None, i) -> jax.Array | None:
  """The per-example keys of a randomised model's draws at iteration ``i`` (-1: the start)."""
  return None if keys is None else jax.vmap(lambda k: jax.random.fold_in(k, i + 1))(keys)


@C.jit_logits_fn(static_argnames=(
    "steps", "norm", "random_start", "restarts", "targeted", "loss", "rho",
    "momentum", "early_stop", "unroll", "eot"))
def _apgd(logits_fn, x, y, keys, eps, mask, targets=None, *, steps, norm, random_start,
          restarts, targeted, loss, rho, momentum, early_stop, unroll, eot=None):
  """APGD's core. ``targets`` (int [N]) makes it APGD-T's run: AutoAttack's targeted DLR
  towards ``targets`` with success = misclassification. ``eot`` (an int) makes ``logits_fn`` a
  randomised model ``logits_fn(x, keys [N])`` whose gradients are averaged over ``eot`` draws."""
  n = x.shape[0]
  eps = C.per_example_nonneg(eps, n)
  mask = C.binary_mask(mask)
  if targets is None:
    loss_fn = functools.partial(losses.get_loss(loss), y=y, targeted=targeted)
  else:
    loss_fn = functools.partial(losses.dlr_targeted, y=y, t=targets)
  hits_target = targeted and targets is None

  def objective(xa, model_keys):
    z = logits_fn(xa) if eot is None else logits_fn(xa, model_keys)
    per_ex = loss_fn(z)
    return jnp.sum(per_ex), (per_ex, z)
  one_draw = jax.value_and_grad(objective, has_aux=True)

  def value_and_grad(xa, model_keys):
    if eot is None:
      return one_draw(xa, None)

    def draw(g_sum, j):  # AutoAttack's EoT: the mean gradient, the last draw's loss and logits
      (_, aux), g = one_draw(xa, jax.vmap(lambda k: jax.random.fold_in(k, j))(model_keys))
      return g_sum + g, aux
    g_sum, (per_ex, z) = lax.scan(draw, jnp.zeros_like(xa), jnp.arange(eot))
    return (None, (per_ex[-1], z[-1])), g_sum / eot

  is_ckpt, window = checkpoints(steps)
  xs = (jnp.arange(steps), jnp.asarray(is_ckpt), jnp.asarray(window, jnp.float32))

  def proj(v):
    return C.project(v, x, eps, norm, mask)

  def body(c, inp):
    i, ckpt, k = inp
    a = jnp.where(i == 0, 1.0, momentum)
    z1 = proj(c["x"] + c["step"] * C.direction(c["g"], norm, mask))
    x_new = proj(c["x"] + a * (z1 - c["x"]) + (1.0 - a) * (c["x"] - c["x_old"]))
    (_, (l_new, logits)), g_new = value_and_grad(x_new, _model_keys(c["keys"], i))
    succ = losses.is_success(logits, y, targeted=hits_target)
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
    model_keys = None if eot is None else key_r
    (_, (l0, logits0)), g0 = value_and_grad(x0, _model_keys(model_keys, -1))
    found = losses.is_success(logits0, y, targeted=hits_target)
    c = dict(x=x0, x_old=x0, g=g0, loss=l0, step=2.0 * eps * jnp.ones_like(x0[:, :1, :1, :1]),
             x_best=x0, g_best=g0, loss_best=l0, x_found=x0, found=found,
             n_incr=jnp.zeros((n,), jnp.float32), reduced=jnp.zeros((n,), bool),
             loss_best_ckpt=l0, keys=model_keys)
    c, _ = lax.scan(scan_body, c, xs, unroll=unroll)
    return C.select(c["found"], c["x_found"], c["x_best"]), c["found"], c["loss_best"]

  return C.worst_over_restarts(run, keys, restarts, unroll)


def apgd(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array | None = None,
         eps: float | jax.Array, steps: int = 100, norm: str = "linf",
         mask: jax.Array | None = None, random_start: bool = True, restarts: int = 1,
         targeted: bool = False, loss: str = "ce", rho: float = 0.75, momentum: float = 0.75,
         early_stop: bool = True, unroll: int | bool = 1,
         eot: int | None = None) -> jax.Array:
  """APGD (Croce & Hein 2020): ``loss="ce"`` is APGD-CE, ``loss="dlr"`` APGD-DLR.

  Args:
    logits_fn, x, y, key, eps, norm, mask, random_start, restarts, targeted, loss, unroll: as
      ``percadv_jax.attacks.pgd`` (``targeted=True`` with ``loss="dlr"`` is a targeted DLR that
      needs only the targets, see ``losses.dlr``; ``apgd_t`` is AutoAttack's APGD-T).
    steps: iterations (AutoAttack uses 100), >= 1.
    rho: fraction of loss increases in a window below which the step is halved.
    momentum: momentum weight ``a`` of the update (0.75 in the paper).
    early_stop: skip the remaining iterations once every example has an adversarial point. The
      returned points do not depend on it (it only saves work).
    eot: None for a deterministic ``logits_fn(x)``; an int >= 1 for a randomised model
      ``logits_fn(x, keys)`` (``keys``: one ``jax.random`` key per example, [N]; example i's
      randomness drawn from ``keys[i]``): every gradient is the mean over ``eot`` draws
      (expectation over transformation, AutoAttack's ``eot_iter``; its "rand" version uses
      20), the loss and the success test use the last draw. Needs ``key``.
  Returns:
    x_adv float32 [N,H,W,C]: per example the first adversarial iterate found, else the iterate
    of highest loss; within eps of x in ``norm``, in [0, 1], equal to x where mask is 0.
  Raises:
    ValueError: on bad input (see ``pgd``; ``eot`` < 1).
  """
  if eot is not None:
    eot = checks.check_int(eot, "eot", minimum=1)
  x, y, keys, mask, steps, restarts = C.prepare(
      logits_fn, x, y, key=key, eps=eps, step_size=None, steps=steps, norm=norm, mask=mask,
      random_start=random_start, restarts=restarts, targeted=targeted, loss=loss,
      randomised=eot is not None)
  rho = checks.check_float(rho, "rho", minimum=0.0, maximum=1.0, min_inclusive=False)
  momentum = checks.check_float(momentum, "momentum", minimum=0.0, maximum=1.0,
                                min_inclusive=False)
  early_stop = checks.check_bool(early_stop, "early_stop")
  unroll = C.resolve_unroll(unroll)
  return _apgd(logits_fn, x, y, keys, eps, mask, steps=steps, norm=norm,
               random_start=bool(random_start), restarts=restarts, targeted=bool(targeted),
               loss=loss, rho=float(rho), momentum=float(momentum), early_stop=bool(early_stop),
               unroll=unroll, eot=eot)


@C.jit_logits_fn(static_argnames=(
    "steps", "norm", "targets", "restarts", "rho", "momentum", "early_stop", "unroll"))
def _apgd_t(logits_fn, x, y, keys, eps, mask, *, steps, norm, targets, restarts, rho, momentum,
            early_stop, unroll):
  z0 = logits_fn(x)
  broken0 = jnp.argmax(z0, axis=1) != y

  def per_target(carry, rank):
    def attack(c):
      x_adv, broken = c
      keys_r = jax.vmap(lambda k: jax.random.fold_in(k, rank))(keys)
      xa = _apgd(logits_fn, x, y, keys_r, eps, mask, C.target_ranks(z0, rank), steps=steps,
                 norm=norm, random_start=True, restarts=restarts, targeted=False, loss="dlr",
                 rho=rho, momentum=momentum, early_stop=early_stop, unroll=unroll)
      succ = jnp.argmax(logits_fn(xa), axis=1) != y
      return C.select(succ & ~broken, xa, x_adv), broken | succ
    # Examples broken by an earlier target (or misclassified clean) are not attacked again: once
    # all are, the remaining targets are skipped.
    return lax.cond(jnp.all(carry[1]), lambda c: c, attack, carry), None

  (x_adv, _), _ = lax.scan(per_target, (x, broken0), jnp.arange(2, targets + 2))
  return x_adv


def apgd_t(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array,
           eps: float | jax.Array, steps: int = 100, norm: str = "linf",
           mask: jax.Array | None = None, targets: int | None = None, restarts: int = 1,
           rho: float = 0.75, momentum: float = 0.75, early_stop: bool = True,
           unroll: int | bool = 1) -> jax.Array:
  """APGD-T (Croce & Hein 2020; AutoAttack's ``APGDAttack_targeted``): untargeted robustness
  by targeted APGD runs towards the ``targets`` most likely other classes.

  For each rank r = 2, ..., targets + 1 the target of an example is its class of r-th highest
  clean logit, and APGD (random start, ``restarts`` runs, the per-example worst case) maximises
  AutoAttack's targeted DLR loss (``losses.dlr_targeted``) towards it; an example counts as
  broken as soon as it is misclassified. The runs follow AutoAttack's cascade per example: an
  example broken by one target (or misclassified clean) keeps that point and is not attacked
  by the later targets. Target r's run uses the per-example keys ``fold_in(k_i, r)``.

  Deviations from AutoAttack's code: its output for a broken example is the last adversarial
  iterate of the run, here the first (both are adversarial, within eps); every example of the
  batch runs every target until all are broken (fixed shapes), with the results of already
  broken examples discarded, which gives AutoAttack's per-example outcome.

  Args:
    logits_fn, x, y, key, eps, norm, mask, unroll: as ``percadv_jax.attacks.pgd`` (``key`` is
      required: every run starts at random); ``y`` the true labels.
    steps: iterations per run (AutoAttack: 100), >= 1.
    targets: number of target classes; None = AutoAttack's 9, or ``num_classes - 1`` when the
      model has fewer other classes; more than ``num_classes - 1`` is a ValueError. The targeted
      DLR loss needs >= 4 classes.
    restarts: runs per target (AutoAttack: 1).
    rho, momentum, early_stop: as ``apgd``.
  Returns:
    x_adv float32 [N,H,W,C]: the adversarial point of each broken example, ``x`` for the others;
    within eps of x in ``norm``, in [0, 1], equal to x where mask is 0.
  Raises:
    ValueError: on bad input (see ``pgd``), too many targets, fewer than 4 classes.
  """
  x, y, keys, mask, steps, restarts = C.prepare(
      logits_fn, x, y, key=key, eps=eps, step_size=None, steps=steps, norm=norm, mask=mask,
      random_start=True, restarts=restarts, targeted=False, loss="dlr")
  num_classes = C.logits_shape(logits_fn, tuple(x.shape))[1]
  if num_classes < 4:
    raise ValueError(f"APGD-T's targeted DLR loss needs at least 4 classes, the logits have "
                     f"{num_classes}")
  targets = C.resolve_targets(targets, num_classes)
  rho = checks.check_float(rho, "rho", minimum=0.0, maximum=1.0, min_inclusive=False)
  momentum = checks.check_float(momentum, "momentum", minimum=0.0, maximum=1.0,
                                min_inclusive=False)
  early_stop = checks.check_bool(early_stop, "early_stop")
  unroll = C.resolve_unroll(unroll)
  return _apgd_t(logits_fn, x, y, keys, eps, mask, steps=steps, norm=norm, targets=targets,
                 restarts=restarts, rho=float(rho), momentum=float(momentum),
                 early_stop=bool(early_stop), unroll=unroll)
