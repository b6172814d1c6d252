"""Square Attack (Andriushchenko, Croce, Flammarion and Hein, ECCV 2020): the score-based
black-box attack of AutoAttack, Linf and L2. It uses only the model's logits, no gradients.

Random search on the margin loss ``z_y - max_{j != y} z_j`` (AutoAttack's ``SquareAttack`` with
``loss="margin"``): from an initial point on the sphere of radius eps, each iteration proposes a
change of one random square window of side ``s`` and keeps it when the margin decreases; an
example stops once its margin is <= 0 (misclassified). The window's area shrinks with the
iteration: ``s = round(sqrt(p * H * W))`` with ``p = p_init / 2^k`` after 10, 50, 200, 500, 1000,
2000, 4000, 6000 and 8000 iterations (AutoAttack's ``p_selection``, ``p_init = 0.8``, not
rescaled to the budget: ``resc_schedule=False``).

- Linf: the start is ``x + eps * v`` with v a random +-1 per (column, channel) (vertical
  stripes); a proposal sets the window of every channel to ``x +- eps`` (one random sign per
  channel), clipped to the ball and the box.
- L2: the start is a grid of tiles of side ``H // 5`` holding the Square Attack's ``eta``
  pattern (concentric rectangles, +- per half) times a random sign per tile and channel,
  rescaled to norm eps; a proposal moves the perturbation's mass of a second random window into
  a new ``eta`` pattern in the first window and rescales the whole perturbation to norm eps.

Fixed shapes: every iteration evaluates the whole batch (a ``lax.while_loop`` that ends when every
example is misclassified or the budget is spent); an example whose margin is already <= 0 keeps
its point (a per-example active flag instead of AutoAttack's shrinking batch).

Masked Square: proposals and the start change only pixels where ``mask == 1``.
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

# AutoAttack's standard Square Attack: initial fraction of pixels of a window, query budget.
P_INIT = 0.8
QUERIES = 5000
# Iterations after which p halves (AutoAttack's ``p_selection``).
P_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_selection(i: jax.Array, p_init: float) -> jax.Array:
  """The fraction ``p`` of pixels changed at iteration ``i`` (0-based), float32."""
  k = jnp.sum(jnp.asarray(i) > jnp.asarray(P_SCHEDULE))
  return jnp.float32(p_init) / jnp.float32(2.0) ** k.astype(jnp.float32)


def margin(logits: jax.Array, y: jax.Array) -> jax.Array:
  """``z_y - max_{j != y} z_j`` per example, float32 [N] (<= 0: misclassified)."""
  return -losses.margin(logits, y)


def _window(h: int, w: int, top: jax.Array, left: jax.Array, side: jax.Array) -> jax.Array:
  """float32 [N,H,W,1]: 1 inside each example's square window (top, left int [N]; side scalar)."""
  rows = jnp.arange(h)[None, :, None, None]
  cols = jnp.arange(w)[None, None, :, None]
  t, l = top[:, None, None, None], left[:, None, None, None]
  return ((rows >= t) & (rows < t + side) & (cols >= l) & (cols < l + side)).astype(jnp.float32)


def _tail_table(size: int) -> np.ndarray:
  """``T[m] = sum_{k >= m} 1 / (k + 1)^2`` up to ``size`` terms, as ``H[size] - H[m]``."""
  h = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, size + 1) ** 2)])
  return h.astype(np.float32)


def _rectangles(i: jax.Array, j: jax.Array, nr: jax.Array, nc: jax.Array,
                harmonic: jax.Array) -> jax.Array:
  """The Square Attack's ``eta_rectangles(nr, nc)`` at local positions (i, j), unnormalised.

  Concentric rectangles around ``(nr // 2, nc // 2)``: rectangle k adds ``1 / (k + 1)^2`` on
  rows ``[nr // 2 - k, nr // 2 + 1 + k)`` and columns alike, for k < max(nr, nc) // 2 + 1.
  Positions outside the ``nr x nc`` rectangle are 0.
  """
  rc, cc = nr // 2 + 1, nc // 2 + 1
  kmax = jnp.maximum(rc, cc)
  m = jnp.maximum(jnp.maximum(rc - 1 - i, i - rc + 1), jnp.maximum(cc - 1 - j, j - cc + 1))
  m = jnp.clip(m, 0, kmax)
  value = harmonic[kmax] - harmonic[m]
  return jnp.where((i >= 0) & (i < nr) & (j >= 0) & (j < nc), value, 0.0)


def _unit(v: jax.Array, axes) -> jax.Array:
  return v / jnp.maximum(jnp.sqrt(jnp.sum(v * v, axis=axes, keepdims=True)), 1e-30)


