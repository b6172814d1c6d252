"""The perceptual study's sanity baselines (library pieces: ``percadv_jax.cam.sanity``).

Per seed, on the selected (clean, correctly classified) images:

- ``randomized_cams``: Grad-CAM++ of the model re-initialised at each stage of the cascade
  (``sanity.cascade`` and ``sanity.null_stage``), and how much each still resembles the trained
  model's CAM (Spearman per image, Adebayo et al.'s similarity measure);
- ``smooth_sigma``: the smoothness of the smooth random maps;
- ``deletion``: Grad-CAM++'s deletion curves against a random pixel order, and their areas.

The agreement of each perturbation map with these references is computed in
``agreement.direct``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.perceptual_study import agreement
from percadv_jax import cam, models, parallel

# Offsets of the seeds of the random references from the study's seed (our choice: streams apart
# from the image selection's seed + 2 and the attacks' seed + 11).
FRESH_SEED = 101
SMOOTH_SEED = 13
DELETION_SEED = 17
SCORES = ("prob", "logit")


def stages(config: Any) -> tuple[str, ...]:
  """The cascade stages computed: ``sanity.cascade`` plus the null's stage."""
  s = config.sanity
  out = tuple(s.cascade)
  if "random_model" in s.nulls and s.null_stage not in out:
    out += (s.null_stage,)
  return out


def null_refs(config: Any) -> dict[str, str]:
  """``{null: reference map name}`` for ``agreement.direct`` (``sanity.nulls``)."""
  return {n: {"random_model": f"cascade:{config.sanity.null_stage}"}.get(n, n)
          for n in config.sanity.nulls}


def cascade_layers(module: Any, variables: Any, x: np.ndarray, layer: str,
                   names: tuple[str, ...]) -> dict[str, list[str]]:
  """``{stage: the layers it re-initialises}``: "logits" the last layer, "above_cam" every layer
  above the CAM layer ``layer``, "all" every layer (``cam.layer_order``)."""
  order = cam.layer_order(module, variables, x[:1])
  above = cam.layers_after(module, variables, x[:1], layer)
  table = {"logits": order[-1:], "above_cam": above, "all": order}
  return {n: table[n] for n in names}


def randomized_cams(module: Any, variables: Any, x: np.ndarray, y: np.ndarray, cam_map: np.ndarray,
                    *, layer: str, names: tuple[str, ...], seed: int, batch_size: int) -> dict:
  """Grad-CAM++ (for ``y``) of the model re-initialised at each stage of the cascade.

  The fresh variables are ``models.random_variables`` (He-normal kernels, zero biases, BatchNorm
  reset to scale 1, offset 0, mean 0, variance 1; our choice: compile-free, and the same
  distribution for every architecture), seeded by ``seed + FRESH_SEED``.

  Returns:
    ``{"layers": {stage: [layer names]}, "cams": {stage: [N, H, W]}, "similarity": {stage:
    float [N] Spearman of the stage's CAM with the trained model's ``cam_map``}}``.
  """
  fresh = models.random_variables(module, x[:1], seed=seed + FRESH_SEED)
  layers = cascade_layers(module, variables, x, layer, names)
  bs = parallel.padded_batch_size(len(x), batch_size)
  cams, similarity = {}, {}
  for stage, names_ in layers.items():
    v = cam.randomize_layers(variables, fresh, names_)
    cams[stage] = parallel.map_examples(agreement._cam_fn(module, agreement.DIRECT_CAM, layer), v,
                                        {"image": x, "label": y}, batch_size=bs)["cam"]
    similarity[stage] = np.asarray(cam.spearman(cams[stage], cam_map), np.float64)
  return {"layers": layers, "cams": cams, "similarity": similarity}


