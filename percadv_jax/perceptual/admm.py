"""Consensus ADMM over the quality ball's window groups and the box (pure JAX).

Problem (one image ``x`` [H, W, C]; ``G`` groups of non-overlapping windows, see
``windows.py``; the sets ``C_i`` and ``Box`` are those of ``ball.py``, derived in
``docs/perceptual.md``, which also explains the design choices below):

    lp:    max  <g, d>            s.t.  d in Box,  d in C_i for every group i
    proj:  min  1/2 |d - d0|^2    s.t.  the same

General-form consensus (Boyd et al. 2011, sect. 7.2): each group ``i`` keeps a local copy ``z_i``
of the pixels its windows cover with ``z_i in C_i`` (closed-form projection ``P_i``: ball on the
centred part, interval on the mean); the global ``d`` carries the objective and the box. Written
as a fixed-point iteration on ``v_i = z_i + u_i`` (Douglas-Rachford form: ``z_i = P_i(v_i)``,
``u_i = v_i - z_i``) with ``c_p`` the number of groups covering pixel ``p``:

    lp:    d_p = clip((sum_i (2 z_i - v_i)_p + g_p / rho) / c_p, lo, hi)   (c_p = 0: box vertex)
    proj:  d_p = clip((d0_p + rho sum_i (2 z_i - v_i)_p) / (1 + rho c_p), lo, hi)
    T(v)_i = v_i + alpha (d|_i - z_i)                       (alpha: over-relaxation)

**Layout.** Everything runs in the cell layout of ``windows.py`` (cells of ``gcd(w, s)`` pixels,
``[C, Hc, Wc, c*c]``; ``v`` stacks the groups, ``[G, C, Hc, Wc, c*c]``, zero outside a group's
windows): a projection is elementwise work plus reductions to small per-cell statistics, with no
pads/gathers of pixel arrays per iteration. Pixels in no window at all would sit at the box
vertex (lp) or at ``clip(d0)`` (proj); ``QualityBall.check_size`` refuses images that have them.

**Checks.** Every ``check_every`` iterations (lp with ``max_blocks > 1``: after a block of
``check_every`` times 1..max_blocks iterations, ``_AHEAD`` = 70% of what the certified gap's last
rate of decrease predicts until ``tol``, since a check with its repair costs ~4 iterations) the
relative primal/dual residuals are measured and ``rho`` is rebalanced (OSQP's rule
``rho *= sqrt(r_rel / s_rel)`` when the ratio is off by more than 5x; ``u`` rescaled, which keeps
``z = P(v)``). For the LP the stopping rule is a *certified* duality gap: with ``y_i = rho u_i``
(multipliers of ``d = z_i``) weak duality gives

    <g, d*> <= UB = sigma_Box(g - sum_i y_i) + sum_i sigma_{C_i}(y_i),
    sigma_window(y) = <a, yt> + R |yt| + n (b mean(y) + r |mean(y)|),

taken as the smaller of the bounds of ``y`` and of ``y`` with the box's share ``g - sum_i y_i`` at
the pixels where ``d`` is strictly inside the box handed (split evenly) to the groups covering them:
the box term weighs that residual with the box width, the windows only with their sets' small
extent. ``LB = <g, t d>`` with ``d`` repaired (``repair`` cyclic projections onto the groups and
the box, then twice every cell scaled by the smallest feasible scale of the windows holding it, so
that the worst window does not set a small global ``t``) and scaled to exact feasibility (``t``
from ``QualityBall.window_scale``). The repair runs only once the raw iterate's objective is within
``tol`` of the bound. The solver returns the best exactly feasible iterate and stops once
``(UB - LB) / LB <= tol``, so its objective is provably within ``tol`` (relative) of the optimum.
Images run one after another (``lax.map``), so a batch does not wait for its slowest image: each
has its own ``rho`` and stops on its own.

**Building blocks.** The box and the luminance intervals are projected with
``jaxopt.projection.projection_box`` (the same program as ``jnp.clip``: identical jaxpr). The
window balls are projected as :func:`solve`'s ``projection`` says: ``"closed_form"`` (what the
solvers use) in the cell layout (``_project``), or ``"jaxopt_l2"``, the same projections with
``jaxopt.projection.projection_l2_ball`` vmapped over a group's windows, which cuts the windows
out of the cell layout and puts them back at every iteration (``_project_jaxopt_l2``;
``experiments/benchmarks/perceptual.py`` times the two).

This module is the engine: every knob of :func:`solve` is a required keyword argument. The public
solvers with their defaults are ``solver.solve_linear`` and ``solver.project``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxopt.projection import projection_box, projection_l2_ball

from percadv_jax import checks
from percadv_jax.perceptual import windows as W
from percadv_jax.perceptual.ball import QualityBall, box


# The next check comes after this fraction of the predicted iterations to the target gap.
_AHEAD = 0.7


class ProjectionInfo(NamedTuple):
  """Convergence report of a solve, each field [N]: iterations run, relative primal and dual
  residuals at the last check, certified relative duality gap (LP; NaN for a projection),
  whether the stopping rule was met, and the final penalty ``rho``."""
  iterations: jax.Array
  primal_residual: jax.Array
  dual_residual: jax.Array
  gap: jax.Array
  converged: jax.Array
  rho: jax.Array


class AdmmState(NamedTuple):
  """Warm-startable ADMM state of a batch: the last feasible ``d`` [N,H,W,C], the group copies
  ``v`` [N,G,C,Hc,Wc,c*c] (cell layout) and the penalty ``rho`` [N]."""
  d: jax.Array
  v: jax.Array
  rho: jax.Array


def init_state(x: jax.Array, ball: QualityBall, rho: jax.Array) -> AdmmState:
  """The cold-start state (``d = 0``, ``v = 0``) for images ``x`` [N,H,W,C]; ``rho`` [N].

  Starting from it equals a cold start (``init=None``) with the same ``rho``."""
  grid = ball.cell_grid(x.shape[1], x.shape[2])
  cc = grid.cell * grid.cell
  v = jnp.zeros((x.shape[0], len(grid.groups), x.shape[-1], grid.hc, grid.wc, cc), jnp.float32)
  return AdmmState(jnp.zeros_like(x), v, rho)


class _Geo(NamedTuple):
  """Ball constants in the cell layout, per group: ``a`` [C,Hc,Wc,cc] (0 outside the group's
  windows); ``R``, ``slack``, ``b``, ``r`` [C,Ky,Kx] (b, r None without luminance); window masks
  [1,Hc,Wc,1]."""
  a: tuple
  R: tuple
  slack: tuple
  b: tuple | None
  r: tuple | None
  mask: tuple


def _geometry(ball: QualityBall, grid: W.CellGrid, xc):
  n = ball.window * ball.window
  xs = jnp.sum(xc, axis=-1)
  out, masks = [], []
  for gr in grid.groups:
    mask = W.cell_win_bcast(jnp.ones((gr.ky, gr.kx), jnp.float32), gr, grid)[..., None]
    mu = W.cell_win_sum(xs, gr) / n
    xt = (xc - W.cell_win_bcast(mu, gr, grid)[..., None]) * mask
    out.append(ball.window_constants(xt, W.cell_win_sum(jnp.sum(xt * xt, axis=-1), gr), mu))
    masks.append(mask)
  a, rad, slack, b, r = zip(*out)
  return _Geo(a, rad, slack, b if ball.luminance else None, r if ball.luminance else None,
              tuple(m[None] for m in masks))


def _project(ball: QualityBall, grid: W.CellGrid, geo: _Geo, i: int, v):
  """Projection of ``v`` [C,Hc,Wc,cc] onto group ``i``'s windows (0 outside them).

  One pass of window statistics: with ``a`` centred, ``|v - m - a|^2 = |v - a|^2 - n m^2`` per
  window, so ``P(v) = a + (v - a) S + (m' - m S)`` (``S`` the ball's shrink factor, ``m'`` the
  clipped mean) needs only the sums of ``v`` and of ``(v - a)^2`` over each window."""
  gr = grid.groups[i]
  n = ball.window * ball.window
  va = v - geo.a[i]
  m = W.cell_win_sum(jnp.sum(v, axis=-1), gr) / n
  q = jnp.maximum(W.cell_win_sum(jnp.sum(va * va, axis=-1), gr) - n * m * m, 0.0)
  scale = jnp.minimum(1.0, geo.R[i] * jax.lax.rsqrt(jnp.maximum(q, 1e-30)))
  mc = projection_box(m, (geo.b[i] - geo.r[i], geo.b[i] + geo.r[i])) if ball.luminance else m
  bc = lambda t: W.cell_win_bcast(t, gr, grid)[..., None]
  return geo.a[i] + va * bc(scale) + bc(mc - m * scale)


def _to_windows(v, gr: W.Group):
  """Cells [C,Hc,Wc,cc] -> the group's windows as rows [C*Ky*Kx, n]."""
  c, hc, wc, cc = v.shape
  nh, nw = gr.oy + gr.ky * gr.pitch, gr.ox + gr.kx * gr.pitch
  if nh > hc or nw > wc:
    v = jnp.pad(v, [(0, 0), (0, max(0, nh - hc)), (0, max(0, nw - wc)), (0, 0)])
  v = v[:, gr.oy:nh, gr.ox:nw].reshape(c, gr.ky, gr.pitch, gr.kx, gr.pitch, cc)
  v = v[:, :, :gr.span, :, :gr.span].transpose(0, 1, 3, 2, 4, 5)
  return v.reshape(c * gr.ky * gr.kx, -1)


