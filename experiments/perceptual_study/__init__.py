"""The perceptual paper's study: are SSIM-constrained perturbations semantically explainable?

``run(config, workdir)`` (config: ``experiments/configs/perceptual_cam.py``), once per seed in
``workdir/seed_<s>/``: gets the model (``model``: Keras weights or trained here), picks correctly
classified images and runs the SSIM quality-ball attack and Linf / L2 PGD with radii matched to it
(``attacks``), computes Grad-CAM++ / Grad-CAM of the clean images and the agreement of each
perturbation map (the 1 - SSIM map, as the paper compares, and |d|) with them and with the
foreground masks, over the images each attack fooled (``agreement``). Then it pools the seeds and
writes (``report``) into ``workdir``:

- ``config.json``, ``metrics.jsonl``; ``seed_<s>/model/`` (a model trained here) and
  ``seed_<s>/evaluations/`` (finished attacks: a rerun skips them)
- ``attacks.md/.csv``     success (and how many images were fooled), norms, mean standard SSIM
- ``agreement.md/.csv``   map agreement per attack and map, pooled over seeds, with CIs and n
- ``replication.md/.csv`` Pearson vs Grad-CAM++ per seed
- ``figures/<attack>.png``: image | CAM | |perturbation| | 1 - SSIM rows (first seed)
- ``results.json``        every number above; ``summary.md`` opens with the answer
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from experiments import common
from experiments.configs import data as data_config
from experiments.configs.perceptual_cam import ATTACKS, CAM_METHODS
from experiments.perceptual_study import agreement, attacks, model, report
from percadv_jax import cam, checks, io, models, train

DATASETS = common.DATASETS + ("image_folder", "oxford_iiit_pet", "imagenet2012")

__all__ = ["run", "validate", "check_inputs", "seeds_of", "agreement", "attacks", "model",
           "report"]


def _image_size(config: Any) -> int:
  d = config.data
  if d.image_size:
    return d.image_size
  return 224 if d.dataset in ("image_folder", "oxford_iiit_pet", "imagenet2012") else 32


def seeds_of(config: Any) -> list[int]:
  """``config.seeds`` as a list (a single integer is one seed)."""
  seeds = config.seeds
  return [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else list(seeds)


def validate(config: Any) -> None:
  """Checks the whole configuration before any work (changing nothing); raises ValueError
  naming the field. What the data and the weights decide is checked by ``check_inputs``."""
  d, b = config.data, config.ball
  checks.check_choice(d.dataset, "data.dataset", DATASETS)
  seeds = seeds_of(config)
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"seeds must be distinct integers, got {config.seeds}")
  for s in seeds:
    checks.check_int(s, "seeds entry", minimum=0)
  if d.dataset != "synthetic_signs":
    common.check_data_dir(d.dataset, d.data_dir)
  if d.dataset in ("image_folder", "imagenet2012") and not config.model.keras_weights:
    raise ValueError(f"data.dataset={d.dataset} needs model.keras_weights (a model trained on "
                     "those classes); the model trained here learns the study's own dataset")
  if d.labels_file and not os.path.isfile(d.labels_file):
    raise ValueError(f"data.labels_file {d.labels_file} does not exist")
  if config.model.keras_weights and not os.path.isfile(config.model.keras_weights):
    raise ValueError(f"model.keras_weights file {config.model.keras_weights} does not exist")
  checks.check_choice(d.split, "data.split", ("train", "test", "val", "validation"))
  for f in ("candidates", "image_size"):
    checks.check_positive(d[f], f"data.{f}", allow_zero=True)
  checks.check_positive(d.num_images, "data.num_images")
  for f in ("num_train", "warmup_steps", "steps"):
    checks.check_positive(config.train[f], f"train.{f}", allow_zero=True)
  for f in ("batch_size", "epochs", "learning_rate"):
    checks.check_positive(config.train[f], f"train.{f}")
  checks.check_positive(config.model.width, "model.width")
  for f in ("ssim_steps", "pgd_steps", "batch_size"):
    checks.check_positive(config.attack[f], f"attack.{f}")
  for f in ("linf_eps", "l2_eps"):
    checks.check_positive(config.attack[f], f"attack.{f}", allow_zero=True)
  for f in ("window", "stride"):
    checks.check_positive(b[f], f"ball.{f}")
  if not 0 < b.eps_structure < 1:
    raise ValueError(f"ball.eps_structure must lie in (0, 1), got {b.eps_structure}")
  if not 0 <= b.eps_luminance < 1:
    raise ValueError(f"ball.eps_luminance must lie in [0, 1) (0 = off), got {b.eps_luminance}")
  size = _image_size(config)
  if b.window > size:
    raise ValueError(f"ball.window ({b.window}) is larger than the images ({size} px)")
  if not 0 < config.cam.top_k <= 1:
    raise ValueError(f"cam.top_k must lie in (0, 1], got {config.cam.top_k}")
  checks.check_positive(config.report.bootstrap, "report.bootstrap")
  checks.check_positive(config.report.figure_images, "report.figure_images")
  if d.candidates and d.candidates < d.num_images:
    raise ValueError(f"data.candidates ({d.candidates}) must be >= data.num_images "
                     f"({d.num_images})")
  attacks.ball_of(config)  # the quality ball's own checks
  if config.cam.layer and not config.model.keras_weights:  # checked without training
    module = models.get_model("mobilenet_v2", num_classes=10, width=config.model.width)
    x = jax.ShapeDtypeStruct((1, size, size, 3), np.float32)
    variables = jax.eval_shape(lambda k, z: module.init(k, z, train=False), jax.random.key(0), x)
    taps, _ = cam.model_info(module, variables, x)
    cam.resolve_layer(list(taps), config.cam.layer)


def _source(config: Any, seed: int):
  d = config.data
  kw = {"labels_file": d.labels_file} if d.dataset == "image_folder" and d.labels_file else {}
  kw.update(data_config.options(d))
  return common.load_split(d.dataset, d.split, data_dir=d.data_dir or None,
                           image_size=d.image_size or None, seed=seed, **kw)


def run_seed(config: Any, workdir: str, seed: int) -> dict:
  """One seed of the study in ``workdir``: per-image arrays and facts (see ``run``)."""
  module, variables, model_info = model.get_model(config, workdir, seed)
  logits_fn = train.make_logits_fn(module.apply, variables)
  src = _source(config, seed)
  sel = attacks.select(config, workdir, logits_fn, src, int(module.num_classes), seed)
  arrays = attacks.gather(src, sel["indices"])
  x, mask = arrays["image"], arrays["mask"]
  y = np.asarray(sel["labels"], np.int32)
  layer = model.cam_layer(module, variables, x, config.cam.layer)
  adv = attacks.run_attacks(config, workdir, logits_fn, x, y, seed)
  bs = config.attack.batch_size
  cam_maps = agreement.cams(module, variables, x, y, layer=layer, batch_size=bs)
  has_masks = bool(getattr(src.info, "has_masks", False))
  region = mask if has_masks else None
  per_attack, maps = {}, {}
  for name in ATTACKS:
    a = adv[name]
    maps[name] = agreement.perturbation_maps(x, a["x_adv"], batch_size=bs)
    per_attack[name] = agreement.per_image(maps[name], cam_maps, a["success"], region,
                                           top_k=config.cam.top_k)
  violation = agreement.ball_violation(attacks.ball_of(config), x, adv["ssim"]["x_adv"],
                                       batch_size=bs)
  cam_mask = agreement.cam_vs_mask(cam_maps, region, top_k=config.cam.top_k) if has_masks else {}
  return {"seed": seed, "model": {**model_info, "num_classes": int(module.num_classes),
                                  "cam_layer": layer},
          "selection": sel, "has_masks": has_masks, "x": x, "y": y, "adv": adv, "maps": maps,
          "cams": cam_maps, "per_attack": per_attack, "violation": violation,
          "cam_mask": cam_mask, "logits_fn": logits_fn}


def check_inputs(config: Any) -> None:
  """Opens the data and the weights and checks what they decide, before the workdir is locked:
  the Keras weights load, the data is prepared, the images fit the quality ball's window and
  the model, and the model trained here has enough training images for its batch size.

  The sources of the first seed are opened (for the built-in data this renders them once; the
  run reuses them); the other seeds read the same prepared data.

  Raises:
    ValueError: naming the file or the field.
  """
  d, seed = config.data, seeds_of(config)[0]
  common.check_prepared(d, (d.split,) if config.model.keras_weights else ("train", d.split))
  if config.model.keras_weights:
    models.load_keras_weights("mobilenet_v2", config.model.keras_weights,
                              width=config.model.width)
  src = _source(config, seed)
  if not len(src):
    raise ValueError(f"data.split {d.split!r} of {d.dataset} holds no images"
                     + (f" (data.data_dir {d.data_dir})" if d.data_dir else ""))
  size = int(src[0]["image"].shape[0])
  if config.ball.window > size:
    raise ValueError(f"ball.window ({config.ball.window}) is larger than the images ({size} px)")
  if not config.model.keras_weights:
    t = config.train
    src = common.load_split(d.dataset, "train", data_dir=d.data_dir or None,
                            image_size=d.image_size or None, num_examples=t.num_train,
                            seed=seed, **data_config.options(d))
    n = len(src) if d.dataset == "synthetic_signs" else min(t.num_train or len(src), len(src))
    tc = model.train_config(config, seed)
    try:
      train.total_steps(tc, n)
    except ValueError as e:
      raise ValueError(f"train.batch_size: {e}") from None
    image_shape = tuple(src[0]["image"].shape)
    train.build(tc, num_classes=src.info.num_classes, image_shape=image_shape, total=1,
                abstract=True)  # the model's own size checks, nothing computed


def run(config: Any, workdir: str) -> dict:
  """Runs (or resumes) the study in ``workdir``; returns the ``results.json`` dict."""
  validate(config)
  check_inputs(config)
  io.lock_config(workdir, config)
  io.log_event(workdir, "start")
  seeds = [int(s) for s in seeds_of(config)]
  runs = [run_seed(config, os.path.join(workdir, f"seed_{s}"), s) for s in seeds]
  boot = dict(resamples=config.report.bootstrap, seed=seeds[0])
  pooled_values = {n: {k: np.concatenate([r["per_attack"][n][k] for r in runs])
                       for k in runs[0]["per_attack"][n]} for n in ATTACKS}
  pooled = {n: report.stats(v, **boot) for n, v in pooled_values.items()}
  per_seed = [{n: report.stats(r["per_attack"][n], resamples=config.report.bootstrap, seed=s)
               for n in ATTACKS} for r, s in zip(runs, seeds)]
  has_masks = runs[0]["has_masks"]
  cam_mask = {k: common.bootstrap_mean(np.concatenate([r["cam_mask"][k] for r in runs]), **boot)
              for k in runs[0]["cam_mask"]}
  attack_stats = {}
  for name in ATTACKS:
    succ = np.concatenate([r["adv"][name]["success"] for r in runs])
    linf = np.concatenate([r["adv"][name]["linf"] for r in runs])
    l2 = np.concatenate([r["adv"][name]["l2"] for r in runs])
    ssim = np.concatenate([r["maps"][name]["ssim"] for r in runs])
    st = {"n": int(succ.size), "successes": int(succ.sum()), "success_rate": float(succ.mean()),
          "linf_mean": float(linf.mean()), "linf_median": float(np.median(linf)),
          "l2_mean": float(l2.mean()), "l2_median": float(np.median(l2)),
          "ssim_mean": float(ssim.mean()), "ssim_min": float(ssim.min()),
          "seconds": float(sum(r["adv"][name]["facts"]["seconds"] for r in runs)),
          "facts": runs[0]["adv"][name]["facts"],
          "per_seed_success": [float(r["adv"][name]["success"].mean()) for r in runs]}
    diag = [r["adv"][name]["diagnostics"] for r in runs if "diagnostics" in r["adv"][name]]
    if diag:
      st["diagnostics"] = {str(r["seed"]): d for r, d in zip(runs, diag)}
      st["diagnostics_summary"] = "; ".join(
          f"seed {r['seed']}: {d['summary']}" for r, d in zip(runs, diag))
    if name == "ssim":
      st["ball_violation_max"] = float(max(np.max(r["violation"]) for r in runs))
    attack_stats[name] = st
  figures = _figures(config, workdir, runs[0])
  attack_rows = [report.attack_row(n, attack_stats[n], config) for n in ATTACKS]
  agree_rows = report.agreement_rows(pooled, top_k=config.cam.top_k, has_masks=has_masks)
  rep_rows = report.replication_rows(per_seed, seeds)
  tables = {"attacks": {"columns": list(attack_rows[0]), "rows": attack_rows},
            "agreement": {"columns": list(agree_rows[0]), "rows": agree_rows},
            "replication": {"columns": list(rep_rows[0]), "rows": rep_rows}}
  for name, t in tables.items():
    io.write_table(os.path.join(workdir, name), t["rows"], t["columns"])
  answer = report.answer_lines(pooled, per_seed, seeds, attack_stats, cam_mask,
                               has_masks=has_masks)
  first = runs[0]
  results = {
      "study": "perceptual_cam", "seeds": seeds,
      "model": first["model"],
      "models": {str(r["seed"]): r["model"] for r in runs},
      "data": {"dataset": config.data.dataset, "split": config.data.split,
               "num_images": int(len(first["y"])), "image_size": int(first["x"].shape[1]),
               "has_masks": has_masks, "label_source": first["selection"]["label_source"],
               "candidate_accuracy": float(np.mean([r["selection"]["candidate_accuracy"]
                                                    for r in runs])),
               "selection": {str(r["seed"]): r["selection"] for r in runs}},
      "ball": first["adv"]["ssim"]["facts"]["ball"],
      "attacks": attack_stats, "agreement": pooled, "agreement_per_seed":
          {str(s): p for s, p in zip(seeds, per_seed)},
      "cam_vs_mask": cam_mask, "tables": tables, "figures": figures, "answer": answer,
  }
  io.write_json(os.path.join(workdir, "results.json"), results)
  with io.atomic_open(os.path.join(workdir, "summary.md")) as f:
    f.write(report.summary_markdown(config, results))
  io.log_event(workdir, "done")
  return results


def _figures(config: Any, workdir: str, r: dict) -> dict[str, str]:
  figures = {}
  os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
  x, y = r["x"], r["y"]
  k = min(config.report.figure_images, len(y))
  for name in ATTACKS:
    path = os.path.join(workdir, "figures", f"{name}.png")
    pred = attacks.predict(r["logits_fn"], r["adv"][name]["x_adv"][:k], k)
    titles = [f"{report.ATTACK_LABELS[name]}: {int(a)} -> {int(b)}" for a, b in zip(y[:k], pred)]
    cam.plot_maps(x[:k], r["cams"][CAM_METHODS[0]][:k],
                  perturbation_maps=r["maps"][name]["abs_d"][:k],
                  dissimilarity_maps=r["maps"][name]["one_minus_ssim"][:k], path=path,
                  titles=titles, max_images=k)
    figures[name] = os.path.relpath(path, workdir)
  return figures
