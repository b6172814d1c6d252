"""Consensus ADMM over the quality ball's window groups and the box (pure JAX).

Problem (one image ``x`` [H, W, C]; ``G`` groups of non-overlapping windows, DESIGN.md):

    lp:    max  <g, d>            s.t.  d in Box,  d in C_i for every group i
    proj:  min  1/2 |d - d0|^2    s.t.  the same

General-form consensus (Boyd et al. 2011, sect. 7.2): each group ``i`` keeps a local copy ``z_i``
of the pixels its windows cover (window layout [Ky,w,Kx,w,C]) with ``z_i in C_i`` (closed-form
projection: ball on the centred part, interval on the mean); the global ``d`` carries the
objective and the box. With ``c_p`` the number of groups covering pixel ``p`` the d-update is
closed form too:

    lp:    d_p = clip((sum_i (z_i - u_i)_p + g_p / rho) / c_p, lo, hi)   (c_p = 0: box vertex)
    proj:  d_p = clip((d0_p + rho sum_i (z_i - u_i)_p) / (1 + rho c_p), lo, hi)

then ``dh_i = alpha d|_i + (1 - alpha) z_i`` (over-relaxation), ``z_i = P_i(dh_i + u_i)``,
``u_i += dh_i - z_i``. Every ``check_every`` iterations the relative primal/dual residuals are
measured and ``rho`` is rebalanced (OSQP's rule ``rho *= sqrt(r_rel / s_rel)`` when the ratio is
off by more than 5x; ``u`` rescaled).

For the LP the stopping rule is a *certified* duality gap: with ``y_i = rho u_i`` (multipliers of
``d = z_i``) weak duality gives

    <g, d*> <= UB = sigma_Box(g - sum_i y_i) + sum_i sigma_{C_i}(y_i),
    sigma_window(y) = <a, yt> + R |yt| + n (b mean(y) + r |mean(y)|),

and ``LB = <g, t d>`` with ``t d`` made exactly feasible (``QualityBall.make_feasible``). The
solver returns the best exactly feasible iterate and stops once ``(UB - LB) / LB <= tol``, so its
objective is provably within ``tol`` (relative) of the optimum. ``vmap`` over images: each image
has its own ``rho`` and stops on its own.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from percadv_jax.perceptual import windows as W
from percadv_jax.perceptual.ball import ProjectionInfo, QualityBall, WindowGeometry, box


class AdmmState(NamedTuple):
  """Warm-startable ADMM state of a batch: ``d`` [N,H,W,C], per-group ``z``/``u`` (window
  layout, leading N) and the penalty ``rho`` [N]."""
  d: jax.Array
  z: tuple
  u: tuple
  rho: jax.Array


def _coverage(shape, groups):
  cover = jnp.zeros(shape, jnp.float32)
  for gr in groups:
    cover = cover + W.scatter(shape, gr, jnp.ones(
        (gr.ky, gr.window, gr.kx, gr.window, shape[-1]), jnp.float32))
  return cover


def _sumsq(t):
  return sum(jnp.sum(v * v) for v in t)


def _dual_bound(ball: QualityBall, groups, geo: WindowGeometry, lin, lo, hi, u, rho):
  """Weak-duality upper bound on max <lin, d> from multipliers ``y_i = rho u_i``."""
  n = ball.window * ball.window
  total = jnp.zeros_like(lin)
  ub = 0.0
  for i, gr in enumerate(groups):
    y = rho * u[i]
    ym = W.win_mean(y)
    yt = y - ym
    if not ball.luminance:
      y = yt  # the mean is unconstrained: only a zero-mean multiplier has a finite support value
    total = total + W.scatter(lin.shape, gr, y)
    ub = ub + jnp.sum(geo.a[i] * yt)
    ub = ub + jnp.sum(geo.R[i] * jnp.sqrt(jnp.sum(yt * yt, axis=(-4, -2), keepdims=True)))
    if ball.luminance:
      ub = ub + n * jnp.sum(geo.b[i] * ym + geo.r[i] * jnp.abs(ym))
  v = lin - total
  return ub + jnp.sum(jnp.maximum(lo * v, hi * v))


def _repair(ball: QualityBall, groups, geo: WindowGeometry, lo, hi, d, sweeps: int):
  """``sweeps`` rounds of cyclic projections onto the groups and the box (POCS).

  From a nearly feasible ``d`` this shrinks each window's violation *locally*, so the global
  scaling of ``make_feasible`` that follows costs far less objective than it would on ``d``.
  """
  def sweep(_, v):
    for i, gr in enumerate(groups):
      v = W.put(v, gr, ball.project_group_windows(W.extract(v, gr), geo, i))
    return jnp.clip(v, lo, hi)
  return jax.lax.fori_loop(0, sweeps, sweep, jnp.clip(d, lo, hi)) if sweeps else d


def _solve_one(x, lin, mask, init, *, ball: QualityBall, mode: str, max_iters: int, tol: float,
               check_every: int, alpha: float, repair: int):
  """ADMM for one image. ``lin`` is ``g`` (lp) or ``d0`` (proj). Returns (d, info, state)."""
  groups = ball.groups(x.shape[0], x.shape[1])
  geo = ball.geometry(x)
  lo, hi = box(x, mask)
  cover = _coverage(x.shape, groups)
  inv_cover = 1.0 / jnp.maximum(cover, 1.0)
  if mode == "lp":
    scale = jnp.sqrt(jnp.mean(lin * lin))
    lin = lin / jnp.maximum(scale, 1e-30)
    vertex = jnp.where(lin > 0, hi, jnp.where(lin < 0, lo, 0.0))

  def d_update(z, u, rho):
    acc = jnp.zeros_like(x)
    for i, gr in enumerate(groups):
      acc = acc + W.scatter(x.shape, gr, z[i] - u[i])
    if mode == "lp":
      d = jnp.where(cover > 0, (acc + lin / rho) * inv_cover, vertex)
    else:
      d = (lin + rho * acc) / (1.0 + rho * cover)
    return jnp.clip(d, lo, hi)

  def step(carry):
    d, z, u, rho = carry
    d = d_update(z, u, rho)
    zs, us = [], []
    for i, gr in enumerate(groups):
      dh = alpha * W.extract(d, gr) + (1.0 - alpha) * z[i]
      v = dh + u[i]
      zn = ball.project_group_windows(v, geo, i)
      zs.append(zn)
      us.append(v - zn)
    return AdmmState(d, tuple(zs), tuple(us), rho)

  def residuals(new, old):
    dz = tuple(W.extract(new.d, gr) for gr in groups)
    r = jnp.sqrt(_sumsq(tuple(a - b for a, b in zip(dz, new.z))))
    s = new.rho * jnp.sqrt(_sumsq(tuple(a - b for a, b in zip(new.z, old.z))))
    r_rel = r / jnp.maximum(jnp.maximum(jnp.sqrt(_sumsq(dz)), jnp.sqrt(_sumsq(new.z))), 1e-30)
    s_rel = s / jnp.maximum(new.rho * jnp.sqrt(_sumsq(new.u)), 1e-30)
    return r_rel, s_rel

  def objective(d):
    if mode == "lp":
      return jnp.sum(lin * d)
    return -0.5 * jnp.sum((d - lin) ** 2)

  class Carry(NamedTuple):
    st: AdmmState
    it: jax.Array
    best_d: jax.Array
    best_lb: jax.Array
    best_ub: jax.Array
    r_rel: jax.Array
    s_rel: jax.Array
    done: jax.Array

  def cond(c):
    return jnp.logical_and(c.it < max_iters, jnp.logical_not(c.done))

  def body(c):
    st = jax.lax.fori_loop(0, check_every - 1, lambda _, s: step(s), c.st)
    new = step(st)
    r_rel, s_rel = residuals(new, st)
    d_f = ball.make_feasible(x, _repair(ball, groups, geo, lo, hi, new.d, repair), geo, mask)
    lb = objective(d_f)
    if mode == "lp":
      ub = jnp.minimum(c.best_ub, _dual_bound(ball, groups, geo, lin, lo, hi, new.u, new.rho))
      better = lb > c.best_lb
      best_d = jnp.where(better, d_f, c.best_d)
      best_lb = jnp.maximum(lb, c.best_lb)
      done = (ub - best_lb) <= tol * jnp.abs(best_lb)
    else:
      ub, best_d, best_lb = c.best_ub, d_f, lb
      done = jnp.logical_and(r_rel <= tol, s_rel <= tol)
    # OSQP-style penalty rebalancing.
    ratio = jnp.sqrt(r_rel / jnp.maximum(s_rel, 1e-30))
    adapt = jnp.logical_or(ratio > 5.0, ratio < 0.2)
    rho_new = jnp.where(adapt, jnp.clip(new.rho * ratio, 1e-6, 1e6), new.rho)
    u = tuple(v * (new.rho / rho_new) for v in new.u)
    st = AdmmState(new.d, new.z, u, rho_new)
    return Carry(st, c.it + check_every, best_d, best_lb, ub, r_rel, s_rel, done)

  st0 = init
  d_f0 = ball.make_feasible(x, st0.d, geo, mask)
  inf = jnp.asarray(jnp.inf, jnp.float32)
  c0 = Carry(st0, jnp.asarray(0, jnp.int32), d_f0, objective(d_f0), inf, inf, inf,
             jnp.asarray(False))
  c = jax.lax.while_loop(cond, body, c0)
  if mode == "lp":
    gap = (c.best_ub - c.best_lb) / jnp.maximum(jnp.abs(c.best_lb), 1e-30)
  else:
    gap = jnp.asarray(jnp.nan, jnp.float32)
  info = ProjectionInfo(c.it, c.r_rel, c.s_rel, gap, c.done, c.st.rho)
  return c.best_d, info, c.st


@functools.partial(jax.jit, static_argnames=("ball", "mode", "max_iters", "tol", "check_every",
                                             "alpha", "repair"))
def solve(x: jax.Array, lin: jax.Array, mask: jax.Array, init: AdmmState | None,
          rho0: jax.Array, *,
          ball: QualityBall, mode: str, max_iters: int, tol: float, check_every: int,
          alpha: float, repair: int = 0):
  """Batched ADMM (vmap over images). ``rho0`` [N] is used when ``init`` is None."""
  if init is None:
    groups = ball.groups(x.shape[1], x.shape[2])
    n, c = x.shape[0], x.shape[-1]
    if mode == "lp":
      d0 = jnp.zeros_like(x)
    else:
      d0 = jnp.clip(lin, *box(x, mask))
    init = AdmmState(
        d0, tuple(W.extract(d0, gr) for gr in groups),
        tuple(jnp.zeros((n, gr.ky, gr.window, gr.kx, gr.window, c), jnp.float32)
              for gr in groups), rho0)
  fn = functools.partial(_solve_one, ball=ball, mode=mode, max_iters=max_iters, tol=tol,
                         check_every=check_every, alpha=alpha, repair=repair)
  return jax.vmap(fn)(x, lin, mask, init)


def project(x: jax.Array, d: jax.Array, ball: QualityBall):
  """Euclidean projection onto the ball (see ``QualityBall.project``)."""
  rho0 = jnp.ones((x.shape[0],), jnp.float32)
  out, info, _ = solve(x, d, jnp.ones_like(x), None, rho0, ball=ball, mode="proj",
                       max_iters=ball.max_iters, tol=ball.tol, check_every=ball.check_every,
                       alpha=1.6, repair=3)
  return out, info
