"""Agreement between perturbation maps, saliency maps and ground-truth regions.

Maps are float ``[N, H, W]`` (a trailing channel axis of size 1 is accepted); regions (foreground
masks) are ``[N, H, W]`` or ``[N, H, W, 1]`` in {0, 1}. Every metric is computed per image and
returned as an array ``[N]``; ``agreement`` adds means over the batch (NaNs, e.g. from an
all-background region, are left out of the means).

Perturbation maps: :func:`perturbation_magnitude` (per-pixel ``|d|`` over channels) and
:func:`dissimilarity_map` (``1 - SSIM`` map). :func:`top_k_energy` is the share of a map's energy
inside a saliency map's top-k% region (chance: k%), the perceptual study's direct measure.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import checks


# ----------------------------------------------------------------------------- perturbation maps

def perturbation_magnitude(d: jax.Array, *, reduce: str = "l2") -> jax.Array:
  """Per-pixel perturbation size ``[N, H, W]`` from ``d = x_adv - x`` ``[N, H, W, C]``.

  ``reduce``: "l2" (Euclidean norm over channels), "max" (max |d| over channels) or "l1".
  """
  checks.check_choice(reduce, "reduce", ("l2", "max", "l1"))
  if np.ndim(d) != 4:
    raise ValueError(f"d must be [N, H, W, C], got shape {tuple(np.shape(d))}")
  d = jnp.asarray(d, jnp.float32)
  if reduce == "l2":
    return jnp.sqrt(jnp.sum(d * d, axis=-1))
  if reduce == "max":
    return jnp.max(jnp.abs(d), axis=-1)
  return jnp.sum(jnp.abs(d), axis=-1)


def dissimilarity_map(ssim_map: jax.Array, *, size: tuple[int, int] | None = None) -> jax.Array:
  """``1 - SSIM`` per pixel, ``[N, H, W]``, from an SSIM map ``[N, h, w]`` or ``[N, h, w, C]``.

  Channels are averaged. SSIM maps of valid windows are smaller than the image by the window
  size minus one; with ``size=(H, W)`` the map is padded back (edge values, centred, so pixel
  ``i`` of a valid map lands on its window's centre).
  """
  m = jnp.asarray(ssim_map, jnp.float32)
  if m.ndim == 4:
    m = jnp.mean(m, axis=-1)
  if m.ndim != 3:
    raise ValueError(f"ssim_map must be [N, h, w] or [N, h, w, C], got shape {m.shape}")
  m = 1.0 - m
  if size is not None and tuple(size) != m.shape[1:]:
    dh, dw = size[0] - m.shape[1], size[1] - m.shape[2]
    if dh < 0 or dw < 0:
      raise ValueError(f"size {tuple(size)} is smaller than the SSIM map {m.shape[1:]}")
    m = jnp.pad(m, ((0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)), mode="edge")
  return m


# ----------------------------------------------------------------------------- input checks

def _as_maps(m: Any, name: str) -> jax.Array:
  shape = tuple(np.shape(m))
  if len(shape) == 4 and shape[-1] == 1:
    m = m[..., 0]
    shape = shape[:3]
  if len(shape) != 3:
    raise ValueError(f"{name} must be [N, H, W] (or [N, H, W, 1]), got shape {shape}")
  checks.check_finite(m, name)
  return jnp.asarray(m, jnp.float32)


def _check_same(a: jax.Array, b: jax.Array, an: str, bn: str) -> None:
  if a.shape != b.shape:
    raise ValueError(f"{an} {a.shape} and {bn} {b.shape} must have the same shape [N, H, W]; "
                     "resize one first (e.g. compute the CAM with upsample=True)")


def _check_nonneg(m: jax.Array, name: str) -> None:
  if checks.is_concrete(m) and m.size and float(jnp.min(m)) < 0:
    raise ValueError(f"{name} must be >= 0 for energy / pointing metrics, got min "
                     f"{float(jnp.min(m)):.4g}")


# ----------------------------------------------------------------------------- metrics

def _flat(m: jax.Array) -> jax.Array:
  return m.reshape(m.shape[0], -1)


def pearson(a: jax.Array, b: jax.Array) -> jax.Array:
  """Pearson correlation per image ``[N]`` (NaN when a map is constant)."""
  a, b = _flat(a), _flat(b)
  a = a - a.mean(axis=1, keepdims=True)
  b = b - b.mean(axis=1, keepdims=True)
  den = jnp.sqrt(jnp.sum(a * a, axis=1) * jnp.sum(b * b, axis=1))
  return jnp.where(den > 0, jnp.sum(a * b, axis=1) / jnp.where(den > 0, den, 1.0), jnp.nan)


def rank_average(v: jax.Array) -> jax.Array:
  """1-based ranks of a vector ``[P]``, ties get their average rank (float32)."""
  s = jnp.sort(v)
  left = jnp.searchsorted(s, v, side="left")
  right = jnp.searchsorted(s, v, side="right")
  return (left + right + 1).astype(jnp.float32) / 2.0


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
  """Spearman rank correlation per image ``[N]`` (Pearson of tie-averaged ranks)."""
  ra = jax.vmap(rank_average)(_flat(a))
  rb = jax.vmap(rank_average)(_flat(b))
  return pearson(ra, rb)


def top_k_mask(m: jax.Array, k: int) -> jax.Array:
  """Per image, 1.0 on the ``k`` largest pixels (ties broken by pixel order), else 0: ``[N, P]``."""
  flat = _flat(m)

  def one(v):
    idx = jnp.argsort(-v, stable=True)[:k]
    return jnp.zeros(v.shape, jnp.float32).at[idx].set(1.0)

  return jax.vmap(one)(flat)


def top_k_size(num_pixels: int, fraction: float) -> int:
  """Pixels in a top-``fraction`` region of a map of ``num_pixels``: ``max(1, round(f P))``."""
  fraction = checks.check_float(fraction, "fraction", minimum=0.0, maximum=1.0,
                                min_inclusive=False)
  return max(1, int(round(fraction * num_pixels)))


def top_k_iou(a: jax.Array, b: jax.Array, *, fraction: float = 0.1) -> jax.Array:
  """IoU of the top ``fraction`` (in (0, 1]) of pixels of each map, per image ``[N]``."""
  k = top_k_size(a.shape[1] * a.shape[2], fraction)
  ma, mb = top_k_mask(a, k), top_k_mask(b, k)
  inter = jnp.sum(ma * mb, axis=1)
  return inter / (2.0 * k - inter)


def top_k_weights(m: jax.Array, k: int) -> jax.Array:
  """Per image, membership of each pixel in the map's top-``k`` region, ``[N, P]`` float32.

  1 above the ``k``-th largest value ``t``, 0 below it; the pixels equal to ``t`` share the
  remaining places evenly (each gets ``(k - #above) / #equal``), so ties are not broken by
  pixel order and the weights sum to exactly ``k``.
  """
  flat = _flat(m)
  t = -jnp.sort(-flat, axis=1)[:, k - 1:k]
  above = flat > t
  equal = flat == t
  share = (k - jnp.sum(above, axis=1, keepdims=True)) / jnp.sum(equal, axis=1, keepdims=True)
  return jnp.where(above, 1.0, jnp.where(equal, share, 0.0)).astype(jnp.float32)


def top_k_energy(m: jax.Array, saliency: jax.Array, *, fraction: float = 0.1) -> jax.Array:
  """Share of a map's energy inside the top ``fraction`` of a saliency map's pixels, ``[N]``.

  Args:
    m: float ``[N, H, W]`` >= 0, e.g. a ``1 - SSIM`` map or ``|d|``.
    saliency: float ``[N, H, W]``, e.g. a CAM; its top ``k = top_k_size(H W, fraction)``
      pixels form the region (ties at the threshold share the places: :func:`top_k_weights`).
    fraction: in (0, 1].
  Returns:
    float32 ``[N]`` in [0, 1]: ``sum(m * region) / sum(m)``; a map spread regardless of the
    saliency map gives ``k / (H W)`` (chance, = ``fraction`` up to rounding); NaN where ``m``
    sums to 0.
  Raises:
    ValueError: maps that are not ``[N, H, W]`` (or ``[N, H, W, 1]``) of one shape, NaNs, a
      negative ``m``, ``fraction`` outside (0, 1].
  """
  m, saliency = _as_maps(m, "m"), _as_maps(saliency, "saliency")
  _check_same(m, saliency, "m", "saliency")
  _check_nonneg(m, "m")
  k = top_k_size(m.shape[1] * m.shape[2], fraction)
  w = top_k_weights(saliency, k)
  m = _flat(m)
  total = jnp.sum(m, axis=1)
  return jnp.where(total > 0, jnp.sum(m * w, axis=1) / jnp.where(total > 0, total, 1.0), jnp.nan)


def energy_in_region(m: jax.Array, region: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(fraction of the map's total inside the region, that fraction / region's area fraction).

  Both ``[N]``; NaN when the map sums to 0 (ratio also when the region is empty).
  """
  m, r = _flat(m), _flat(region)
  total = jnp.sum(m, axis=1)
  frac = jnp.where(total > 0, jnp.sum(m * r, axis=1) / jnp.where(total > 0, total, 1.0), jnp.nan)
  area = jnp.mean(r, axis=1)
  ratio = jnp.where(area > 0, frac / jnp.where(area > 0, area, 1.0), jnp.nan)
  return frac, ratio


def pointing_game(m: jax.Array, region: jax.Array) -> jax.Array:
  """1.0 where the map's maximum (first one in pixel order) lies inside the region, ``[N]``."""
  m, r = _flat(m), _flat(region)
  idx = jnp.argmax(m, axis=1)
  return jnp.take_along_axis(r, idx[:, None], axis=1)[:, 0]


def roc_auc(m: jax.Array, region: jax.Array) -> jax.Array:
  """ROC-AUC of the map as a score for region membership, per image ``[N]``.

  Mann-Whitney: ``(sum of positives' tie-averaged ranks - P (P + 1) / 2) / (P Q)`` — the
  probability a region pixel scores above a background pixel, ties counting one half.
  NaN when the region is empty or covers everything.
  """
  m, r = _flat(m), _flat(region)
  ranks = jax.vmap(rank_average)(m)
  pos = jnp.sum(r, axis=1)
  neg = r.shape[1] - pos
  u = jnp.sum(ranks * r, axis=1) - pos * (pos + 1) / 2.0
  ok = (pos > 0) & (neg > 0)
  return jnp.where(ok, u / jnp.where(ok, pos * neg, 1.0), jnp.nan)


@functools.partial(jax.jit, static_argnames=("fraction", "has_saliency", "has_region"))
def _agreement(p, s, region, *, fraction, has_saliency, has_region):
  out = {}
  if has_saliency:
    out["pearson"] = pearson(p, s)
    out["spearman"] = spearman(p, s)
    out["top_k_iou"] = top_k_iou(p, s, fraction=fraction)
  if has_region:
    out["region_area"] = jnp.mean(_flat(region), axis=1)
    maps = {"perturbation": p, **({"saliency": s} if has_saliency else {})}
    for name, m in maps.items():
      frac, ratio = energy_in_region(m, region)
      out[f"{name}_energy_in_region"] = frac
      out[f"{name}_energy_ratio"] = ratio
      out[f"{name}_pointing_game"] = pointing_game(m, region)
      out[f"{name}_auc"] = roc_auc(m, region)
  return out


def agreement(perturbation_map: jax.Array, saliency_map: jax.Array | None, *,
              region: jax.Array | None = None, top_k: float = 0.1) -> dict[str, Any]:
  """Agreement of a perturbation map with a saliency map and/or a ground-truth region.

  Args:
    perturbation_map: ``[N, H, W]`` (e.g. :func:`perturbation_magnitude`,
      :func:`dissimilarity_map`); must be >= 0 when ``region`` is given.
    saliency_map: ``[N, H, W]`` (e.g. a CAM) or None (only region metrics).
    region: ``[N, H, W]`` / ``[N, H, W, 1]`` in {0, 1}, e.g. a foreground mask, or None.
    top_k: fraction of pixels in the top-k IoU (0 < top_k <= 1).
  Returns:
    dict of float32 ``[N]`` arrays, plus ``"mean"``: the same keys -> NaN-ignoring batch means.
    Keys with a saliency map: ``pearson``, ``spearman``, ``top_k_iou``. With a region:
    ``region_area`` and, for ``m`` in ("perturbation", "saliency"): ``{m}_energy_in_region``
    (fraction of the map's sum inside the region), ``{m}_energy_ratio`` (that / area fraction:
    1 = chance), ``{m}_pointing_game`` (argmax inside the region), ``{m}_auc`` (ROC-AUC).
  Raises:
    ValueError: shapes that are not ``[N, H, W]`` or do not match, NaNs, a non-binary region,
      negative maps with a region, ``top_k`` outside (0, 1], nothing to compare.
  """
  p = _as_maps(perturbation_map, "perturbation_map")
  s = None if saliency_map is None else _as_maps(saliency_map, "saliency_map")
  if s is not None:
    _check_same(p, s, "perturbation_map", "saliency_map")
  r = None
  if region is not None:
    r = _as_maps(region, "region")
    _check_same(p, r, "perturbation_map", "region")
    checks.check_mask(r, p.shape, "region")
    _check_nonneg(p, "perturbation_map")
    if s is not None:
      _check_nonneg(s, "saliency_map")
  if s is None and r is None:
    raise ValueError("agreement needs a saliency_map, a region, or both")
  top_k = checks.check_float(top_k, "top_k (a fraction of the pixels)", minimum=0.0,
                             maximum=1.0, min_inclusive=False)
  out = _agreement(p, s if s is not None else p, r if r is not None else p,
                   fraction=float(top_k), has_saliency=s is not None, has_region=r is not None)
  out = dict(out)
  out["mean"] = {k: jnp.nanmean(v) for k, v in out.items()}
  return out
