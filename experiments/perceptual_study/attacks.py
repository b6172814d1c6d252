"""The perceptual study's images and attacks: correctly classified images, then the SSIM
quality-ball attack and Linf / L2 PGD with radii matched to it, through the evaluation engine."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common, evaluation
from percadv_jax import attacks, data as pdata, io, parallel, perceptual


def ball_of(config: Any) -> perceptual.QualityBall:
  """The study's quality ball (``ball`` fields; e1 = 0 turns the luminance term off)."""
  b = config.ball
  return perceptual.QualityBall(window=b.window, stride=b.stride, eps_structure=b.eps_structure,
                                eps_luminance=b.eps_luminance or None)


@functools.lru_cache(maxsize=8)
def _predict_fn(logits_static: Any):
  def f(args, batch, key):
    del key
    fn = args if logits_static is None else logits_static
    return {"pred": jnp.argmax(fn(batch["image"]), -1)}
  return f


def predict(logits_fn: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
  """int [N]: the predicted classes, sharded over the devices."""
  if isinstance(logits_fn, jax.tree_util.Partial):
    fn, args = _predict_fn(None), logits_fn
  else:
    fn, args = _predict_fn(logits_fn), {}
  return parallel.map_examples(fn, args, {"image": images},
                               batch_size=parallel.padded_batch_size(len(images),
                                                                     batch_size))["pred"]


def select(config: Any, workdir: str, logits_fn: Any, src: Any, num_classes: int,
           seed: int) -> dict:
  """Indices and labels of the first ``data.num_images`` correctly classified candidates.

  Labels come from the data when the model's classes are the dataset's, else (e.g. ImageNet
  weights on an image folder without labels) from the model's predictions.
  """
  d = config.data

  def compute():
    n = min(d.candidates or len(src), len(src))
    arrays = common.subset_arrays(src, n, seed=seed + 2)
    pred = predict(logits_fn, arrays["image"], config.attack.batch_size)
    label_source = "data" if src.info.num_classes == num_classes else "prediction"
    labels = arrays["label"] if label_source == "data" else pred
    correct = np.nonzero(pred == labels)[0]
    chosen = correct[:d.num_images]
    if len(chosen) == 0:
      raise ValueError("the model classifies none of the candidate images correctly: nothing "
                       "to attack")
    all_idx = (np.arange(len(src)) if n >= len(src) else
               np.sort(np.random.default_rng(seed + 2).choice(len(src), n, replace=False)))
    return {"indices": all_idx[chosen].tolist(), "labels": labels[chosen].astype(int).tolist(),
            "label_source": label_source, "candidates": int(n),
            "candidate_accuracy": float(np.mean(pred == labels))}
  path = os.path.join(workdir, "stages", "selection.json")
  sel = io.cached(path, compute)
  keys = ("indices", "labels", "label_source", "candidates", "candidate_accuracy")
  missing = [k for k in keys if k not in sel] if isinstance(sel, dict) else list(keys)
  if missing:
    raise ValueError(f"{path} is not an image selection of this study (it lacks "
                     f"{', '.join(missing)}); delete it to select the images again")
  return sel


def gather(src: Any, indices: Any) -> dict:
  return pdata.to_arrays(src, indices=np.asarray(indices, np.int64))


@dataclasses.dataclass(frozen=True)
class SsimAttack:
  """The SSIM quality-ball attack with the engine's attack signature (hashable: one compile)."""
  ball: perceptual.QualityBall
  steps: int

  def __call__(self, logits_fn, x, y, *, key=None, mask=None):
    del key, mask  # deterministic; the study attacks the full image
    return perceptual.ssim_attack(logits_fn, x, y, ball=self.ball, steps=self.steps)


def key_of(seed: int) -> jax.Array:
  """The seed's attack key (Linf PGD folds in 1, L2 PGD 2, the checklist its own)."""
  return jax.random.PRNGKey(seed + 11)


def store_of(workdir: str) -> str:
  """The seed's store of finished evaluations (``experiments/evaluation.py``)."""
  return os.path.join(workdir, "evaluations")


def spec_of(seed: int) -> dict[str, Any]:
  """The store description of the seed's evaluations on its selected images."""
  return {"seed": seed, "images": "selection"}


def run_attacks(config: Any, workdir: str, logits_fn: Any, x: np.ndarray, y: np.ndarray,
                seed: int) -> dict[str, dict]:
  """``{name: {"x_adv" [N,H,W,C], "success" bool [N], "linf", "l2" [N], "facts"}}`` for the
  SSIM attack and Linf / L2 PGD (theirs also ``"attack"``, the ``attacks.Attack``, and with
  ``attack.diagnostics`` Linf's ``"diagnostics"``); finished attacks are kept in
  ``workdir/evaluations``."""
  a = config.attack
  store = store_of(workdir)
  data = {"image": x, "label": y, "mask": np.ones(x.shape[:3] + (1,), np.float32)}
  key = key_of(seed)
  spec = spec_of(seed)
  out = {}
  with common.Timer() as t:
    ev = evaluation.evaluate(store, spec, logits_fn=logits_fn, data=data,
                             attacks={"ssim": SsimAttack(ball_of(config), a.ssim_steps)},
                             batch_size=a.batch_size, return_adversarial=True,
                             desc="SSIM attack")
  out["ssim"] = _result(ev, "ssim", {"seconds": t.seconds, "steps": a.ssim_steps,
                                    "ball": dataclasses.asdict(ball_of(config))})
  radii = {"linf": a.linf_eps or float(np.median(out["ssim"]["linf"])),
           "l2": a.l2_eps or float(np.median(out["ssim"]["l2"]))}
  for norm in ("linf", "l2"):
    eps = max(radii[norm], 1e-6)
    pgd = attacks.Attack("pgd", eps=eps, steps=a.pgd_steps, norm=norm)
    with common.Timer() as t:
      ev = evaluation.evaluate(store, spec, logits_fn=logits_fn, data=data, attacks={norm: pgd},
                               key=jax.random.fold_in(key, 1 if norm == "linf" else 2),
                               batch_size=a.batch_size, return_adversarial=True,
                               desc=f"{norm} PGD",
                               trust_checks=(attacks.diagnostics.Options(
                                   stronger_steps=a.stronger_steps,
                                   max_examples=a.diagnostic_examples,
                                   large_eps_steps=a.stronger_steps)
                                             if a.diagnostics and norm == "linf" else None))
    set_by_user = a.linf_eps if norm == "linf" else a.l2_eps
    out[norm] = _result(ev, norm, {
        "seconds": t.seconds, "eps": eps, "steps": a.pgd_steps,
        "eps_source": "config" if set_by_user else "median norm of the SSIM attack"})
    out[norm]["attack"] = pgd
    if ev.checks is not None:
      out[norm]["diagnostics"] = {"checks": ev.checks, "summary": ev.summary()["checks"]}
  for name, res in out.items():
    io.log_event(workdir, "attack", attack=name, seconds=res["facts"]["seconds"],
                 success=float(res["success"].mean()))
  return out


def _result(ev: attacks.Evaluation, name: str, facts: dict) -> dict:
  return {"x_adv": ev.x_adv[name], "success": ~ev.survived[name], "linf": ev.linf[name],
          "l2": ev.l2[name], "facts": facts}
