"""CVXPY reference solvers for the quality ball (the golden standard of the JAX solvers).

One problem per image, written with *vectorised* second-order cones: for every group of
non-overlapping windows the pixels are gathered by one sparse selection matrix into an
``[n, K]`` matrix (one window per column), centred by subtracting the column means, and constrained
by a single ``cp.SOC(R, V - A, axis=0)`` (K cones at once); the luminance intervals are one
vector inequality per group and the box is a bound on ``d``. Constants are computed in float64.
Solvers: Clarabel, falling back to ECOS, then SCS.
"""

from __future__ import annotations

import numpy as np

from percadv_jax.perceptual import windows as W
from percadv_jax.perceptual.ball import C1, C2, QualityBall, check_ball

_SOLVERS = ("CLARABEL", "ECOS", "SCS")


def _window_index(shape, ball: QualityBall):
  """Per group: flat pixel indices [K, n] of its windows (K = Ky * Kx * C)."""
  import jax.numpy as jnp
  h, w, c = shape
  idx = jnp.arange(h * w * c, dtype=jnp.int32).reshape(h, w, c)
  out = []
  for gr in ball.groups(h, w):
    win = np.asarray(W.extract(idx, gr))  # [Ky, w, Kx, w, C]
    win = win.transpose(0, 2, 4, 1, 3).reshape(-1, ball.window * ball.window)
    out.append(win)
  return out


def _constraints(cp, d, x64: np.ndarray, ball: QualityBall):
  import scipy.sparse as sp
  n = ball.window * ball.window
  e2 = float(ball.eps_structure)
  flat = x64.reshape(-1)
  cons = [d >= -flat, d <= 1.0 - flat]
  for win in _window_index(x64.shape, ball):
    k = win.shape[0]
    sel = sp.csr_matrix((np.ones(k * n), (np.arange(k * n), win.reshape(-1))),
                        shape=(k * n, flat.size))
    xw = flat[win]                                  # [K, n]
    mu = xw.mean(axis=1)
    xt = xw - mu[:, None]
    q = np.sum(xt * xt, axis=1)
    a = e2 / (1 - e2) * xt
    rad = np.sqrt(e2 * (2 - e2) * q / (1 - e2) ** 2 + e2 * n * C2 / (1 - e2))
    # Window means as auxiliary variables keep every cone row at two nonzeros (d_p - m_k);
    # writing the centring out densely makes Clarabel's KKT system 30x denser and slower.
    mean = cp.Variable(k)
    expand = sp.csr_matrix((np.ones(k * n), (np.arange(k * n), np.repeat(np.arange(k), n))),
                           shape=(k * n, k))
    summ = sp.csr_matrix((np.full(k * n, 1.0 / n), (np.repeat(np.arange(k), n), win.reshape(-1))),
                         shape=(k, flat.size))
    cons.append(summ @ d == mean)
    centred = cp.reshape(sel @ d - expand @ mean, (n, k), order="F")
    cons.append(cp.SOC(rad, centred - a.T, axis=0))
    if ball.luminance:
      e1 = float(ball.eps_luminance)
      b = e1 / (1 - e1) * mu
      r = np.sqrt(e1 * (2 - e1) * mu * mu / (1 - e1) ** 2 + e1 * C1 / (1 - e1))
      cons += [mean - b <= r, b - mean <= r]
  return cons


def _solver_order(cp, solver):
  """The solvers to try, in order; ValueError listing the installed ones if none is usable."""
  installed = cp.installed_solvers()
  if solver is not None and solver not in installed:
    raise ValueError(f"CVXPY solver {solver!r} is not installed; installed solvers: "
                     f"{', '.join(installed)}")
  order = [solver] if solver else [s for s in _SOLVERS if s in installed]
  if not order:
    raise ValueError(f"none of the CVXPY solvers {', '.join(_SOLVERS)} is installed; installed "
                     f"solvers: {', '.join(installed)}")
  return order


def _solve(cp, prob, order):
  last = None
  for name in order:
    try:
      prob.solve(solver=name)
    except cp.error.SolverError as e:  # fall back to the next solver
      last = e
      continue
    if prob.status in ("optimal", "optimal_inaccurate"):
      return name
    last = RuntimeError(f"{name} returned status {prob.status}")
  raise RuntimeError(f"no CVXPY solver succeeded ({', '.join(order)}): {last}")


def _prepare(x, other, name, ball):
  check_ball(ball)
  x64 = np.asarray(x, np.float64)
  if x64.ndim != 4:
    raise ValueError(f"x must be [N,H,W,C], got shape {x64.shape}")
  ball.check(np.asarray(x, np.float32), d=np.asarray(other, np.float32), name=name)
  return x64, np.asarray(other, np.float64)


def solve_linear_cvxpy(x, g, ball: QualityBall, *, solver: str | None = None,
                       return_info: bool = False):
  """Reference solution of ``max <g, d> s.t. d in ball(x)``, one CVXPY problem per image.

  Args:
    x: [N,H,W,C] images in [0,1].
    g: [N,H,W,C] linear objective (e.g. a loss gradient).
    ball: the :class:`QualityBall`.
    solver: "CLARABEL", "ECOS" or "SCS"; default: Clarabel, falling back to ECOS then SCS.
    return_info: also return a list of dicts (solver, status, objective, solve_time) per image.

  Returns:
    d [N,H,W,C] float32 (float64 solution cast), and the info list with ``return_info``.
  """
  import cvxpy as cp
  x64, g64 = _prepare(x, g, "g", ball)
  order = _solver_order(cp, solver)
  out, infos = [], []
  for xi, gi in zip(x64, g64):
    d = cp.Variable(xi.size)
    prob = cp.Problem(cp.Maximize(gi.reshape(-1) @ d), _constraints(cp, d, xi, ball))
    name = _solve(cp, prob, order)
    out.append(np.asarray(d.value).reshape(xi.shape))
    infos.append({"solver": name, "status": prob.status, "objective": float(prob.value),
                  "solve_time": float(prob.solver_stats.solve_time or 0.0)})
  res = np.stack(out).astype(np.float32)
  return (res, infos) if return_info else res


def project_cvxpy(x, d0, ball: QualityBall, *, solver: str | None = None) -> np.ndarray:
  """Reference Euclidean projection ``argmin |d - d0|^2 s.t. d in ball(x)`` per image.

  Args:
    x: [N,H,W,C] images in [0,1].
    d0: [N,H,W,C] the point to project.
    ball: the :class:`QualityBall`.
    solver: "CLARABEL", "ECOS" or "SCS"; default: Clarabel, falling back to ECOS then SCS.

  Returns:
    d [N,H,W,C] float64.
  """
  import cvxpy as cp
  x64, d064 = _prepare(x, d0, "d0", ball)
  order = _solver_order(cp, solver)
  out = []
  for xi, di in zip(x64, d064):
    d = cp.Variable(xi.size)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(d - di.reshape(-1))),
                      _constraints(cp, d, xi, ball))
    _solve(cp, prob, order)
    out.append(np.asarray(d.value).reshape(xi.shape))
  return np.stack(out)