def _from_windows(u, gr: W.Group, grid: W.CellGrid, c: int, cc: int):
  """Rows [C*Ky*Kx, n] -> cells [C,Hc,Wc,cc] (0 outside the group's windows)."""
  v = u.reshape(c, gr.ky, gr.kx, gr.span, gr.span, cc).transpose(0, 1, 3, 2, 4, 5)
  q = gr.pitch - gr.span
  if q:
    v = jnp.pad(v, [(0, 0), (0, 0), (0, q), (0, 0), (0, q), (0, 0)])
  v = v.reshape(c, gr.ky * gr.pitch, gr.kx * gr.pitch, cc)
  ph, pw = gr.oy + gr.ky * gr.pitch, gr.ox + gr.kx * gr.pitch
  v = jnp.pad(v, [(0, 0), (gr.oy, max(0, grid.hc - ph)), (gr.ox, max(0, grid.wc - pw)), (0, 0)])
  return v[:, :grid.hc, :grid.wc]


def _project_jaxopt_l2(ball: QualityBall, grid: W.CellGrid, geo: _Geo, i: int, v):
  """:func:`_project` with jaxopt's projections on the windows cut out of the cell layout: the
  l2 ball on the centred window, the box on its mean."""
  gr = grid.groups[i]
  c, cc = v.shape[0], v.shape[-1]
  vw, aw = _to_windows(v, gr), _to_windows(geo.a[i], gr)
  m = jnp.mean(vw, axis=1, keepdims=True)
  z = jax.vmap(projection_l2_ball)(vw - m - aw, geo.R[i].reshape(-1)) + aw
  if ball.luminance:
    b, r = geo.b[i].reshape(-1, 1), geo.r[i].reshape(-1, 1)
    m = projection_box(m, (b - r, b + r))
  return _from_windows(z + m, gr, grid, c, cc)


