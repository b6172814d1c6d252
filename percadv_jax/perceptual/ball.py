"""The perceptual quality ball: a convex SSIM constraint set around an image.

This module is the constraint set only (its constants, feasibility scaling and measurements); the
solvers that optimise over it are in ``admm.py`` / ``solver.py``. The derivation is written out in
``docs/perceptual.md`` ("The quality ball").

For an image ``x`` [H, W, C] and a perturbation ``d``, per channel and for every ``w x w`` window
``k`` at stride ``s`` (valid positions), with ``n = w * w``, centred patches ``xt_k``, ``dt_k``
and means ``mu_k``, ``mean(d_k)`` (uniform weights, ``C1 = 0.01**2``, ``C2 = 0.03**2``):

* structure ``S2 >= 1 - e2``  <=>  ``|| dt_k - e2/(1-e2) xt_k || <= R_k`` with
  ``R_k^2 = e2 (2 - e2) |xt_k|^2 / (1-e2)^2 + e2 n C2 / (1-e2)`` (a ball in the centred subspace);
* luminance ``S1 >= 1 - e1``  <=>  ``| mean(d_k) - e1/(1-e1) mu_k | <= r_k`` with
  ``r_k^2 = e1 (2 - e1) mu_k^2 / (1-e1)^2 + e1 C1 / (1-e1)`` (an interval on the mean);
* the box ``0 <= x + d <= 1``.

``d = 0`` lies strictly inside every ball and interval (``R_k^2 - |a_k|^2 = e2 (2|xt_k|^2 + n C2)
/ (1 - e2) > 0``), which makes the exact feasibility step of :func:`feasible_scale` possible.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import checks
from percadv_jax.perceptual import windows as W

C1 = 0.01 ** 2
C2 = 0.03 ** 2
# Feasibility margin of the exact scaling step: radii are shrunk by this relative amount so that
# float32 round-off cannot leave a (tiny) violation.
_MARGIN = 2e-6


class WindowGeometry(NamedTuple):
  """Per-group constants of the ball around one image (window layout [Ky,w,Kx,w,C] or
  [Ky,1,Kx,1,C]): ball centres ``a``, radii ``R``, ``slack = R^2 - |a|^2``; interval centres
  ``b``, half-widths ``r`` (``None`` when the luminance term is off)."""
  a: tuple
  R: tuple
  slack: tuple
  b: tuple | None
  r: tuple | None


def box(x: jax.Array, *, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Per-pixel bounds of ``d``: ``0 <= x + d <= 1``, and ``d = 0`` where the mask is 0.

  Args:
    x: images [..., H, W, C] in [0, 1].
    mask: optional, broadcastable to ``x.shape``, in {0, 1}.

  Returns:
    ``(lo, hi)``, each shaped like ``x``.
  """
  lo, hi = -x, 1.0 - x
  if mask is not None:
    mask = jnp.broadcast_to(mask, x.shape).astype(x.dtype)
    lo, hi = lo * mask, hi * mask
  return lo, hi


def _check_eps(value, name, allow_off):
  """``value`` as a float in (0, 1): a real scalar as ``checks.check_float`` takes them, or a
  concrete 0-d jax array. With ``allow_off``, None (returned as is) and 0 mean "off"."""
  off = " (None or 0 switches the luminance term off)" if allow_off else ""
  if value is None:
    if allow_off:
      return None
    raise ValueError(f"{name} is required (a number in (0, 1))")
  if isinstance(value, jax.Array) and checks.is_concrete(value) and value.ndim == 0:
    value = np.asarray(value)
  try:
    v = checks.check_float(value, name)
    if allow_off and v == 0.0:
      return v
    return checks.check_float(v, name, minimum=0.0, maximum=1.0, min_inclusive=False,
                              max_inclusive=False)
  except ValueError as e:
    raise ValueError(f"{e}{off}") from None


