"""The fast JAX solver of the quality-ball linear program ``max <g, d> s.t. d in ball(x)``.

Algorithm (details in ``admm.py``): consensus ADMM between the box (which carries the linear
objective) and the ``ceil(w/s)**2`` groups of non-overlapping windows (each projected in closed
form), in a cell layout of the image, over-relaxed (alpha = 1.9) with an adaptive penalty. Every
``check_every`` iterations a weak-duality bound from the ADMM multipliers is computed; once the
iterate's objective is within ``tol`` of it, the iterate is *repaired* (a few cyclic projections
onto the groups and the box, then a local per-window scaling) and made exactly feasible by a
closed-form global scaling; the solver stops when the certified relative gap is <= ``tol``. The
returned ``d`` is the best exactly feasible iterate: ``violation <= 1e-5`` always, optimal within
``tol`` when ``converged``. Images are solved one after another (``lax.map``), each stopping on
its own.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from percadv_jax import checks
from percadv_jax.perceptual import admm
from percadv_jax.perceptual.admm import AdmmState
from percadv_jax.perceptual.ball import QualityBall


def solve_linear(x: jax.Array, g: jax.Array, ball: QualityBall, *, mask: jax.Array | None = None,
                 tol: float = 1e-3, max_iters: int = 3000, rho: float = 3.0, alpha: float = 1.9,
                 check_every: int = 10, repair: int = 2, init: AdmmState | None = None,
                 return_info: bool = False, return_state: bool = False):
  """Maximises ``<g, d>`` over the quality ball around ``x`` (batched; jit/vmap friendly).

  Args:
    x: [N,H,W,C] float images in [0, 1].
    g: [N,H,W,C] float objective (e.g. a loss gradient); the solution is invariant to scaling g.
    ball: the :class:`QualityBall`.
    mask: optional [N,H,W,1] (or broadcastable) in {0,1}: ``d`` is 0 where the mask is 0.
    tol: certified relative duality gap at which an image stops.
    max_iters: ADMM iteration budget per image (rounded up to a multiple of ``check_every``).
    rho: initial ADMM penalty for the RMS-normalised ``g`` (adapted on the fly).
    alpha: over-relaxation in (0, 2).
    check_every: iterations between gap checks / penalty updates near the target; further away
      the next check is scheduled from the gap's rate of decrease, up to 4x that.
    repair: cyclic-projection sweeps applied to the iterate before the local and exact scaling.
    init: an :class:`AdmmState` from a previous call (warm start, e.g. from the previous step of
      an attack).
    return_info: also return a ``ProjectionInfo`` (iterations, relative residuals, certified
      ``gap``, ``converged``, final ``rho``; each [N]).
    return_state: also return the final :class:`AdmmState` (for warm starts).

  Returns:
    d [N,H,W,C] float32, exactly feasible (``ball.violation(x, d) <= 1e-5``, ``0 <= x+d <= 1``);
    plus ``info`` and/or ``state`` when asked, in that order.
  """
  if not isinstance(x, jax.core.Tracer):
    ball.check(x, g)
    checks.check_positive(tol, "tol")
    if mask is not None:
      checks.check_mask(mask, x.shape)
    if not 0.0 < alpha < 2.0:
      raise ValueError(f"alpha must lie in (0, 2), got {alpha}")
    checks.check_positive(rho, "rho")
  x = jnp.asarray(x, jnp.float32)
  g = jnp.asarray(g, jnp.float32)
  m = jnp.ones_like(x) if mask is None else jnp.broadcast_to(
      jnp.asarray(mask, jnp.float32), x.shape)
  rho0 = jnp.full((x.shape[0],), rho, jnp.float32)
  d, info, state = admm.solve(x, g, m, init, rho0, ball=ball, mode="lp", max_iters=int(max_iters),
                              tol=float(tol), check_every=int(check_every), alpha=float(alpha),
                              repair=int(repair), max_blocks=4)
  out = (d,)
  if return_info:
    out += (info,)
  if return_state:
    out += (state,)
  return out if len(out) > 1 else d