def eta_pattern(h: int, w: int, top: jax.Array, left: jax.Array, side: jax.Array,
                flip: jax.Array) -> jax.Array:
  """float32 [N,H,W,1]: each example's ``eta(side)`` pattern placed at (top, left), 0 elsewhere.

  ``eta(s)``: ``eta_rectangles(s // 2, s)`` on the top ``s // 2`` rows and minus
  ``eta_rectangles(s - s // 2, s)`` below, each of unit L2 norm, the whole of unit norm,
  transposed where ``flip`` (bool [N]).
  """
  harmonic = jnp.asarray(_tail_table(max(h, w) + 2))
  i = jnp.arange(h)[None, :, None] - top[:, None, None]
  j = jnp.arange(w)[None, None, :] - left[:, None, None]
  i, j = jnp.where(flip[:, None, None], j, i), jnp.where(flip[:, None, None], i, j)
  half = side // 2
  upper = _unit(_rectangles(i, j, half, side, harmonic), (1, 2))
  lower = _unit(_rectangles(i - half, j, side - half, side, harmonic), (1, 2))
  return _unit(upper - lower, (1, 2))[..., None]


def _draw(keys: jax.Array, stream: int, fn) -> jax.Array:
  """Per-example draws: ``fn(fold_in(k_i, stream))`` for every example's key ``k_i``."""
  return jax.vmap(lambda k: fn(jax.random.fold_in(k, stream)))(keys)