@dataclasses.dataclass(frozen=True)
class QualityBall:
  """The SSIM quality ball (hashable: usable as a static argument of ``jax.jit``).

  Attributes:
    window: window side ``w`` (pixels).
    stride: window stride ``s`` in ``[1, w]``; windows overlap when ``s < w`` and split into
      ``ceil(w/s)**2`` groups of non-overlapping windows.
    eps_structure: ``e2`` in (0, 1): every window keeps ``S2 >= 1 - e2``.
    eps_luminance: ``e1`` in (0, 1), or None / 0 to switch the luminance constraint off.

  Every pixel must lie in some window, since a pixel in none would be bounded by the box alone:
  a ``stride`` larger than ``window`` is refused here, and an image whose sides ``L`` do not fit
  the windows exactly (``(L - window) % stride != 0``, the last windows stopping short of the
  border) is refused with a ``ValueError`` wherever the ball is applied to it (see
  :meth:`check_size`). The numbers are checked and stored as Python ``int`` / ``float``.

  The set holds no solver settings: iteration budgets and tolerances are keyword arguments of
  ``solve_linear`` / ``project`` (``solver.py``).
  """
  window: int = 8
  stride: int = 4
  eps_structure: float = 0.05
  eps_luminance: float | None = 0.05

  def __post_init__(self):
    for name in ("window", "stride"):
      object.__setattr__(self, name, checks.check_int(getattr(self, name), name, minimum=1))
    if self.stride > self.window:
      raise ValueError(f"stride {self.stride} is larger than window {self.window}: the pixels "
                       "between two windows would lie in no window, constrained by nothing but "
                       "the box; use a stride <= window")
    object.__setattr__(self, "eps_structure",
                       _check_eps(self.eps_structure, "eps_structure", allow_off=False))
    object.__setattr__(self, "eps_luminance",
                       _check_eps(self.eps_luminance, "eps_luminance", allow_off=True))

  # -- static facts --------------------------------------------------------------------------

  @property
  def luminance(self) -> bool:
    """Whether the luminance constraint is on (``eps_luminance`` not None / 0)."""
    return self.eps_luminance is not None and float(self.eps_luminance) != 0.0

  def check_size(self, height: int, width: int) -> None:
    """Checks that the windows cover every pixel of an image of shape [height, width, C].

    The windows start at multiples of ``stride`` and the last one must end on the border:
    ``window <= L`` and ``(L - window) % stride == 0`` for both sides ``L``. (``stride <= window``,
    checked at construction, leaves no gap between consecutive windows.)

    Raises:
      ValueError: naming the window, the stride and the image size (and sizes that fit).
    """
    for side, length in (("height", height), ("width", width)):
      if self.window > length:
        raise ValueError(f"window {self.window} is larger than the {height}x{width} image")
      left = (length - self.window) % self.stride
      if left:
        fit = length - left
        raise ValueError(
            f"a QualityBall with window {self.window} and stride {self.stride} does not cover "
            f"every pixel of a {height}x{width} image: along its {side} the windows cover pixels "
            f"0-{fit - 1} only, leaving {left} border pixel(s) in no window (the attack would "
            f"change them constrained by nothing but the box); use sides L with "
            f"(L - {self.window}) % {self.stride} == 0 (e.g. {fit} or {fit + self.stride}), or "
            "another stride")

  def groups(self, height: int, width: int) -> tuple[W.Group, ...]:
    """The groups of non-overlapping windows of an image of shape [height, width, C] (checked
    by :meth:`check_size`)."""
    self.check_size(height, width)
    return W.groups(height, width, self.window, self.stride)

  def cell_grid(self, height: int, width: int) -> W.CellGrid:
    """The cell layout ``[C, Hc, Wc, c*c]`` of an image of shape [height, width, C] (checked
    by :meth:`check_size`)."""
    self.check_size(height, width)
    return W.cell_grid(height, width, self.window, self.stride)

  def grid(self, height: int, width: int) -> tuple[int, int]:
    """Number of window positions ``(Ky, Kx)`` of an image of shape [height, width, C] (checked
    by :meth:`check_size`)."""
    self.check_size(height, width)
    return (W.num_windows(height, self.window, self.stride),
            W.num_windows(width, self.window, self.stride))

  def check(self, x: jax.Array, *, d: jax.Array | None = None, name: str = "d") -> None:
    """Validates images and, if given, a perturbation or objective of their shape.

    Args:
      x: images [N,H,W,C] in [0, 1] whose every pixel the windows cover (:meth:`check_size`).
      d: optional array [N,H,W,C], finite (values checked only when concrete).
      name: how ``d`` is named in the messages (e.g. "g" for a gradient).

    Raises:
      ValueError: naming the argument and the problem.
    """
    checks.check_images(x, "x", channels=None)
    self.check_size(x.shape[1], x.shape[2])
    if d is not None:
      if tuple(getattr(d, "shape", ())) != tuple(x.shape):
        raise ValueError(f"{name} must have the images' shape {tuple(x.shape)}, got "
                         f"{tuple(getattr(d, 'shape', ()))}")
      checks.check_finite(d, name)

  # -- geometry ------------------------------------------------------------------------------

  def geometry(self, x: jax.Array) -> WindowGeometry:
    """Per-group ball/interval constants around ``x`` [..., H, W, C] (float32)."""
    out = []
    for gr in self.groups(x.shape[-3], x.shape[-2]):
      xw = W.extract(x, gr)
      mu = W.win_mean(xw)
      xt = xw - mu
      out.append(self.window_constants(xt, jnp.sum(xt * xt, axis=(-4, -2), keepdims=True), mu))
    a_s, r_s, sl_s, b_s, rr_s = (tuple(v) for v in zip(*out))
    lum = self.luminance
    return WindowGeometry(a_s, r_s, sl_s, b_s if lum else None, rr_s if lum else None)

  def window_constants(self, xt: jax.Array, q: jax.Array, mu: jax.Array):
    """The constants of windows with centred pixels ``xt``, squared norms ``q`` and means ``mu``.

    Any layout: ``q`` and ``mu`` hold one value per window (e.g. [..., Ky, 1, Kx, 1, C]) and
    broadcast against ``xt`` (e.g. [..., Ky, w, Kx, w, C]).

    Returns:
      ``(a, R, slack, b, r)``: ball centre ``a`` shaped like ``xt``; radius ``R``, ``slack = R^2 -
      |a|^2``, interval centre ``b`` and half-width ``r`` shaped like ``q`` (``b``, ``r`` None
      without luminance).
    """
    e2 = float(self.eps_structure)
    n = self.window * self.window
    a = e2 / (1 - e2) * xt
    rad = jnp.sqrt(e2 * (2 - e2) * q / (1 - e2) ** 2 + e2 * n * C2 / (1 - e2))
    slack = e2 * (2 * q + n * C2) / (1 - e2)
    if not self.luminance:
      return a, rad, slack, None, None
    e1 = float(self.eps_luminance)
    return (a, rad, slack, e1 / (1 - e1) * mu,
            jnp.sqrt(e1 * (2 - e1) * mu * mu / (1 - e1) ** 2 + e1 * C1 / (1 - e1)))

  def window_scale(self, pp: jax.Array, ap: jax.Array, m: jax.Array, slack: jax.Array,
                   rad: jax.Array, b: jax.Array | None, r: jax.Array | None) -> jax.Array:
    """The largest ``t`` in [0, 1] with ``t * d`` in each window's ball and interval.

    From the window statistics of ``d`` (``pp = |dt|^2``, ``ap = <a, dt>``, mean ``m``) and the
    window constants (``b``, ``r`` None without luminance), all of one shape [...] with one value
    per window. Closed form: the larger root of the ball quadratic (stable form, using
    ``slack > 0``), a ratio for the interval; radii are shrunk by 2e-6 relative against float32
    round-off. Returns ``t`` [...].
    """
    slack = slack - (2 * _MARGIN) * rad ** 2      # slack' = (R(1-margin))^2 - |a|^2
    disc = ap * ap + pp * slack
    t = slack / jnp.maximum(jnp.sqrt(jnp.maximum(disc, 0.0)) - ap, 1e-30)
    t = jnp.where(pp > 0, jnp.minimum(t, 1.0), 1.0)
    if self.luminance:
      r = r * (1 - _MARGIN)
      ti = jnp.where(m > 0, (b + r) / jnp.where(m > 0, m, 1.0),
                     jnp.where(m < 0, (b - r) / jnp.where(m < 0, m, -1.0), 1.0))
      t = jnp.minimum(t, ti)
    return jnp.clip(t, 0.0, 1.0)

  # -- exact feasibility by scaling ----------------------------------------------------------

  def feasible_scale(self, x: jax.Array, d: jax.Array, *, geo: WindowGeometry | None = None
                     ) -> jax.Array:
    """The largest ``t`` in [0, 1] with ``t * d`` in the ball, per image.

    ``d`` must already satisfy the box (``t * d`` then does too, the box being convex with 0 in
    it). Closed form per constraint: the larger root of a quadratic for each ball, a ratio for each
    interval; radii are shrunk by 2e-6 relative to absorb float32 round-off.

    Args:
      x, d: [..., H, W, C]. Returns: t of shape ``x.shape[:-3]``.
    """
    geo = self.geometry(x) if geo is None else geo
    lead = x.shape[:-3]
    t = jnp.ones(lead, jnp.float32)
    red = tuple(range(len(lead), len(lead) + 5))
    for i, gr in enumerate(self.groups(x.shape[-3], x.shape[-2])):
      dw = W.extract(d, gr)
      m = W.win_mean(dw)
      dt = dw - m
      pp = jnp.sum(dt * dt, axis=(-4, -2), keepdims=True)
      ap = jnp.sum(geo.a[i] * dt, axis=(-4, -2), keepdims=True)
      tw = self.window_scale(pp, ap, m, geo.slack[i], geo.R[i],
                             geo.b[i] if self.luminance else None,
                             geo.r[i] if self.luminance else None)
      t = jnp.minimum(t, jnp.min(tw, axis=red))
    return t

  def make_feasible(self, x: jax.Array, d: jax.Array, *, geo: WindowGeometry | None = None,
                    mask: jax.Array | None = None) -> jax.Array:
    """Clips ``d`` to the box (and to 0 where ``mask == 0``) and scales it by
    :meth:`feasible_scale`: the result is exactly feasible.

    Args:
      x, d: [..., H, W, C]; geo: precomputed :meth:`geometry` of ``x``; mask: broadcastable to
        ``x.shape``, in {0, 1}.

    Returns:
      The feasible ``d`` [..., H, W, C].
    """
    lo, hi = box(x, mask=mask)
    d = jnp.clip(d, lo, hi)
    t = self.feasible_scale(x, d, geo=geo)
    return d * t.reshape(t.shape + (1, 1, 1))

  # -- measurements --------------------------------------------------------------------------

  def violation(self, x: jax.Array, d: jax.Array) -> jax.Array:
    """Largest violation per image: relative for balls (``|dt - a|/R - 1``) and intervals
    (``|mean(d) - b|/r - 1``), absolute for the box; 0 when feasible.

    Args: x [N,H,W,C] in [0,1], d [N,H,W,C]. Returns: float32 [N] >= 0.
    """
    if not isinstance(x, jax.core.Tracer):
      self.check(x, d=d)
    return _violation(self, jnp.asarray(x, jnp.float32), jnp.asarray(d, jnp.float32))

  def _violation(self, x, d):
    geo = self.geometry(x)
    red = (1, 2, 3)
    v = jnp.max(jnp.maximum(-x - d, x + d - 1.0), axis=red)
    red = tuple(range(1, 6))
    for i, gr in enumerate(self.groups(x.shape[1], x.shape[2])):
      dw = W.extract(d, gr)
      m = W.win_mean(dw)
      diff = dw - m - geo.a[i]
      nrm = jnp.sqrt(jnp.sum(diff * diff, axis=(-4, -2), keepdims=True))
      v = jnp.maximum(v, jnp.max(nrm / geo.R[i] - 1.0, axis=red))
      if self.luminance:
        v = jnp.maximum(v, jnp.max(jnp.abs(m - geo.b[i]) / geo.r[i] - 1.0, axis=red))
    return jnp.maximum(v, 0.0)

  def window_ssim(self, x: jax.Array, d: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-window luminance and structure terms of SSIM(x, x + d) with uniform weights.

    Args: x, d [N,H,W,C]. Returns: (S1, S2), each float32 [N, Ky, Kx, C] over all window
    positions (``Ky = (H - w) // s + 1``); in the ball every ``S1 >= 1 - e1``, ``S2 >= 1 - e2``.
    """
    if not isinstance(x, jax.core.Tracer):
      self.check(x, d=d)
    return _window_ssim(self, jnp.asarray(x, jnp.float32), jnp.asarray(d, jnp.float32))

  def _window_ssim(self, x, d):
    n_, h, w, c = x.shape
    ky, kx = self.grid(h, w)
    s1 = jnp.zeros((n_, ky, kx, c), jnp.float32)
    s2 = jnp.zeros((n_, ky, kx, c), jnp.float32)
    n = self.window * self.window
    for gr in self.groups(h, w):
      xw = W.extract(x, gr)
      dw = W.extract(d, gr)
      mx = W.win_mean(xw)
      md = W.win_mean(dw)
      xt = xw - mx
      yt = xt + dw - md
      my = mx + md
      num2 = 2 * jnp.sum(xt * yt, axis=(2, 4)) + n * C2
      den2 = jnp.sum(xt * xt, axis=(2, 4)) + jnp.sum(yt * yt, axis=(2, 4)) + n * C2
      mx, my = mx[:, :, 0, :, 0], my[:, :, 0, :, 0]
      v1 = (2 * mx * my + C1) / (mx * mx + my * my + C1)
      sl = (slice(None), slice(gr.ry, None, gr.g), slice(gr.rx, None, gr.g))
      s1 = s1.at[sl].set(v1)
      s2 = s2.at[sl].set(num2 / den2)
    return s1, s2

def check_ball(ball: Any) -> None:
  """Raises ValueError unless ``ball`` is a :class:`QualityBall`."""
  if not isinstance(ball, QualityBall):
    raise ValueError(f"ball must be a perceptual.QualityBall, got {ball!r}")


_violation = jax.jit(QualityBall._violation, static_argnums=0)
_window_ssim = jax.jit(QualityBall._window_ssim, static_argnums=0)
