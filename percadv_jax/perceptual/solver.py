"""The fast JAX solvers over the quality ball: the linear program and the Euclidean projection.

``solve_linear``: ``max <g, d> s.t. d in ball(x)``. ``project``: ``min |d - d0|^2 s.t. d in
ball(x)``. Algorithm (details in ``admm.py`` and ``docs/perceptual.md``): consensus ADMM between
the box (which carries the objective) and the ``ceil(w/s)**2`` groups of non-overlapping windows
(each projected in closed form), in a cell layout of the image, over-relaxed with an adaptive
penalty. For the LP, every ``check_every`` iterations a weak-duality bound from the ADMM
multipliers is computed; once the iterate's objective is within ``tol`` of it, the iterate is
*repaired* (a few cyclic projections onto the groups and the box, then a local per-window scaling)
and made exactly feasible by a closed-form global scaling; the solver stops when the certified
relative gap is <= ``tol``. The projection stops on relative primal and dual residuals <= ``tol``.
The returned ``d`` is always exactly feasible (``violation <= 1e-5``). Images are solved one
after another (``lax.map``), each stopping on its own.

The solvers own their settings: the defaults below are the only place where they are defined
(the attack passes its own budget explicitly).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from percadv_jax import checks
from percadv_jax.perceptual import admm
from percadv_jax.perceptual.admm import AdmmState
from percadv_jax.perceptual.ball import QualityBall, check_ball

# Iterations between checks (residuals, penalty update, certified gap), both solvers.
CHECK_EVERY = 10
# The linear program: certified relative gap, budget, initial penalty for the RMS-normalised g,
# over-relaxation, repair sweeps, and the most checks' worth of iterations between two checks.
LP_TOL = 1e-3
LP_MAX_ITERS = 3000
LP_RHO = 3.0
LP_ALPHA = 1.9
LP_REPAIR = 2
LP_MAX_BLOCKS = 4
# The projection: relative residual tolerance, budget, penalty, over-relaxation, repair sweeps.
PROJ_TOL = 1e-6
PROJ_MAX_ITERS = 3000
PROJ_RHO = 1.0
PROJ_ALPHA = 1.6
PROJ_REPAIR = 3


def _settings(tol, max_iters, check_every, rho, alpha, repair):
  return dict(tol=_open_interval(tol, "tol", 0.0, 1.0),
              max_iters=checks.check_int(max_iters, "max_iters", minimum=1),
              check_every=checks.check_int(check_every, "check_every", minimum=1),
              rho=_open_interval(rho, "rho", 0.0, None),
              alpha=_open_interval(alpha, "alpha", 0.0, 2.0),
              repair=checks.check_int(repair, "repair", minimum=0))


def _open_interval(value, name, lo, hi):
  """``value`` as a float in the open interval ``(lo, hi)`` (``hi`` None: unbounded)."""
  return checks.check_float(value, name, minimum=lo, maximum=hi, min_inclusive=False,
                            max_inclusive=False)


def _mask(x, mask):
  if mask is None:
    return jnp.ones_like(x)
  if checks.is_concrete(mask):
    checks.check_mask(mask, x.shape)
  return jnp.broadcast_to(jnp.asarray(mask, jnp.float32), x.shape)


def _check_init(init, x, ball):
  """Raises ValueError unless ``init`` is an :class:`AdmmState` for the images ``x`` [N,H,W,C]
  and ``ball`` (shapes only, so also under ``jit``)."""
  if not isinstance(init, AdmmState):
    raise ValueError(f"init must be an AdmmState (from init_state or return_state=True), got "
                     f"{type(init).__name__}")
  want = jax.eval_shape(lambda v: admm.init_state(v, ball, jnp.zeros((v.shape[0],))), x)
  for field in AdmmState._fields:
    got, need = tuple(getattr(getattr(init, field), "shape", ())), getattr(want, field).shape
    if got != tuple(need):
      why = (f"init holds a batch of {got[0]}, x of {x.shape[0]}" if got and got[0] != need[0]
             else "init comes from another image size or ball")
      raise ValueError(f"init.{field} has shape {got}, but images x of shape {tuple(x.shape)} "
                       f"with this ball need {tuple(need)} ({why}); build it with "
                       "init_state(x, ball)")


def init_state(x: jax.Array, ball: QualityBall, *, rho: float = LP_RHO) -> AdmmState:
  """The cold-start :class:`AdmmState` of ``solve_linear`` for images ``x`` [N,H,W,C].

  Passing it as ``init`` equals a cold start with the same ``rho``; an attack carries it through
  its loop and warm-starts every LP from the previous one.

  Returns:
    ``AdmmState(d [N,H,W,C] zeros, v [N,G,C,Hc,Wc,c*c] zeros, rho [N])``.
  """
  check_ball(ball)
  rho = _open_interval(rho, "rho", 0.0, None)
  return admm.init_state(x, ball, jnp.full((x.shape[0],), rho, jnp.float32))


def solve_linear(x: jax.Array, g: jax.Array, ball: QualityBall, *, mask: jax.Array | None = None,
                 tol: float = LP_TOL, max_iters: int = LP_MAX_ITERS, rho: float = LP_RHO,
                 alpha: float = LP_ALPHA, check_every: int = CHECK_EVERY,
                 repair: int = LP_REPAIR, init: AdmmState | None = None,
                 return_info: bool = False, return_state: bool = False):
  """Maximises ``<g, d>`` over the quality ball around ``x`` (batched; jit friendly).

  Args:
    x: [N,H,W,C] float images in [0, 1].
    g: [N,H,W,C] float objective (e.g. a loss gradient); the solution is invariant to scaling g.
    ball: the :class:`QualityBall`.
    mask: optional [N,H,W,1] (or broadcastable) in {0,1}: ``d`` is 0 where the mask is 0.
    tol: certified relative duality gap in (0, 1) at which an image stops.
    max_iters: ADMM iteration budget per image (rounded up to a multiple of ``check_every``).
    rho: initial ADMM penalty for the RMS-normalised ``g`` (adapted on the fly).
    alpha: over-relaxation in (0, 2).
    check_every: iterations between gap checks / penalty updates near the target; further away
      the next check is scheduled from the gap's rate of decrease, up to 4x that.
    repair: cyclic-projection sweeps applied to the iterate before the local and exact scaling.
    init: an :class:`AdmmState` from a previous call or :func:`init_state` (warm start, e.g. from
      the previous step of an attack); its ``rho`` replaces ``rho``.
    return_info: also return a :class:`ProjectionInfo` (iterations, relative residuals,
      certified ``gap``, ``converged``, final ``rho``; each [N]).
    return_state: also return the final :class:`AdmmState` (for warm starts).

  Returns:
    d [N,H,W,C] float32, exactly feasible (``ball.violation(x, d) <= 1e-5``, ``0 <= x+d <= 1``);
    plus ``info`` and/or ``state`` when asked, in that order.
  """
  check_ball(ball)
  knobs = _settings(tol, max_iters, check_every, rho, alpha, repair)
  return_info = checks.check_bool(return_info, "return_info")
  return_state = checks.check_bool(return_state, "return_state")
  if checks.is_concrete(x):
    ball.check(x, d=g, name="g")
  x = jnp.asarray(x, jnp.float32)
  g = jnp.asarray(g, jnp.float32)
  if g.shape != x.shape:
    raise ValueError(f"g must have the images' shape {tuple(x.shape)}, got {tuple(g.shape)}")
  if init is not None:
    _check_init(init, x, ball)
  rho0 = jnp.full((x.shape[0],), knobs.pop("rho"), jnp.float32)
  d, info, state = admm.solve(x, g, _mask(x, mask), init, rho0, ball=ball, mode="lp",
                              max_blocks=LP_MAX_BLOCKS, projection="closed_form", **knobs)
  out = (d,)
  if return_info:
    out += (info,)
  if return_state:
    out += (state,)
  return out if len(out) > 1 else d


def project(x: jax.Array, d: jax.Array, ball: QualityBall, *, mask: jax.Array | None = None,
            tol: float = PROJ_TOL, max_iters: int = PROJ_MAX_ITERS, rho: float = PROJ_RHO,
            alpha: float = PROJ_ALPHA, check_every: int = CHECK_EVERY, repair: int = PROJ_REPAIR,
            return_info: bool = False):
  """Euclidean projection of ``d`` onto the quality ball around ``x`` (box included; batched).

  Consensus ADMM over the window groups and the box, each block projected in closed form, with
  over-relaxation and an adaptive penalty; the result is made exactly feasible by a repair and a
  closed-form scaling by ``1 - O(residual)``.

  Args:
    x: [N,H,W,C] float images in [0, 1].
    d: [N,H,W,C] float perturbation to project.
    ball: the :class:`QualityBall`.
    mask: optional [N,H,W,1] (or broadcastable) in {0,1}: the result is 0 where the mask is 0.
    tol: relative primal and dual residual in (0, 1) at which an image stops.
    max_iters: ADMM iteration budget per image (rounded up to a multiple of ``check_every``).
    rho: initial ADMM penalty (adapted on the fly).
    alpha: over-relaxation in (0, 2).
    check_every: iterations between residual checks / penalty updates.
    repair: cyclic-projection sweeps applied before the exact scaling.
    return_info: also return a :class:`ProjectionInfo` (each field [N]).

  Returns:
    d' [N,H,W,C] float32 with ``ball.violation(x, d') <= 1e-5`` and ``0 <= x + d' <= 1``; with
    ``return_info`` the pair ``(d', info)``.
  """
  check_ball(ball)
  knobs = _settings(tol, max_iters, check_every, rho, alpha, repair)
  return_info = checks.check_bool(return_info, "return_info")
  if checks.is_concrete(x):
    ball.check(x, d=d)
  x = jnp.asarray(x, jnp.float32)
  d = jnp.asarray(d, jnp.float32)
  if d.shape != x.shape:
    raise ValueError(f"d must have the images' shape {tuple(x.shape)}, got {tuple(d.shape)}")
  rho0 = jnp.full((x.shape[0],), knobs.pop("rho"), jnp.float32)
  out, info, _ = admm.solve(x, d, _mask(x, mask), None, rho0, ball=ball, mode="proj",
                            max_blocks=1, projection="closed_form", **knobs)
  return (out, info) if return_info else out