def _l2_start(keys: jax.Array, x: jax.Array) -> jax.Array:
  """The L2 start's direction (unnormalised) [N,H,W,C]: the tile grid of the Square Attack."""
  n, h, w, c = x.shape
  side = max(h // 5, 1)
  first = (h - side * 5) // 2
  tops = [first + side * a for a in range(h // side) if first + side * a < h]
  lefts = [first + side * b for b in range(w // side) if first + side * b < w]
  tiles = [(t, l) for t in tops for l in lefts]
  signs = _draw(keys, 1, lambda k: jax.random.rademacher(k, (len(tiles), c), jnp.float32))
  flips = _draw(keys, 2, lambda k: jax.random.bernoulli(k, 0.5, (len(tiles),)))
  tops, lefts = (jnp.asarray(np.repeat(np.asarray(v)[:, None], n, axis=1), jnp.int32)
                 for v in zip(*tiles))
  patterns = jax.vmap(lambda t, l, f: eta_pattern(h, w, t, l, jnp.int32(side), f))(
      tops, lefts, flips.T)  # [T, N, H, W, 1]
  return jnp.einsum("tnhw,ntc->nhwc", patterns[..., 0], signs)


@C.jit_logits_fn(static_argnames=("queries", "norm", "p_init", "restarts"))
def _square(logits_fn, x, y, keys, eps, mask, *, queries, norm, p_init, restarts):
  n, h, w, c = x.shape
  eps = C.per_example_nonneg(eps, n)
  mask = C.binary_mask(mask)
  free = jnp.ones((n, h, w, 1), jnp.float32) if mask is None else jnp.broadcast_to(
      mask, (n, h, w, 1))

  def score(xa):
    return margin(logits_fn(xa), y)

  def finish(xa):
    return C.project(xa, x, eps, norm, mask)

  def scale_to_eps(delta):  # the L2 perturbation rescaled to norm eps (0 stays 0)
    return delta / (C.l2_norm(delta) + 1e-12) * eps

  def corner(ks, stream, side):
    """Per-example window corners, uniform in ``[0, H - side)`` (0 when side == H), as the
    reference's ``random_int(0, h - s)``."""
    top = _draw(ks, stream, lambda k: jax.random.randint(k, (), 0, jnp.maximum(h - side, 1)))
    left = _draw(ks, stream + 1,
                 lambda k: jax.random.randint(k, (), 0, jnp.maximum(w - side, 1)))
    return top, left

  def channel_signs(ks, stream):
    return _draw(ks, stream, lambda k: jax.random.rademacher(k, (1, 1, c), jnp.float32))

  def propose_linf(ks, xb, side):
    win = _window(h, w, *corner(ks, 0, side), side) * free
    return finish(jnp.clip(xb + win * 2.0 * eps * channel_signs(ks, 2), x - eps, x + eps))

  def propose_l2(ks, xb, side):
    top, left = corner(ks, 0, side)
    win1 = _window(h, w, top, left, side)
    win2 = _window(h, w, *corner(ks, 2, side), side)
    delta = xb - x
    norm_win1 = jnp.sqrt(jnp.sum((delta * win1) ** 2, axis=(1, 2), keepdims=True))  # [N,1,1,C]
    norm_image = C.l2_norm(delta)
    norm_windows = C.l2_norm(delta * jnp.maximum(win1, win2))
    flip = _draw(ks, 5, lambda k: jax.random.bernoulli(k, 0.5))
    new = (eta_pattern(h, w, top, left, side, flip) * channel_signs(ks, 4)
           + delta * win1 / (1e-12 + norm_win1))
    budget = jnp.sqrt(jnp.maximum(eps ** 2 - norm_image ** 2, 0.0) / c + norm_windows ** 2)
    new = new / (1e-12 + jnp.sqrt(jnp.sum(new ** 2, axis=(1, 2), keepdims=True))) * budget
    delta = (delta * (1.0 - win2) * (1.0 - win1) + new * win1) * free
    return finish(jnp.clip(x + scale_to_eps(delta), 0.0, 1.0))

  propose = propose_linf if norm == "linf" else propose_l2

  def run(key_r):
    k_init = jax.vmap(lambda k: jax.random.fold_in(k, 0))(key_r)
    if norm == "linf":
      stripes = _draw(k_init, 0, lambda k: jax.random.rademacher(k, (1, w, c), jnp.float32))
      xb = finish(x + eps * stripes * free)
    else:
      xb = finish(jnp.clip(x + scale_to_eps(_l2_start(k_init, x) * free), 0.0, 1.0))
    mb = score(xb)

    def cond(s):
      i, _, mb = s
      return (i < queries) & jnp.any(mb > 0)

    def body(s):
      i, xb, mb = s
      p = p_selection(i, p_init)
      side = jnp.maximum(jnp.round(jnp.sqrt(p * h * w)), 1.0).astype(jnp.int32)
      if norm == "l2":
        side = jnp.maximum(side, 3)
        side = side + (side % 2 == 0)
      side = jnp.minimum(side, min(h, w))
      # Keys per example and iteration: an example's proposals do not depend on its batch.
      xn = propose(jax.vmap(lambda k: jax.random.fold_in(k, i + 1))(key_r), xb, side)
      mn = score(xn)
      take = (mb > 0) & (mn < mb)  # misclassified examples keep their point
      return i + 1, C.select(take, xn, xb), jnp.where(take, mn, mb)

    _, xb, mb = lax.while_loop(cond, body, (jnp.int32(0), xb, mb))
    return C.select(mb <= 0, xb, x), mb <= 0, -mb

  return C.worst_over_restarts(run, keys, restarts, 1)


def square(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array,
           eps: float | jax.Array, queries: int = QUERIES, norm: str = "linf",
           mask: jax.Array | None = None, p_init: float = P_INIT,
           restarts: int = 1) -> jax.Array:
  """Square Attack (untargeted, margin loss) as in AutoAttack's standard version.

  See the module docstring. Per example at most ``queries + 1`` evaluations of ``logits_fn``
  (the start, then ``queries`` proposals), fewer once misclassified. Example i's draws come from
  its key ``k_i`` (``fold_in(k_i, 0)`` the start, ``fold_in(k_i, t + 1)`` iteration t), so its
  result does not depend on the rest of the batch; restart r uses ``fold_in(k_i, r)``.

  Deviations from AutoAttack's code: AutoAttack draws one window position, one sign vector and
  one pattern orientation per iteration for the whole batch, here each example draws its own
  (the same distribution per example, independent examples); the batch keeps its shape (an
  active flag per example) instead of shrinking; a window never exceeds the image's shorter side
  and the L2 start's tiles are at least 1 pixel, so images smaller than 5 pixels or not square
  work too.

  Args:
    logits_fn, x, y, eps, norm, mask: as ``percadv_jax.attacks.pgd`` (``logits_fn`` is only
      evaluated, never differentiated: Square works on models without useful gradients).
    key: jax.random key (one, or one per example), required.
    queries: iterations after the start (AutoAttack: 5000), >= 1.
    p_init: initial fraction of the pixels a window covers (AutoAttack: 0.8), in (0, 1].
    restarts: independent runs; per example the worst case (AutoAttack: 1).
  Returns:
    x_adv float32 [N,H,W,C]: the misclassified point of each broken example, ``x`` for the
    others; within eps of x in ``norm``, in [0, 1], equal to x where mask is 0.
  Raises:
    ValueError: on bad input (see ``pgd``), ``queries`` < 1, ``p_init`` outside (0, 1].
  """
  queries = checks.check_int(queries, "queries", minimum=1)
  p_init = checks.check_float(p_init, "p_init", minimum=0.0, maximum=1.0, min_inclusive=False)
  x, y, keys, mask, _, restarts = C.prepare(
      logits_fn, x, y, key=key, eps=eps, step_size=None, steps=queries, norm=norm, mask=mask,
      random_start=True, restarts=restarts, targeted=False, loss="margin")
  return _square(logits_fn, x, y, keys, eps, mask, queries=queries, norm=norm,
                 p_init=float(p_init), restarts=restarts)
