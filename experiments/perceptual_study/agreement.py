"""CAMs of the clean images and the agreement of each perturbation map with them and with the
foreground masks, per image (over the images each attack fooled): the existing agreement table
(``per_image``) and the paper's question answered directly (``direct``: energy share inside the
CAM's top-k% region and rank correlation, each beside its null references)."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs.perceptual_cam import CAM_METHODS, MAP_KINDS
from percadv_jax import cam, parallel, perceptual

METRICS = ("pearson", "spearman", "top_k_iou")
MASK_METRICS = ("energy_ratio", "auc", "energy_in_region")
DIRECT_CAM = CAM_METHODS[0]  # the direct answer uses the paper's CAM, Grad-CAM++


@functools.lru_cache(maxsize=16)
def _cam_fn(module: Any, method: str, layer: str):
  def f(variables, batch, key):
    del key
    return {"cam": cam.compute_cam(method, module, variables, batch["image"], layer=layer,
                                   target=batch["label"])}
  return f


def _ssim_fn(args, batch, key):
  del args, key
  return {"ssim": perceptual.ssim(batch["x"], batch["x_adv"]),
          "map": perceptual.ssim(batch["x"], batch["x_adv"], return_map=True)}


@functools.lru_cache(maxsize=8)
def _violation_fn(ball: Any):
  def f(args, batch, key):
    del args, key
    return {"violation": ball.violation(batch["x"], batch["x_adv"] - batch["x"])}
  return f


def cams(module: Any, variables: Any, x: np.ndarray, y: np.ndarray, *, layer: str,
         batch_size: int) -> dict[str, np.ndarray]:
  """``{method: [N, H, W] in [0, 1]}``: Grad-CAM++ and Grad-CAM of the clean images for ``y``."""
  return {m: parallel.map_examples(_cam_fn(module, m, layer), variables,
                                   {"image": x, "label": y},
                                   batch_size=parallel.padded_batch_size(len(x), batch_size))["cam"]
          for m in CAM_METHODS}


def perturbation_maps(x: np.ndarray, x_adv: np.ndarray, *, batch_size: int) -> dict:
  """``{"ssim": [N] standard SSIM, "abs_d": [N,H,W], "one_minus_ssim": [N,H,W]}``."""
  r = parallel.map_examples(_ssim_fn, {}, {"x": x, "x_adv": x_adv},
                            batch_size=parallel.padded_batch_size(len(x), batch_size))
  return {"ssim": r["ssim"], "abs_d": np.asarray(cam.perturbation_magnitude(x_adv - x)),
          "one_minus_ssim": np.asarray(cam.dissimilarity_map(r["map"], size=x.shape[1:3]))}


def ball_violation(ball: Any, x: np.ndarray, x_adv: np.ndarray, *, batch_size: int
                   ) -> np.ndarray:
  """float [N]: the quality ball's constraint violation of each adversarial image."""
  return parallel.map_examples(_violation_fn(ball), {}, {"x": x, "x_adv": x_adv},
                               batch_size=parallel.padded_batch_size(len(x), batch_size))["violation"]


def per_image(maps: dict, cam_maps: dict, success: np.ndarray, region: np.ndarray | None, *,
              top_k: float) -> dict[str, np.ndarray]:
  """Per-image agreement values of one attack, NaN where the attack failed (nothing to compare).

  Returns:
    ``{"<kind>/<method>_<metric>": float [N]}`` for ``kind`` in MAP_KINDS, ``method`` in
    CAM_METHODS and ``metric`` in METRICS, plus ``"<kind>/mask_<metric>"`` for MASK_METRICS when
    ``region`` is given.
  """
  out = {}
  for kind in MAP_KINDS:
    for method in CAM_METHODS:
      a = cam.agreement(maps[kind], cam_maps[method],
                        region=region if method == CAM_METHODS[0] else None, top_k=top_k)
      for metric in METRICS:
        out[f"{kind}/{method}_{metric}"] = np.asarray(a[metric], np.float64)
      if region is not None and method == CAM_METHODS[0]:
        for metric in MASK_METRICS:
          out[f"{kind}/mask_{metric}"] = np.asarray(a[f"perturbation_{metric}"], np.float64)
  return {k: np.where(success, v, np.nan) for k, v in out.items()}


def cam_vs_mask(cam_maps: dict, region: np.ndarray, *, top_k: float) -> dict[str, np.ndarray]:
  """``{"<method>_energy_ratio", "<method>_auc": float [N]}``: how much of each CAM is on the
  object (the CAM is a sensible reference only where this is above chance)."""
  out = {}
  for method in CAM_METHODS:
    a = cam.agreement(cam_maps[method], None, region=region, top_k=top_k)
    out[f"{method}_energy_ratio"] = np.asarray(a["perturbation_energy_ratio"], np.float64)
    out[f"{method}_auc"] = np.asarray(a["perturbation_auc"], np.float64)
  return out


# ----------------------------------------------------------------------------- the direct answer

def measure_names(fractions: Sequence[float]) -> tuple[str, ...]:
  """The direct answer's measures: ``energy_top<k>`` per fraction (k in percent), ``spearman``."""
  return tuple(f"energy_top{round(100 * f):g}" for f in fractions) + ("spearman",)


def chance(measure: str, fractions: Sequence[float], num_pixels: int) -> float:
  """What ``measure`` is for a map placed regardless of the CAM: ``k / P`` for the energy share
  (``k = cam.top_k_size(P, f)``), 0 for the rank correlation."""
  for f, name in zip(fractions, measure_names(fractions)):
    if name == measure:
      return cam.top_k_size(num_pixels, f) / num_pixels
  return 0.0


