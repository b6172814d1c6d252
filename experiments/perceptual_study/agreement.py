"""CAMs of the clean images and the agreement of each perturbation map with them and with the
foreground masks, per image (over the images each attack fooled)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from experiments.configs.perceptual_cam import CAM_METHODS, MAP_KINDS
from percadv_jax import cam, parallel, perceptual

METRICS = ("pearson", "spearman", "top_k_iou")
MASK_METRICS = ("energy_ratio", "auc", "energy_in_region")


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