# The group projections :func:`solve` can use (its ``projection``).
PROJECTIONS = {"closed_form": _project, "jaxopt_l2": _project_jaxopt_l2}


def _window_scales(ball: QualityBall, grid: W.CellGrid, geo: _Geo, d):
  """Per group, the largest ``t`` in [0, 1] with ``t * d`` feasible for each window [C,Ky,Kx]."""
  n = ball.window * ball.window
  ds = jnp.sum(d, axis=-1)
  out = []
  for i, gr in enumerate(grid.groups):
    m = W.cell_win_sum(ds, gr) / n
    dt = d - W.cell_win_bcast(m, gr, grid)[..., None]
    pp = W.cell_win_sum(jnp.sum(dt * dt, axis=-1), gr)
    ap = W.cell_win_sum(jnp.sum(geo.a[i] * dt, axis=-1), gr)
    lum = ball.luminance
    out.append(ball.window_scale(pp, ap, m, geo.slack[i], geo.R[i], geo.b[i] if lum else None,
                                 geo.r[i] if lum else None))
  return out


def _feasible(ball: QualityBall, grid: W.CellGrid, geo: _Geo, d):
  """``d`` [C,Hc,Wc,cc] (in the box) scaled by the largest feasible ``t`` in [0, 1]."""
  return d * jnp.min(jnp.stack([jnp.min(t) for t in _window_scales(ball, grid, geo, d)]))


