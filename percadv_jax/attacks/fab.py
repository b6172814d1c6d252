"""FAB-T (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples with a fast adaptive
boundary attack"): AutoAttack's targeted minimum-norm attack, Linf and L2.

One FAB run towards a target class ``t`` (AutoAttack's ``fab_base.attack_single_run`` with
``is_targeted=True``) linearises the decision boundary between the true class ``y`` and ``t`` at
the current point ``x1``: ``f = z_t - z_y``, ``w = grad f``, the hyperplane
``{v : <w, v> = <w, x1> - f}``. It projects both ``x1`` and the clean ``x0`` onto that
hyperplane inside the box [0, 1] (``projection_linf`` / ``projection_l2``: the minimum-norm
step, AutoAttack's ``fab_projections``), and moves to the convex combination
``x1 <- clip((x1 + eta d1) (1 - alpha) + (x0 + eta d2) alpha, 0, 1)`` with
``alpha = min(|d1| / (|d1| + |d2|), alpha_max)`` (overshoot ``eta``, bias towards ``x0``). When
``x1`` is misclassified it is recorded if closer to ``x0`` than the best so far, and pulled
back: ``x1 <- x0 + beta (x1 - x0)``. Restart 0 starts at ``x0``, later restarts at a random
point at distance ``eps / 2``.

``fab_t`` runs that for the ``targets`` most likely other classes (ranks 2, 3, ... of the clean
logits) and, as AutoAttack, counts an example as broken only when the closest misclassified
point found lies within ``eps``; the output is that point, ``x`` for the other examples.

Masked FAB: the gradient is zeroed where ``mask == 0`` before the projections, so the steps
(and the random start) move only free pixels, and every point is reset to ``x`` where
``mask == 0``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from percadv_jax import checks
from percadv_jax.attacks import core as C
from percadv_jax.attacks.pgd import LogitsFn

# AutoAttack's FAB defaults (``FABAttack``): step-size bound, overshoot, backward step.
ALPHA_MAX = 0.1
ETA = 1.05
BETA = 0.9


def _bisect(lb: jax.Array, ub: jax.Array, n_iter: int, pred) -> jax.Array:
  """AutoAttack's bisection on integer positions: ``n_iter`` halvings keeping ``pred(mid)`` at
  ``lb``; returns ``lb`` as int32 [M]."""
  def body(_, c):
    lb, ub = c
    mid = jnp.floor((lb + ub) / 2)
    ok = pred(mid.astype(jnp.int32))
    return jnp.where(ok, mid, lb), jnp.where(ok, ub, mid)
  lb, _ = lax.fori_loop(0, n_iter, body, (lb, ub))
  return lb.astype(jnp.int32)


def _row(a: jax.Array, idx: jax.Array) -> jax.Array:
  """``a[m, idx[m]]`` for every row m (a [M, D], idx int [M]) -> [M]."""
  return jnp.take_along_axis(a, idx[:, None], axis=1)[:, 0]


def projection_linf(t: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
  """Minimum-Linf step from ``t`` onto ``{v : <w, v> = b}`` within the box [0, 1].

  AutoAttack's ``fab_projections.projection_linf`` (the same sorting, prefix sums and bisection),
  with fixed shapes. Coordinates where ``w == 0`` do not move.

  Args:
    t: float32 [M, D] points in [0, 1]; w: float32 [M, D] hyperplane normals; b: float32 [M].
  Returns:
    the steps d float32 [M, D] (``t + d`` on the hyperplane, or as close as the box allows).
  """
  m, dim = t.shape
  sign = jnp.where(jnp.sum(w * t, axis=1) - b >= 0, 1.0, -1.0)
  w = w * sign[:, None]
  b = b * sign
  a = (w < 0).astype(t.dtype)
  d = (a - t) * (w != 0)
  p = a - t * (2 * a - 1)
  indp = jnp.argsort(p, axis=1)
  b = b - jnp.sum(w * t, axis=1)
  b0 = jnp.sum(w * d, axis=1)
  indp2 = indp[:, ::-1]
  ws = jnp.take_along_axis(w, indp2, axis=1)
  bs2 = -ws * jnp.take_along_axis(d, indp2, axis=1)
  s = jnp.cumsum(jnp.abs(ws), axis=1)
  sb = jnp.cumsum(bs2, axis=1) + b0[:, None]
  b2 = sb[:, -1] - s[:, -1] * _row(p, indp[:, 0])
  c_l = b - b2 > 0
  c2 = (b - b0 > 0) & ~c_l

  def above(k):  # b - b2 > 0 at the bisection position k
    return b - (_row(sb, k) - _row(s, k) * _row(p, _row(indp, dim - 1 - k))) > 0

  lb = _bisect(jnp.zeros((m,)), jnp.full((m,), dim - 1.0), math.ceil(math.log2(dim)), above)
  lmbd_l = jnp.maximum((b - sb[:, -1]) / (-s[:, -1]), 0.0)[:, None]
  lmbd_2 = jnp.maximum((b - _row(sb, lb)) / (-_row(s, lb)), 0.0)[:, None]
  d_l = (2 * a - 1) * lmbd_l
  d_2 = jnp.minimum(lmbd_2, d) * a + jnp.maximum(-lmbd_2, d) * (1 - a)
  d = jnp.where(c_l[:, None], d_l, jnp.where(c2[:, None], d_2, d))
  return jnp.where(w != 0, d, 0.0)


def projection_l2(t: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
  """Minimum-L2 step from ``t`` onto ``{v : <w, v> = b}`` within the box [0, 1].

  AutoAttack's ``fab_projections.projection_l2``, with fixed shapes; shapes as
  ``projection_linf``.
  """
  m, dim = t.shape
  c = jnp.sum(w * t, axis=1) - b
  sign = jnp.where(c >= 0, 1.0, -1.0)
  w = w * sign[:, None]
  c = c * sign
  small = jnp.abs(w) < 1e-8
  safe_w = jnp.where(small, 1.0, w)
  r = jnp.clip(jnp.maximum(t / safe_w, (t - 1) / safe_w), -1e12, 1e12)
  r = jnp.where(small | (r == -1e12), 1e12, r)
  indr = jnp.argsort(r, axis=1)
  rs = jnp.take_along_axis(r, indr, axis=1)
  rs2 = jnp.concatenate([rs[:, 1:], jnp.zeros((m, 1), rs.dtype)], axis=1)
  rs = jnp.where(rs == 1e12, 0.0, rs)
  rs2 = jnp.where(rs2 == 1e12, 0.0, rs2)
  w3s = jnp.take_along_axis(w * w, indr, axis=1)
  w5 = jnp.sum(w3s, axis=1, keepdims=True)
  ws = w5 - jnp.cumsum(w3s, axis=1)
  d = jnp.where(small, 0.0, -(r * w))
  s = jnp.concatenate([-w5 * rs[:, :1], jnp.cumsum((rs - rs2) * ws, axis=1) - w5 * rs[:, :1]],
                      axis=1)
  c4 = s[:, 0] + c < 0
  c3 = jnp.sum(d * w, axis=1) + c > 0
  c2 = ~(c4 | c3)
  lb = _bisect(jnp.zeros((m,)), jnp.full((m,), dim - 1.0), math.ceil(math.log2(dim)),
               lambda k: _row(s, k) + c > 0)
  d_4 = -(c / jnp.maximum(w5[:, 0], 1e-30))[:, None] * w
  ws_lb = _row(ws, lb)
  alpha = jnp.where(ws_lb == 0, 0.0,
                    (_row(s, lb) + c) / jnp.where(ws_lb == 0, 1.0, ws_lb) + _row(rs, lb))
  c5 = alpha[:, None] > r
  d_2 = jnp.where(c5, d, -alpha[:, None] * w)
  d = jnp.where(c4[:, None], d_4, jnp.where(c2[:, None], d_2, d))
  return jnp.where(small, 0.0, d)


def _norm(v: jax.Array, norm: str) -> jax.Array:
  """Per-example Linf or L2 norm of [N, ...] as [N]."""
  v = v.reshape(v.shape[0], -1)
  return jnp.max(jnp.abs(v), axis=1) if norm == "linf" else jnp.sqrt(jnp.sum(v * v, axis=1))


@C.jit_logits_fn(static_argnames=("steps", "norm", "targets", "restarts", "alpha_max", "eta",
                                  "beta", "early_stop", "unroll"))
def _fab_t(logits_fn, x, y, keys, eps, mask, *, steps, norm, targets, restarts, alpha_max, eta,
           beta, early_stop, unroll):
  n = x.shape[0]
  eps = C.per_example_nonneg(eps, n)
  eps_n = eps[:, 0, 0, 0]
  mask = C.binary_mask(mask)
  project = projection_linf if norm == "linf" else projection_l2
  z0 = logits_fn(x)
  broken0 = jnp.argmax(z0, axis=1) != y

  def diff(v, t):  # f = z_t - z_y per example (AutoAttack's targeted ``diffy``)
    z = logits_fn(v)
    df = jnp.take_along_axis(z, t[:, None], 1)[:, 0] - jnp.take_along_axis(z, y[:, None], 1)[:, 0]
    return jnp.sum(df), df

  def step(c, t):
    x1, best, adv = c
    g, df = jax.grad(diff, has_aux=True)(x1, t)
    g = C.finite_or_zero(g)
    w = (g if mask is None else g * mask).reshape(n, -1)
    b = -df + jnp.sum(w * x1.reshape(n, -1), axis=1)
    d3 = project(jnp.concatenate([x1.reshape(n, -1), x.reshape(n, -1)]),
                 jnp.concatenate([w, w]), jnp.concatenate([b, b]))
    d3 = jnp.where(jnp.isfinite(d3), d3, 0.0)
    d1, d2 = d3[:n].reshape(x.shape), d3[n:].reshape(x.shape)
    a0 = jnp.maximum(_norm(d3, norm), 1e-8)
    alpha = jnp.clip(a0[:n] / (a0[:n] + a0[n:]), 0.0, alpha_max).reshape(n, 1, 1, 1)
    x1 = jnp.clip((x1 + eta * d1) * (1 - alpha) + (x + d2 * eta) * alpha, 0.0, 1.0)
    x1 = C.apply_mask(x1, x, mask)
    is_adv = jnp.argmax(logits_fn(x1), axis=1) != y
    dist = _norm(x1 - x, norm)
    closer = is_adv & (dist < best)
    return (C.select(is_adv, x + (x1 - x) * beta, x1), jnp.where(closer, dist, best),
            C.select(closer, x1, adv))

  def start(rank, restart):
    """Restart 0 starts at x, the others at a random point at distance eps / 2."""
    if keys is None:
      return x
    kr = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, rank), restart))(keys)
    shape = x.shape[1:]
    if norm == "linf":
      u = jax.vmap(lambda k: jax.random.uniform(k, shape, jnp.float32, -1.0, 1.0))(kr)
    else:
      u = jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(kr)
    if mask is not None:
      u = u * mask
    u = u / jnp.maximum(_norm(u, norm), 1e-12).reshape(n, 1, 1, 1)
    return jnp.where(restart > 0, jnp.clip(x + 0.5 * eps * u, 0.0, 1.0), x)

  def one_run(carry, j):
    rank, restart = 2 + j // restarts, j % restarts

    def attack(carry):
      adv_out, broken = carry
      t = C.target_ranks(z0, rank)

      def body(c, _):
        if not early_stop:
          return step(c, t), None
        # Once every example is broken (in this run or before) or misclassified clean, the
        # remaining iterations cannot change which examples are broken: skipped.
        done = broken | (c[1] <= eps_n)
        return lax.cond(jnp.all(done), lambda c: c, lambda c: step(c, t), c), None

      c = (start(rank, restart), jnp.full((n,), jnp.inf, jnp.float32), x)
      (_, best, adv), _ = lax.scan(body, c, None, length=steps, unroll=unroll)
      new = ~broken & (best <= eps_n)
      return C.select(new, adv, adv_out), broken | new

    return lax.cond(jnp.all(carry[1]), lambda c: c, attack, carry), None

  (adv_out, _), _ = lax.scan(one_run, (x, broken0), jnp.arange(targets * restarts))
  return C.project(adv_out, x, eps, norm, mask)


def fab_t(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, eps: float | jax.Array,
          key: jax.Array | None = None, steps: int = 100, norm: str = "linf",
          mask: jax.Array | None = None, targets: int | None = None, restarts: int = 1,
          alpha_max: float = ALPHA_MAX, eta: float = ETA, beta: float = BETA,
          early_stop: bool = True, unroll: int | bool = 1) -> jax.Array:
  """FAB-T as in AutoAttack's standard version (``FABAttack_PT`` with ``targeted=True``).

  For each rank r = 2, ..., targets + 1 (the target: the class of r-th highest clean logit) and
  each of ``restarts`` runs (restart 0 from ``x``, the others from a random point at distance
  eps / 2; target r, restart j use the per-example keys ``fold_in(fold_in(k_i, r), j)``), one
  FAB run of ``steps`` iterations (see the module docstring). An example is broken when the
  closest misclassified point of a run lies within ``eps`` in ``norm``; as AutoAttack's cascade,
  later runs leave it alone. Examples misclassified clean are not attacked.

  Deviations from AutoAttack's code, none of which changes which examples are broken:
  every example of the batch runs every target until all are broken (fixed shapes; the results
  of broken examples are discarded); a run stops once every example has a misclassified point
  within eps or was broken before (AutoAttack keeps minimising the norm, which only matters for
  points already within eps); a non-finite gradient entry counts as 0.

  Args:
    logits_fn, x, y, eps, norm, mask, unroll: as ``percadv_jax.attacks.pgd``.
    key: jax.random key, needed when ``restarts > 1`` (AutoAttack's standard FAB-T: 1 restart,
      deterministic).
    steps: iterations per run (AutoAttack: 100), >= 1.
    targets: number of target classes; None = AutoAttack's 9, or ``num_classes - 1`` when the
      model has fewer other classes; more than ``num_classes - 1`` is a ValueError.
    restarts: runs per target, >= 1.
    alpha_max: bound of the step towards ``x`` (0.1); eta: overshoot (1.05); beta: backward
      step after a misclassified point (0.9) — AutoAttack's defaults.
    early_stop: stop a run once no example can change its outcome (see above).
  Returns:
    x_adv float32 [N,H,W,C]: the closest misclassified point found for each broken example,
    ``x`` for the others; within eps of x in ``norm``, in [0, 1], equal to x where mask is 0.
  Raises:
    ValueError: on bad input (see ``pgd``), too many targets, a hyper-parameter out of range.
  """
  restarts = checks.check_int(restarts, "restarts", minimum=1)
  x, y, keys, mask, steps, restarts = C.prepare(
      logits_fn, x, y, key=key, eps=eps, step_size=None, steps=steps, norm=norm, mask=mask,
      random_start=restarts > 1, restarts=restarts, targeted=False, loss="margin")
  targets = C.resolve_targets(targets, C.logits_shape(logits_fn, tuple(x.shape))[1])
  alpha_max = checks.check_float(alpha_max, "alpha_max", minimum=0.0, maximum=1.0)
  eta = checks.check_float(eta, "eta", minimum=0.0, min_inclusive=False)
  beta = checks.check_float(beta, "beta", minimum=0.0, maximum=1.0)
  early_stop = checks.check_bool(early_stop, "early_stop")
  unroll = C.resolve_unroll(unroll)
  return _fab_t(logits_fn, x, y, keys, eps, mask, steps=steps, norm=norm, targets=targets,
                restarts=restarts, alpha_max=float(alpha_max), eta=float(eta),
                beta=float(beta), early_stop=bool(early_stop), unroll=unroll)
