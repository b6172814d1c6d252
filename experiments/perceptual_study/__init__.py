"""The perceptual paper's study: do imperceptible perturbations change the regions important for
the classification?

``run(config, workdir)`` (config: ``experiments/configs/perceptual_cam.py``), once per seed in
``workdir/seed_<s>/``: gets the model (``model``: Keras weights or trained here), picks correctly
classified images and runs the SSIM quality-ball attack and Linf / L2 PGD with radii matched to it
(``attacks``), computes Grad-CAM++ / Grad-CAM of the clean images, then

- the paper's question, directly (``agreement.direct``, ``question``): the share of each
  perturbation map's energy (the 1 - SSIM map, as the paper compares, and |d|) inside the CAM's
  top-k% region against k%, and its Spearman correlation with the CAM, each beside its null
  baselines (``sanity``: the CAM of the model randomised layer by layer from the top, smooth
  random maps, another image's CAM) and the CAM's own deletion check;
- the project's addition: the agreement of each map with the CAMs and the foreground masks
  (``agreement.per_image``) and whether the SSIM attack's maps follow the CAM more than Lp PGD's.

Every agreement uses the images each attack fooled. Then it pools the seeds and writes
(``report``, ``question``) into ``workdir``:

- ``config.json``, ``metrics.jsonl``; ``seed_<s>/model/`` (a model trained here) and
  ``seed_<s>/evaluations/`` (finished attacks: a rerun skips them)
- ``attacks.md/.csv``     success (and how many images were fooled), norms, mean standard SSIM
- ``question.md/.csv``    the direct measures with chance, the nulls and the paired differences
- ``question_seeds.md/.csv`` the SSIM attack's direct measures per seed (more than one seed)
- ``cascade.md/.csv``     the cascading randomisation: CAM similarity and the measures per stage
- ``deletion.md/.csv``    the CAMs' deletion curves' areas against a random order
- ``agreement.md/.csv``   map agreement per attack and map, pooled over seeds, with CIs and n
- ``replication.md/.csv`` Pearson vs Grad-CAM++ per seed
- ``lp_comparison.md/.csv`` the direct measures, SSIM attack minus Lp PGD, paired
- ``figures/<attack>.png``: image | CAM | |perturbation| | 1 - SSIM rows (first seed)
- ``checklist.md/.json``  the robustness checklist of each seed's Linf PGD evaluation
  (``checklist``; ``attack.checklist.enabled``), one summary line per seed in ``summary.md``
- ``results.json``        every number above; ``summary.md``: the paper's question and its
  answer first, then the project's addition
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from experiments import common
from experiments.configs import data as data_config
from experiments.configs.perceptual_cam import ATTACKS, CAM_METHODS, CASCADE_STAGES, NULLS
from experiments.perceptual_study import (agreement, attacks, checklist, model, question,
                                          report, sanity)
from percadv_jax import cam, checks, io, models, train

DATASETS = common.DATASETS + ("image_folder", "oxford_iiit_pet", "imagenet2012")

__all__ = ["run", "validate", "check_inputs", "seeds_of", "agreement", "attacks", "checklist",
           "model", "question", "report", "sanity"]


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
  checks.check_bool(config.train.data_parallel, "train.data_parallel")
  checks.check_positive(config.model.width, "model.width")
  for f in ("ssim_steps", "pgd_steps", "batch_size"):
    checks.check_positive(config.attack[f], f"attack.{f}")
  for f in ("linf_eps", "l2_eps"):
    checks.check_positive(config.attack[f], f"attack.{f}", allow_zero=True)
  checklist.options(config)  # attack.checklist.<field>
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
  _validate_sanity(config)
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


def _names(value: Any) -> tuple:
  """A flat tuple from a tuple whose strings may hold comma lists (``--config.<field>=a,b``
  gives ``("a,b",)``), or from one such string."""
  items = (value,) if isinstance(value, str) else tuple(value)
  out = []
  for v in items:
    out += [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else [v]
  return tuple(out)


def _validate_sanity(config: Any) -> None:
  """Checks ``cam.energy_top_k`` and the ``sanity`` fields (normalising comma lists)."""
  fr = _names(config.cam.energy_top_k)
  fr = tuple(float(f) for f in fr)
  if not fr or len(set(fr)) != len(fr) or not all(0 < f <= 1 for f in fr):
    raise ValueError(f"cam.energy_top_k must be distinct fractions in (0, 1], got {fr}")
  config.cam.energy_top_k = fr
  s = config.sanity
  s.nulls, s.cascade = _names(s.nulls), _names(s.cascade)
  for field, allowed in (("nulls", NULLS), ("cascade", CASCADE_STAGES)):
    values = s[field]
    bad = [v for v in values if v not in allowed]
    if bad or len(set(values)) != len(values):
      raise ValueError(f"sanity.{field} must be distinct names from {allowed}, got {values}")
  checks.check_choice(s.null_stage, "sanity.null_stage", CASCADE_STAGES)
  checks.check_float(s.smooth_sigma, "sanity.smooth_sigma", minimum=0.0)
  checks.check_int(s.random_maps, "sanity.random_maps",
                   minimum=1 if "smooth_random" in s.nulls else 0)
  checks.check_int(s.deletion_steps, "sanity.deletion_steps", minimum=0)
  checks.check_choice(s.deletion_baseline, "sanity.deletion_baseline", cam.sanity.BASELINES)


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
  ck = None
  if config.attack.checklist.enabled:
    with common.Timer() as timer:
      ck = checklist.run_seed(config, workdir, logits_fn=logits_fn, x=x, y=y, linf=adv["linf"],
                              seed=seed)
    io.log_event(workdir, "checklist", seconds=timer.seconds, summary=ck["summary"])
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
  with common.Timer() as timer:  # the direct answer and its baselines, timed together
    baselines = _sanity(config, module, variables, x, y, cam_maps, layer, seed)
    direct = {name: agreement.direct(
        maps[name], cam_maps[agreement.DIRECT_CAM], baselines["refs"], adv[name]["success"],
        fractions=config.cam.energy_top_k, nulls=sanity.null_refs(config),
        smooth_sigma=baselines["smooth"]["sigma"] if baselines["smooth"] else 0.0,
        random_maps=config.sanity.random_maps, key=jax.random.key(seed + sanity.SMOOTH_SEED),
        batch_size=bs) for name in ATTACKS}
  io.log_event(workdir, "direct_and_sanity", seconds=timer.seconds)
  baselines["seconds"] = timer.seconds
  return {"seed": seed, "model": {**model_info, "num_classes": int(module.num_classes),
                                  "cam_layer": layer},
          "selection": sel, "has_masks": has_masks, "x": x, "y": y, "adv": adv, "maps": maps,
          "checklist": ck,
          "cams": cam_maps, "per_attack": per_attack, "violation": violation,
          "cam_mask": cam_mask, "logits_fn": logits_fn, "direct": direct,
          "lp": question.lp_differences(direct, config.cam.energy_top_k), **baselines}


def _sanity(config: Any, module: Any, variables: Any, x: np.ndarray, y: np.ndarray,
            cam_maps: dict, layer: str, seed: int) -> dict:
  """The sanity baselines of one seed: the reference maps of ``agreement.direct`` (the
  cascade's CAMs, another image's CAM), the smooth random maps' sigma, the deletion curves."""
  bs = config.attack.batch_size
  primary = cam_maps[agreement.DIRECT_CAM]
  names = sanity.stages(config)
  rnd = (sanity.randomized_cams(module, variables, x, y, primary, layer=layer, names=names,
                                seed=seed, batch_size=bs)
         if names else {"layers": {}, "cams": {}, "similarity": {}})
  refs = {f"cascade:{k}": v for k, v in rnd["cams"].items()}
  if "other_image" in config.sanity.nulls:
    refs["other_image"] = agreement.other_image(primary)
  smooth = None
  if "smooth_random" in config.sanity.nulls:
    side = cam.model_info(module, variables, x[:1])[0][layer].shape[1]
    smooth = sanity.smooth_sigma(config, primary, side, seed)
  deletion = (sanity.deletion(config, module, variables, x, y, primary, seed=seed,
                              batch_size=bs) if config.sanity.deletion_steps else None)
  return {"refs": refs, "cascade": {"layers": rnd["layers"], "similarity": rnd["similarity"]},
          "smooth": smooth, "deletion": deletion}


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
      train.check_batch_split(tc)
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
  direct = _direct_stats(config, runs, seeds)
  tables.update(direct.pop("tables"))
  for name in direct["table_names"]:
    io.write_table(os.path.join(workdir, name), tables[name]["rows"], tables[name]["columns"])
  answer = {"paper": direct.pop("answer"),
            "addition": report.answer_lines(pooled, per_seed, seeds, attack_stats, cam_mask,
                                            has_masks=has_masks) + direct.pop("lp_lines")}
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
      "cam_vs_mask": cam_mask, "tables": tables, "figures": figures,
      "questions": {"paper": question.PAPER_QUESTION, "addition": question.ADDITION_QUESTION},
      "answer": answer, **{k: v for k, v in direct.items() if k != "table_names"},
      "checklist": {str(r["seed"]): r["checklist"] for r in runs if r["checklist"]},
  }
  checklist.write(workdir, results["checklist"])
  io.write_json(os.path.join(workdir, "results.json"), results)
  with io.atomic_open(os.path.join(workdir, "summary.md")) as f:
    f.write(report.summary_markdown(config, results))
  io.log_event(workdir, "done")
  return results