def _local_scale(ball: QualityBall, grid: W.CellGrid, geo: _Geo, d):
  """Every cell of ``d`` scaled by the smallest feasible scale of the windows that hold it: a
  local repair (not exactly feasible by itself) before the global scaling of :func:`_feasible`."""
  t = jnp.ones(d.shape[:-1], d.dtype)
  for i, (gr, ti) in enumerate(zip(grid.groups, _window_scales(ball, grid, geo, d))):
    t = jnp.minimum(t, W.cell_win_bcast(ti - 1.0, gr, grid) + 1.0)
  return d * t[..., None]


def _dual_bound(ball: QualityBall, grid: W.CellGrid, geo: _Geo, lin, lo, hi, y):
  """Weak-duality upper bounds on ``max <lin, d>`` (covered region) from multipliers ``y`` (per
  group [..., C,Hc,Wc,cc]; leading axes: candidates). Returns the bounds [...]."""
  n = ball.window * ball.window
  lead = y[0].ndim - 4
  red = lambda t, k: jnp.sum(t, axis=tuple(range(lead, lead + k)))
  total = 0.0
  ub = 0.0
  for i, gr in enumerate(grid.groups):
    ym = W.cell_win_sum(jnp.sum(y[i], axis=-1), gr) / n
    yt = y[i] - W.cell_win_bcast(ym, gr, grid)[..., None]
    total = total + (y[i] if ball.luminance else yt)  # no luminance: only zero-mean y is finite
    ub = ub + red(geo.a[i] * yt, 4)
    ub = ub + red(geo.R[i] * jnp.sqrt(W.cell_win_sum(jnp.sum(yt * yt, axis=-1), gr)), 3)
    if ball.luminance:
      ub = ub + n * red(geo.b[i] * ym + geo.r[i] * jnp.abs(ym), 3)
  v = lin - total
  return ub + red(jnp.maximum(lo * v, hi * v), 4)