def smooth_sigma(config: Any, cam_map: np.ndarray, cam_side: int, seed: int) -> dict:
  """The smooth random maps' Gaussian: ``sanity.smooth_sigma`` pixels, or (0) the sigma whose
  noise has the Grad-CAM++ maps' mean spatial autocorrelation at a lag of one CAM cell (image
  side / CAM layer side: the scale of the CAM's upsampling).

  Returns:
    ``{"sigma": pixels, "source": str, "lag": pixels}``.
  """
  size = int(min(np.shape(cam_map)[1:]))
  lag = int(min(max(1, round(size / max(cam_side, 1))), size - 1))
  if config.sanity.smooth_sigma:
    return {"sigma": float(config.sanity.smooth_sigma), "source": "config", "lag": lag}
  try:
    sigma = cam.matched_sigma(cam_map, lag=lag, key=jax.random.key(seed + SMOOTH_SEED))
    source = f"matched to the Grad-CAM++ maps' autocorrelation at lag {lag} px"
  except ValueError:  # every CAM constant: no autocorrelation to match
    sigma, source = lag / 2, f"half a CAM cell ({lag} px): the CAMs are constant"
  return {"sigma": float(sigma), "source": source, "lag": lag}


@functools.lru_cache(maxsize=8)
def _deletion_fn(steps: int, baseline: str, methods: tuple[str, ...], module: Any):
  """Per batch: the deletion curves of each CAM and of a random order, as one call of
  ``cam.deletion_curve`` on the batch repeated once per order (one compiled model pass). Keyed
  by the module (equal modules share it, so a new seed's model compiles nothing)."""
  def f(variables, batch, key):
    fn = lambda z: module.apply(variables, z, train=False)
    x, y = batch["image"], batch["label"]
    orders = [batch[m] for m in methods] + [jnp.zeros(x.shape[:3], x.dtype)]  # all ties: random
    k = len(orders)
    c = cam.deletion_curve(fn, jnp.concatenate([x] * k), jnp.concatenate([y] * k),
                           jnp.concatenate(orders), steps=steps, baseline=baseline, key=key)
    out = {}
    for i, name in enumerate(methods + ("random",)):
      for score in SCORES:
        out[f"{name}/{score}"] = c[score][i * len(x):(i + 1) * len(x)]
    return out
  return f


def deletion(config: Any, module: Any, variables: Any, x: np.ndarray, y: np.ndarray,
             cam_map: np.ndarray, *, seed: int, batch_size: int) -> dict:
  """Deletion curves of the direct answer's CAM (Grad-CAM++, ``cam_map`` [N, H, W]) and of a
  random pixel order, per image, for the model ``module.apply(variables, x, train=False)``:
  ``2 (deletion_steps + 1)`` forward passes per image.

  Returns:
    ``{"per_image": {key: float [N]}, "curves": {name: {score: mean curve [steps + 1]}},
    "fraction": [steps + 1]}``; per-image keys ``<method>/<score>_auc``, ``random/<score>_auc``
    and ``<method>/<score>_auc_gain`` (random order's area minus the CAM's: > 0 where deleting
    the CAM's top pixels lowers the true class's score faster), ``score`` in ("prob", "logit").
  """
  s = config.sanity
  methods = (agreement.DIRECT_CAM,)
  fn = _deletion_fn(s.deletion_steps, s.deletion_baseline, methods, module)
  data = {"image": x, "label": np.asarray(y, np.int32), methods[0]: cam_map}
  out = parallel.map_examples(fn, variables, data,
                              batch_size=parallel.padded_batch_size(len(x), batch_size),
                              key=jax.random.key(seed + DELETION_SEED))
  per_image, curves = {}, {}
  for name in methods + ("random",):
    curves[name] = {}
    for score in SCORES:
      c = np.asarray(out[f"{name}/{score}"], np.float64)
      per_image[f"{name}/{score}_auc"] = np.asarray(cam.curve_auc(c), np.float64)
      curves[name][score] = c.mean(axis=0).tolist()
  for m in methods:
    for score in SCORES:
      per_image[f"{m}/{score}_auc_gain"] = (per_image[f"random/{score}_auc"]
                                            - per_image[f"{m}/{score}_auc"])
  fraction = (np.arange(s.deletion_steps + 1) / s.deletion_steps).tolist()
  return {"per_image": per_image, "curves": curves, "fraction": fraction}