def _pool(runs: list[dict], get, *, resamples: int, seed: int) -> dict:
  """Bootstrap stats of per-image arrays ``get(run) -> {key: [N]}`` pooled over the seeds."""
  parts = [get(r) for r in runs]
  return report.stats({k: np.concatenate([p[k] for p in parts]) for k in parts[0]},
                      resamples=resamples, seed=seed)


def _direct_stats(config: Any, runs: list[dict], seeds: list[int]) -> dict:
  """The paper's question answered directly, its baselines and the Lp comparison on the direct
  measures: pooled and per-seed stats, tables and answer lines (see ``question``)."""
  boot = dict(resamples=config.report.bootstrap, seed=seeds[0])
  pooled = {n: _pool(runs, lambda r: r["direct"][n], **boot) for n in ATTACKS}
  per_seed = [{n: report.stats(r["direct"][n], resamples=config.report.bootstrap, seed=s)
               for n in ATTACKS} for r, s in zip(runs, seeds)]
  lp = {n: _pool(runs, lambda r: r["lp"][n], **boot) for n in ("linf", "l2")}
  similarity = (_pool(runs, lambda r: r["cascade"]["similarity"], **boot)
                if runs[0]["cascade"]["similarity"] else {})
  deletion = per_seed_deletion = None
  if runs[0]["deletion"] is not None:
    deletion = _pool(runs, lambda r: r["deletion"]["per_image"], **boot)
    per_seed_deletion = {str(s): report.stats(r["deletion"]["per_image"],
                                              resamples=config.report.bootstrap, seed=s)
                         for r, s in zip(runs, seeds)}
  num_pixels = int(np.prod(runs[0]["x"].shape[1:3]))
  first = runs[0]
  rows = {"question": question.question_rows(pooled, config, num_pixels),
          "lp_comparison": question.lp_rows(lp, config)}
  if len(seeds) > 1:
    rows["question_seeds"] = question.seed_rows(per_seed, seeds, config)
  if similarity:
    rows["cascade"] = question.cascade_rows(pooled["ssim"], similarity,
                                            first["cascade"]["layers"], config)
  if deletion is not None:
    rows["deletion"] = question.deletion_rows(deletion)
  tables = {k: {"columns": list(v[0]), "rows": v} for k, v in rows.items()}
  return {
      "direct": pooled, "direct_per_seed": {str(s): p for s, p in zip(seeds, per_seed)},
      "lp_comparison": lp,
      "sanity": {
          "nulls": list(config.sanity.nulls), "null_refs": sanity.null_refs(config),
          "cascade": {"stages": list(sanity.stages(config)), "similarity": similarity,
                      "layers": {str(r["seed"]): r["cascade"]["layers"] for r in runs}},
          "smooth": {str(r["seed"]): r["smooth"] for r in runs},
          "deletion": None if deletion is None else {
              "stats": deletion, "per_seed": per_seed_deletion,
              "fraction": first["deletion"]["fraction"],
              "curves": {str(r["seed"]): r["deletion"]["curves"] for r in runs}},
          "faithful": question.faithful(deletion),
          "seconds": float(sum(r["seconds"] for r in runs))},
      "tables": tables, "table_names": list(tables),
      "answer": question.answer_lines(pooled, per_seed, seeds, deletion, similarity,
                                      [r["smooth"] for r in runs], config, num_pixels),
      "lp_lines": question.lp_lines(rows["lp_comparison"])}


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