def _solve_one(x, lin, mask, init, *, ball: QualityBall, mode: str, max_iters: int, tol: float,
               check_every: int, alpha: float, repair: int, cold: bool, max_blocks: int,
               projection: str):
  """ADMM for one image from ``init`` (``cold``: a fresh state, which "proj" replaces by
  ``clip(d0)``). ``lin`` is ``g`` (lp) or ``d0`` (proj). Returns (d, info, state)."""
  project = PROJECTIONS[projection]
  grid = ball.cell_grid(x.shape[0], x.shape[1])
  lo_f, hi_f = box(x, mask=mask)
  if mode == "lp":
    scale = jnp.sqrt(jnp.mean(lin * lin))
    lin = lin / jnp.maximum(scale, 1e-30)
    base = jnp.where(lin > 0, hi_f, jnp.where(lin < 0, lo_f, 0.0))   # the box vertex
  else:
    base = projection_box(lin, (lo_f, hi_f))
  cells = functools.partial(W.to_cells, grid=grid)
  geo = _geometry(ball, grid, cells(x))
  lo, hi, lin_c, base_c = cells(lo_f), cells(hi_f), cells(lin), cells(base)
  cover = sum(geo.mask)
  inv_cover = 1.0 / jnp.maximum(cover, 1.0)
  n_groups = len(grid.groups)

  def objective(d, lin):
    if mode == "lp":
      return jnp.sum(lin * d)
    return -0.5 * jnp.sum((d - lin) ** 2)

  border = objective(base, lin) - objective(base_c, lin_c)   # pixels in no window: fixed

  def evaluate(v, rho):
    """T(v) and the z = P(v), d of the evaluation (``v``, ``z``: tuples over the groups)."""
    z = tuple(project(ball, grid, geo, i, v[i]) for i in range(n_groups))
    acc = sum(2.0 * zi - vi for zi, vi in zip(z, v))
    if mode == "lp":
      d = jnp.where(cover > 0, (acc + lin_c / rho) * inv_cover, base_c)
    else:
      d = (lin_c + rho * acc) / (1.0 + rho * cover)
    d = projection_box(d, (lo, hi))
    return tuple(vi + alpha * geo.mask[i] * (d - zi) for i, (vi, zi) in enumerate(zip(v, z))), z, d

  def repaired(d):
    def sweep(_, v):
      for i in range(n_groups):
        v = project(ball, grid, geo, i, v) + (1.0 - geo.mask[i]) * v
      return projection_box(v, (lo, hi))
    d = jax.lax.fori_loop(0, repair, sweep, d) if repair else d
    d = _local_scale(ball, grid, geo, _local_scale(ball, grid, geo, projection_box(d, (lo, hi))))
    return _feasible(ball, grid, geo, d)

  def better(best_d, best_lb, d_f):
    lb = objective(d_f, lin_c) + border
    return jnp.where(lb > best_lb, d_f, best_d), jnp.maximum(lb, best_lb)

  class Carry(NamedTuple):
    v: tuple
    rho: jax.Array
    it: jax.Array
    best_d: jax.Array
    best_lb: jax.Array
    best_ub: jax.Array
    r_rel: jax.Array
    s_rel: jax.Array
    done: jax.Array
    block: jax.Array   # iterations until the next check
    gap: jax.Array     # certified relative gap at the last check (lp)

  budget = -(-max_iters // check_every) * check_every     # max_iters rounded up

  def cond(c):
    return jnp.logical_and(c.it < max_iters, jnp.logical_not(c.done))

  def body(c):
    # Plain iterations carry only v (z materialised only for the last two: the dual residual).
    # Checks come every `check_every` iterations, or up to `max_blocks` times that (lp: see nxt).
    block = jnp.minimum(c.block, budget - c.it)
    v = jax.lax.fori_loop(0, block - 2 if check_every >= 2 else block - 1,
                          lambda _, v: evaluate(v, c.rho)[0], c.v)
    if check_every >= 2:
      v, z_prev, _ = evaluate(v, c.rho)
    else:
      z_prev = tuple(jnp.zeros_like(vi) for vi in v)
    v_next, z, d = evaluate(v, c.rho)
    norm = lambda ts: jnp.sqrt(sum(jnp.sum(t * t) for t in ts))
    u = tuple(geo.mask[i] * (vi - zi) for i, (vi, zi) in enumerate(zip(v, z)))
    r_rel = norm(tuple(geo.mask[i] * (d - zi) for i, zi in enumerate(z))) / jnp.maximum(
        jnp.maximum(norm(tuple(geo.mask[i] * d for i in range(n_groups))), norm(z)), 1e-30)
    s_rel = norm(tuple(a - b for a, b in zip(z, z_prev))) / jnp.maximum(norm(u), 1e-30)
    last = c.it + block >= max_iters
    if mode == "lp":
      # Multipliers: y = rho u, and y with the box's share g - sum(y) at the pixels where d is
      # strictly inside the box handed over to the windows holding them (the box term weighs
      # that residual with the box width, the windows only with their small sets' extent).
      y = tuple(c.rho * ui for ui in u)
      w = (lin_c - sum(y)) * inv_cover * jnp.logical_and(d > lo, d < hi)
      ys = tuple(jnp.stack([yi, yi + geo.mask[i] * w]) for i, yi in enumerate(y))
      ub = jnp.minimum(c.best_ub, jnp.min(_dual_bound(ball, grid, geo, lin_c, lo, hi, ys)) + border)
      # The repair (the costly part of a check) only runs once the raw iterate's objective is
      # within the target of the bound: before that the repaired one could not pass either.
      raw = objective(d, lin_c) + border
      try_lb = jnp.logical_or(ub - raw <= tol * jnp.abs(raw), last)
      best_d, best_lb = jax.lax.cond(try_lb, lambda: better(c.best_d, c.best_lb, repaired(d)),
                                     lambda: (c.best_d, c.best_lb))
      done = (ub - best_lb) <= tol * jnp.abs(best_lb)
      # Next check: a fraction of the iterations that the gap's last rate of decrease predicts
      # to reach tol (checks cost ~4 iterations, mostly the repair).
      gap = (ub - best_lb) / jnp.maximum(jnp.abs(best_lb), 1e-30)
      rate = jnp.log(jnp.maximum(gap, 1e-30) / jnp.maximum(c.gap, 1e-30)) / block
      need = jnp.log(tol / jnp.maximum(gap, 1e-30)) / jnp.minimum(rate, -1e-6)
      steps = jnp.floor(_AHEAD * need / check_every).astype(jnp.int32)
      ok = jnp.logical_and(c.gap < 1.0, rate < 0)            # (gap >= 1: no repaired LB yet)
      nxt = check_every * jnp.clip(jnp.where(ok, steps, 1), 1, max_blocks)
    else:
      ub = c.best_ub
      done = jnp.logical_and(r_rel <= tol, s_rel <= tol)
      gap, nxt = c.gap, jnp.asarray(check_every, jnp.int32)
      best_d, best_lb = jax.lax.cond(jnp.logical_or(done, last),
                                     lambda: better(c.best_d, -jnp.inf, repaired(d)),
                                     lambda: (c.best_d, c.best_lb))
    # OSQP-style penalty rebalancing. On a change the next point is v with u = v - P(v) rescaled,
    # which keeps P(v) = z (a normal-cone vector scaled).
    ratio = jnp.sqrt(r_rel / jnp.maximum(s_rel, 1e-30))
    adapt = jnp.logical_or(ratio > 5.0, ratio < 0.2)
    rho = jnp.where(adapt, jnp.clip(c.rho * ratio, 1e-6, 1e6), c.rho)
    v_next = tuple(jnp.where(adapt, zi + ui * (c.rho / rho), vi)
                   for zi, ui, vi in zip(z, u, v_next))
    return Carry(v_next, rho, c.it + block, best_d, best_lb, ub, r_rel, s_rel, done, nxt, gap)

  if cold and mode == "proj":
    v0, d_f0 = tuple(m * base_c for m in geo.mask), _feasible(ball, grid, geo, base_c)
  elif cold:
    v0, d_f0 = tuple(init.v), jnp.zeros_like(lin_c)           # the cold state: v = 0, d = 0
  else:
    v0, d_f0 = tuple(init.v), _feasible(ball, grid, geo, projection_box(cells(init.d), (lo, hi)))
  rho0 = init.rho
  inf = jnp.asarray(jnp.inf, jnp.float32)
  c0 = Carry(v0, rho0, jnp.asarray(0, jnp.int32), d_f0, objective(d_f0, lin_c) + border, inf,
             inf, inf, jnp.asarray(False), jnp.asarray(check_every, jnp.int32), inf)
  c = jax.lax.while_loop(cond, body, c0)
  if mode == "lp":
    gap = (c.best_ub - c.best_lb) / jnp.maximum(jnp.abs(c.best_lb), 1e-30)
  else:
    gap = jnp.asarray(jnp.nan, jnp.float32)
  info = ProjectionInfo(c.it, c.r_rel, c.s_rel, gap, c.done, c.rho)
  d = W.from_cells(c.best_d, base, grid)
  return d, info, AdmmState(d, jnp.stack(c.v), c.rho)


@functools.partial(jax.jit, static_argnames=("ball", "mode", "max_iters", "tol", "check_every",
                                             "alpha", "repair", "max_blocks", "projection"))
def solve(x: jax.Array, lin: jax.Array, mask: jax.Array, init: AdmmState | None,
          rho0: jax.Array, *,
          ball: QualityBall, mode: str, max_iters: int, tol: float, check_every: int,
          alpha: float, repair: int, max_blocks: int, projection: str):
  """Batched ADMM (``lax.map`` over images).

  Args:
    x, lin, mask: [N,H,W,C] images, ``g`` (lp) or ``d0`` (proj), mask in {0, 1}.
    init: an :class:`AdmmState` (warm start) or None (cold start with penalty ``rho0`` [N]).
    rho0: [N] initial penalties (unused with ``init``, which carries its own).
    ball, mode ("lp" or "proj"), max_iters, tol, check_every, alpha, repair, max_blocks: static
      hyper-parameters (module docstring; their defaults live in ``solver.py``).
    projection: how the window balls are projected, a key of :data:`PROJECTIONS`:
      ``"closed_form"`` (the solvers') or ``"jaxopt_l2"`` (module docstring).

  Returns: (d [N,H,W,C], ProjectionInfo of [N] arrays, final AdmmState).
  """
  checks.check_choice(projection, "projection", PROJECTIONS)
  cold = init is None
  if cold:
    init = init_state(x, ball, rho0)
  fn = functools.partial(_solve_one, ball=ball, mode=mode, max_iters=max_iters, tol=tol,
                         check_every=check_every, alpha=alpha, repair=repair, cold=cold,
                         max_blocks=max_blocks, projection=projection)
  return jax.lax.map(lambda a: fn(*a), (x, lin, mask, init))