def _measures(p, s, fractions):
  """The measures of perturbation maps ``p`` against saliency maps ``s`` (both [B, H, W])."""
  out = {name: cam.top_k_energy(p, s, fraction=f)
         for f, name in zip(fractions, measure_names(fractions))}
  out["spearman"] = cam.spearman(p, s)
  return out


@functools.lru_cache(maxsize=16)
def _direct_fn(fractions: tuple, refs: tuple, random_maps: int):
  """Per batch: each map kind's measures against the CAM (``batch["cam"]``), against each
  reference map ``batch["ref:<name>"]`` and, with ``random_maps`` > 0, averaged over that many
  smooth random maps per image (``args["sigma"]``; the same maps for every map kind). The
  saliency maps are stacked and measured by one vmapped function (a small program to compile,
  whatever the number of references)."""
  def f(args, batch, key):
    b, h, w = batch["cam"].shape
    sal = [batch["cam"][None]] + [batch[f"ref:{r}"][None] for r in refs]
    if random_maps:
      r = cam.smooth_random_maps(key, (random_maps * b, h, w), sigma=args["sigma"])
      sal.append(r.reshape(random_maps, b, h, w))
    sal = jnp.concatenate(sal)  # [S, B, H, W]
    out = {}
    for kind in MAP_KINDS:
      p = batch[kind]
      m = jax.vmap(lambda s: _measures(p, s, fractions))(sal)
      for name, v in m.items():  # v: [S, B]
        out[f"{kind}/{name}"] = v[0]
        for i, ref in enumerate(refs):
          out[f"{kind}/{name}@{ref}"] = v[1 + i]
        if random_maps:
          out[f"{kind}/{name}@smooth_random"] = jnp.nanmean(v[1 + len(refs):], axis=0)
    return out
  return f


def direct(maps: dict, cam_map: np.ndarray, refs: dict[str, np.ndarray], success: np.ndarray,
           *, fractions: Sequence[float], nulls: dict[str, str], smooth_sigma: float,
           random_maps: int, key: jax.Array, batch_size: int) -> dict[str, np.ndarray]:
  """The paper's question for one attack, per image: does each perturbation map concentrate on
  the CAM's important region, and more than with the null references?

  Args:
    maps: the attack's ``perturbation_maps`` (``[N, H, W]`` per kind in MAP_KINDS).
    cam_map: float ``[N, H, W]`` Grad-CAM++ of the trained model (true class).
    refs: reference maps ``{name: float [N, H, W]}``, e.g. ``"cascade:<stage>"`` (the randomised
      model's CAMs) and ``"other_image"``; rows with NaNs give NaN values.
    success: bool ``[N]``; every value is NaN where the attack failed.
    fractions: the k of the energy share (fractions of the pixels).
    nulls: ``{null: reference}``: the references of the paired differences, a name of ``refs``
      or "smooth_random" (``random_maps`` smooth random maps per image of Gaussian
      ``smooth_sigma`` pixels, made from ``key``: the same maps for every attack).
  Returns:
    float64 ``[N]`` per key, for ``kind`` in MAP_KINDS and each measure of ``measure_names``:
    ``<kind>/<measure>`` (against the trained model's CAM), ``<kind>/<measure>@<ref>`` (every
    reference), ``<kind>/<measure>-chance`` and ``<kind>/<measure>-<null>`` (paired
    differences: > 0 where the CAM wins).
  """
  fractions = tuple(float(f) for f in fractions)
  unknown = sorted(set(nulls.values()) - set(refs) - {"smooth_random"})
  if unknown:
    raise ValueError(f"null references {unknown} are not among the reference maps {list(refs)}")
  use_smooth = "smooth_random" in nulls.values() and random_maps > 0
  names = tuple(refs)
  data = {kind: np.asarray(maps[kind], np.float32) for kind in MAP_KINDS}
  data["cam"] = np.asarray(cam_map, np.float32)
  finite = {}
  for ref, m in refs.items():
    finite[ref] = np.all(np.isfinite(m), axis=(1, 2))
    data[f"ref:{ref}"] = np.where(finite[ref][:, None, None], m, 0.0).astype(np.float32)
  out = parallel.map_examples(
      _direct_fn(fractions, names, int(random_maps) if use_smooth else 0),
      {"sigma": jnp.float32(smooth_sigma)}, data,
      batch_size=parallel.padded_batch_size(len(cam_map), batch_size), key=key)
  num_pixels = int(np.prod(np.shape(cam_map)[1:]))
  res = {}
  for kind in MAP_KINDS:
    for name in measure_names(fractions):
      v = np.asarray(out[f"{kind}/{name}"], np.float64)
      res[f"{kind}/{name}"] = v
      res[f"{kind}/{name}-chance"] = v - chance(name, fractions, num_pixels)
      for ref in names:
        res[f"{kind}/{name}@{ref}"] = np.where(finite[ref], out[f"{kind}/{name}@{ref}"], np.nan)
      if use_smooth:
        res[f"{kind}/{name}@smooth_random"] = np.asarray(
            out[f"{kind}/{name}@smooth_random"], np.float64)
      for null, ref in nulls.items():
        if f"{kind}/{name}@{ref}" in res:
          res[f"{kind}/{name}-{null}"] = v - res[f"{kind}/{name}@{ref}"]
  return {k: np.where(success, v, np.nan) for k, v in res.items()}


def other_image(cam_map: np.ndarray) -> np.ndarray:
  """Each image's reference "another image's CAM": the CAM of the next image (cyclically),
  ``[N, H, W]``; all NaN for a single image."""
  if len(cam_map) < 2:
    return np.full(np.shape(cam_map), np.nan, np.float32)
  return np.roll(cam_map, -1, axis=0)
