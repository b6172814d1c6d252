r"""The perceptual paper's study: are SSIM-constrained perturbations semantically explainable?

For correctly classified images, runs the SSIM-constrained attack (inside the perceptual quality
ball, DESIGN.md) and Linf / L2 PGD, reports success rates, norms and mean standard SSIM, computes
Grad-CAM++ and Grad-CAM on the clean images, and measures how each perturbation map (|d| per
pixel and the 1 - SSIM map) agrees with the CAMs and, where the data has them, with the
foreground masks (Pearson, Spearman, top-k IoU, energy inside the mask and its ratio to chance,
ROC-AUC), with bootstrap 95% confidence intervals. Writes into ``--workdir``:

- ``config.json``, ``metrics.jsonl``; ``model/`` (the model trained here, when no Keras weights)
- ``attacks.md/.csv``    success rate, Linf / L2 norms, mean standard SSIM, seconds per attack
- ``agreement.md/.csv``  map agreement per attack and map kind, with CIs
- ``figures/<attack>.png``: image | CAM | |perturbation| | 1 - SSIM rows
- ``results.json``       every number above; ``summary.md`` with the answer the numbers give
- ``stages/``            finished stages (selection, adversarial images): a rerun skips them

Usage::

  python -m experiments.perceptual_cam --workdir=runs/perceptual          # synthetic signs
  python -m experiments.perceptual_cam --workdir=runs/perceptual --quick
  python -m experiments.perceptual_cam --workdir=runs/imagenet --dataset=image_folder \
      --data_dir=/data/imagenet_val --labels_file=labels.txt \
      --keras_weights=mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.configs import perceptual_cam as cfgs
from percadv_jax import attacks, cam, io, models, perceptual, train

ATTACK_LABELS = {"ssim": "SSIM quality ball", "linf": "Linf PGD", "l2": "L2 PGD"}
MAP_LABELS = {"abs_d": "abs(d)", "one_minus_ssim": "1 - SSIM map"}


def validate(config: cfgs.PerceptualConfig) -> None:
  from percadv_jax import checks
  checks.check_choice(config.dataset, "dataset", set(common.DATASETS) | {"image_folder"})
  if config.dataset == "image_folder" and not config.keras_weights:
    raise ValueError("--dataset=image_folder needs --keras_weights (a model trained on those "
                     "classes); the model trained here learns the synthetic signs")
  if config.dataset == "image_folder" and not config.data_dir:
    raise ValueError("--dataset=image_folder needs --data_dir (the folder's root)")
  if config.keras_weights and not os.path.isfile(config.keras_weights):
    raise ValueError(f"--keras_weights file {config.keras_weights} does not exist")
  for f in ("num_train", "candidates", "warmup_steps", "linf_eps", "l2_eps"):
    checks.check_positive(getattr(config, f), f, allow_zero=True)
  for f in ("width", "batch_size", "epochs", "learning_rate", "num_images", "ball_window",
            "ball_stride", "ssim_steps", "pgd_steps", "bootstrap", "batch_size_attack",
            "figure_images"):
    checks.check_positive(getattr(config, f), f)
  if not 0 < config.eps_structure < 1:
    raise ValueError(f"eps_structure must lie in (0, 1), got {config.eps_structure}")
  if not 0 <= config.eps_luminance < 1:
    raise ValueError(f"eps_luminance must lie in [0, 1) (0 = off), got {config.eps_luminance}")
  if not 0 < config.top_k <= 1:
    raise ValueError(f"top_k must lie in (0, 1], got {config.top_k}")
  if config.candidates and config.candidates < config.num_images:
    raise ValueError(f"candidates ({config.candidates}) must be >= num_images "
                     f"({config.num_images})")


def ball_of(config: cfgs.PerceptualConfig) -> perceptual.QualityBall:
  return perceptual.QualityBall(window=config.ball_window, stride=config.ball_stride,
                                eps_structure=config.eps_structure,
                                eps_luminance=config.eps_luminance or None)


# ----------------------------------------------------------------------------- stages

def _model(config: cfgs.PerceptualConfig, workdir: str):
  """(module, variables, info dict) from Keras weights or trained here on the train split."""
  if config.keras_weights:
    module, variables = models.load_keras_weights("mobilenet_v2", config.keras_weights)
    return module, variables, {"source": f"keras weights {config.keras_weights}"}
  src = common.load_split(config.dataset, "train", data_dir=config.data_dir,
                          image_size=config.image_size, num_examples=config.num_train,
                          seed=config.seed)
  data = (train.ArrayData(common.subset_arrays(src, config.num_train, seed=config.seed))
          if config.num_train and config.dataset != "synthetic_signs" else train.ArrayData(src))
  tc = train.TrainConfig(
      model="mobilenet_v2", model_kwargs={"width": config.width},
      batch_size=config.batch_size, epochs=config.epochs, seed=config.seed,
      optimizer=train.OptimizerConfig(name="adam", learning_rate=config.learning_rate,
                                      schedule="cosine", warmup_steps=config.warmup_steps),
      checkpoint_every=200, log_every=20, bn_recalibration_batches=20)
  with common.Timer() as t:
    state = train.fit(tc, os.path.join(workdir, "model"), data,
                      num_classes=src.info.num_classes, desc="mobilenet_v2")
  common.log(workdir, "model", seconds=t.seconds, steps=int(state.step))
  module = models.get_model("mobilenet_v2", num_classes=src.info.num_classes, width=config.width)
  return module, state.variables(), {
      "source": f"trained here: MobileNetV2 width {config.width}, {len(data)} "
                f"{config.dataset} training images, {int(state.step)} steps"}


def _batched(fn, arrays: Sequence[np.ndarray], batch: int) -> np.ndarray:
  """Applies ``fn(*batch_arrays)`` over fixed-size batches (the last one padded)."""
  n = len(arrays[0])
  outs = []
  for start in range(0, n, batch):
    idx = np.arange(start, start + batch) % n
    real = min(batch, n - start)
    out = fn(*[a[idx] for a in arrays])
    outs.append(np.asarray(jax.device_get(out))[:real])
  return np.concatenate(outs)


def _select(config, workdir, logits_fn, src, num_classes) -> dict:
  """Indices and labels of the first ``num_images`` correctly classified candidates."""
  def compute():
    n = min(config.candidates or len(src), len(src))
    arrays = common.subset_arrays(src, n, seed=config.seed + 2)
    pred = _batched(lambda x: jnp.argmax(logits_fn(x), -1), [arrays["image"]],
                    config.batch_size_attack)
    label_source = "data" if src.info.num_classes == num_classes else "prediction"
    labels = arrays["label"] if label_source == "data" else pred
    correct = np.nonzero(pred == labels)[0]
    chosen = correct[:config.num_images]
    if len(chosen) == 0:
      raise RuntimeError("the model classifies none of the candidate images correctly")
    all_idx = (np.arange(len(src)) if n >= len(src) else
               np.sort(np.random.default_rng(config.seed + 2).choice(len(src), n, replace=False)))
    return {"indices": all_idx[chosen].tolist(), "labels": labels[chosen].astype(int).tolist(),
            "label_source": label_source, "candidates": int(n),
            "candidate_accuracy": float(np.mean(pred == labels))}
  return common.cached(os.path.join(workdir, "stages", "selection.json"), compute)


def _attack_stage(workdir: str, name: str, compute) -> tuple[np.ndarray, dict]:
  """Cached adversarial images (npz, no pickle) and their run facts (json)."""
  npz = os.path.join(workdir, "stages", f"adv_{name}.npz")
  meta = os.path.join(workdir, "stages", f"adv_{name}.json")
  if os.path.exists(npz) and os.path.exists(meta):
    with np.load(npz, allow_pickle=False) as z:
      return z["x_adv"], io.read_json(meta)
  x_adv, facts = compute()
  with io.atomic_open(npz, "wb") as f:
    np.savez(f, x_adv=np.asarray(x_adv, np.float32))
  io.write_json(meta, facts)
  return np.asarray(x_adv, np.float32), io.read_json(meta)


def _norms(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  flat = d.reshape(len(d), -1)
  return np.abs(flat).max(axis=1), np.sqrt((flat ** 2).sum(axis=1))


def _run_attacks(config, workdir, logits_fn, x, y) -> dict[str, tuple[np.ndarray, dict]]:
  ball = ball_of(config)
  key = jax.random.PRNGKey(config.seed + 11)
  bs = config.batch_size_attack
  out = {}

  def ssim_fn(xb, yb):
    return perceptual.ssim_attack(logits_fn, xb, yb, ball=ball, steps=config.ssim_steps)

  def run_ssim():
    with common.Timer() as t:
      x_adv = _batched(ssim_fn, [x, y], bs)
    return x_adv, {"seconds": t.seconds, "ball": dataclasses.asdict(ball),
                   "steps": config.ssim_steps}
  out["ssim"] = _attack_stage(workdir, "ssim", run_ssim)
  common.log(workdir, "attack", attack="ssim", seconds=out["ssim"][1]["seconds"])
  linf_ssim, l2_ssim = _norms(out["ssim"][0] - x)
  radii = {"linf": config.linf_eps or float(np.median(linf_ssim)),
           "l2": config.l2_eps or float(np.median(l2_ssim))}
  for norm in ("linf", "l2"):
    eps = max(radii[norm], 1e-6)
    step = 2.5 * eps / config.pgd_steps

    def pgd_fn(xb, yb, kb, norm=norm, eps=eps, step=step):
      return attacks.pgd(logits_fn, xb, yb, key=kb, eps=eps, step_size=step,
                         steps=config.pgd_steps, norm=norm)

    def run_pgd(norm=norm, eps=eps, pgd_fn=pgd_fn):
      keys = np.asarray(jax.random.split(jax.random.fold_in(key, 1 if norm == "linf" else 2),
                                         len(x)))
      with common.Timer() as t:
        x_adv = _batched(lambda xb, yb, kb: pgd_fn(xb, yb, jnp.asarray(kb)), [x, y, keys], bs)
      return x_adv, {"seconds": t.seconds, "eps": eps, "steps": config.pgd_steps,
                     "eps_source": ("flag" if (config.linf_eps if norm == "linf"
                                               else config.l2_eps)
                                    else "median norm of the SSIM attack")}
    out[norm] = _attack_stage(workdir, norm, run_pgd)
    common.log(workdir, "attack", attack=norm, seconds=out[norm][1]["seconds"])
  return out


# ----------------------------------------------------------------------------- run


MIN_CAM_SIDE = 4


def _default_cam_layer(module, variables, x) -> str:
  """The model's ``cam_layer``, or the deepest tap of at least 4x4 where that one is smaller.

  At small inputs the usual CAM layer collapses (MobileNetV2's ``out_relu`` is 1x1 at 32 px),
  and a CAM of a 1x1 map is constant: every correlation with it is undefined.
  """
  taps, _ = cam.model_info(module, variables, x[:1])
  name = cam.resolve_layer(list(taps), module.cam_layer)
  if min(taps[name].shape[1:3]) >= MIN_CAM_SIDE:
    return name
  big = [n for n, t in taps.items() if len(t.shape) == 4 and min(t.shape[1:3]) >= MIN_CAM_SIDE]
  return big[-1] if big else name

def run(config: cfgs.PerceptualConfig, workdir: str) -> dict:
  """Runs (or resumes) the study in ``workdir``; returns the ``results.json`` dict."""
  validate(config)
  common.prepare_workdir(workdir, config)
  common.log(workdir, "start")
  module, variables, model_info = _model(config, workdir)
  num_classes = int(module.num_classes)
  logits_fn = jax.jit(lambda z: module.apply(variables, z, train=False))
  extra = {}
  if config.dataset == "image_folder":
    extra = {"labels_file": config.labels_file} if config.labels_file else {}
    src = common.load_split("image_folder", config.split, data_dir=config.data_dir,
                            image_size=config.image_size, **extra)
  else:
    src = common.load_split(config.dataset, config.split, data_dir=config.data_dir,
                            image_size=config.image_size, seed=config.seed)
  sel = _select(config, workdir, logits_fn, src, num_classes)
  arrays = _gather(src, sel["indices"])
  x, mask = arrays["image"], arrays["mask"]
  y = np.asarray(sel["labels"], np.int32)
  has_masks = bool(getattr(src.info, "has_masks", False))
  adv = _run_attacks(config, workdir, logits_fn, x, y)

  # CAMs on the clean images, for the true (or predicted) class.
  layer = config.cam_layer or _default_cam_layer(module, variables, x)
  cams = {}
  for method in cfgs.CAM_METHODS:
    fn = getattr(cam, method)
    cams[method] = _batched(lambda xb, yb: fn(module, variables, xb, layer=layer, target=yb),
                            [x, y], config.batch_size_attack)
  used_layer = layer

  attack_rows, attack_stats, maps = [], {}, {}
  ssim_fn = jax.jit(lambda a, b: perceptual.ssim(a, b))
  ssim_map_fn = jax.jit(lambda a, b: perceptual.ssim(a, b, return_map=True))
  for name, (x_adv, facts) in adv.items():
    d = x_adv - x
    pred = _batched(lambda z: jnp.argmax(logits_fn(z), -1), [x_adv], config.batch_size_attack)
    success = pred != y
    linf, l2 = _norms(d)
    s = _batched(ssim_fn, [x, x_adv], config.batch_size_attack)
    smap = _batched(ssim_map_fn, [x, x_adv], config.batch_size_attack)
    maps[name] = {
        "abs_d": np.asarray(cam.perturbation_magnitude(d)),
        "one_minus_ssim": np.asarray(cam.dissimilarity_map(smap, size=x.shape[1:3])),
    }
    st = {"success_rate": float(success.mean()), "linf_mean": float(linf.mean()),
          "linf_median": float(np.median(linf)), "l2_mean": float(l2.mean()),
          "l2_median": float(np.median(l2)), "ssim_mean": float(s.mean()),
          "ssim_min": float(s.min()), "seconds": float(facts["seconds"]), "facts": facts,
          "n": int(len(y))}
    if name == "ssim":
      ball = ball_of(config)
      st["ball_violation_max"] = float(np.max(_batched(
          jax.jit(lambda a, b: ball.violation(a, b - a)), [x, x_adv], config.batch_size_attack)))
    attack_stats[name] = st
    attack_rows.append({
        "attack": ATTACK_LABELS[name],
        "radius": ("ball w=%d s=%d e1=%g e2=%g" % (config.ball_window, config.ball_stride,
                                                   config.eps_luminance, config.eps_structure)
                   if name == "ssim" else f"eps={facts['eps']:.4g} ({name})"),
        "success (%)": common.pct(st["success_rate"]),
        "Linf mean": round(st["linf_mean"], 4), "L2 mean": round(st["l2_mean"], 4),
        "SSIM mean": round(st["ssim_mean"], 4), "seconds": round(st["seconds"], 1)})

  # Agreement of each perturbation map with each CAM and with the foreground mask.
  region = mask if has_masks else None
  agreement: dict[str, Any] = {}
  boot = lambda v, k: common.bootstrap_mean(v, resamples=config.bootstrap,  # noqa: E731
                                             seed=config.seed + k)
  for name in adv:
    for kind in cfgs.MAP_KINDS:
      entry = {}
      for method in cfgs.CAM_METHODS:
        a = cam.agreement(maps[name][kind], cams[method],
                          region=region if method == cfgs.CAM_METHODS[0] else None,
                          top_k=config.top_k)
        for metric in ("pearson", "spearman", "top_k_iou"):
          entry[f"{method}_{metric}"] = boot(np.asarray(a[metric]), 1)
        if region is not None and method == cfgs.CAM_METHODS[0]:
          for metric in ("perturbation_energy_ratio", "perturbation_auc",
                         "perturbation_energy_in_region"):
            entry[f"mask_{metric.replace('perturbation_', '')}"] = boot(np.asarray(a[metric]), 2)
      agreement[f"{name}/{kind}"] = entry
  cam_vs_mask = {}
  if region is not None:
    for method in cfgs.CAM_METHODS:
      a = cam.agreement(cams[method], None, region=region, top_k=config.top_k)
      cam_vs_mask[method] = {"energy_ratio": boot(np.asarray(a["perturbation_energy_ratio"]), 3),
                             "auc": boot(np.asarray(a["perturbation_auc"]), 3)}

  agree_rows = []
  for key_, entry in agreement.items():
    name, kind = key_.split("/")
    row = {"attack": ATTACK_LABELS[name], "map": MAP_LABELS[kind],
           "Pearson vs Grad-CAM++": common.fmt_ci(entry["grad_cam_pp_pearson"]),
           "Spearman vs Grad-CAM++": common.fmt_ci(entry["grad_cam_pp_spearman"]),
           f"top-{int(config.top_k * 100)}% IoU vs Grad-CAM++":
               common.fmt_ci(entry["grad_cam_pp_top_k_iou"]),
           "Pearson vs Grad-CAM": common.fmt_ci(entry["grad_cam_pearson"])}
    if region is not None:
      row["energy in mask / chance"] = common.fmt_ci(entry["mask_energy_ratio"])
      row["AUC vs mask"] = common.fmt_ci(entry["mask_auc"])
    agree_rows.append(row)

  figures = {}
  os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
  k = min(config.figure_images, len(y))
  for name, (x_adv, _) in adv.items():
    path = os.path.join(workdir, "figures", f"{name}.png")
    pred = _batched(lambda z: jnp.argmax(logits_fn(z), -1), [x_adv[:k]], k)
    titles = [f"{ATTACK_LABELS[name]}: {int(a)} -> {int(b)}" for a, b in zip(y[:k], pred)]
    cam.plot_maps(x[:k], cams["grad_cam_pp"][:k], maps[name]["abs_d"][:k],
                  maps[name]["one_minus_ssim"][:k], path=path, titles=titles, max_images=k)
    figures[name] = os.path.relpath(path, workdir)

  attack_cols = list(attack_rows[0])
  agree_cols = list(agree_rows[0])
  io.write_table(os.path.join(workdir, "attacks"), attack_rows, attack_cols)
  io.write_table(os.path.join(workdir, "agreement"), agree_rows, agree_cols)
  answer = answer_lines(agreement, cam_vs_mask, attack_stats, has_masks=region is not None)
  results = {
      "study": "perceptual_cam",
      "model": {**model_info, "num_classes": num_classes, "cam_layer": used_layer},
      "data": {"dataset": config.dataset, "split": config.split, "num_images": int(len(y)),
               "image_size": int(x.shape[1]), "has_masks": has_masks, **sel,
               "indices": sel["indices"]},
      "ball": dataclasses.asdict(ball_of(config)),
      "attacks": attack_stats, "agreement": agreement, "cam_vs_mask": cam_vs_mask,
      "tables": {"attacks": {"columns": attack_cols, "rows": attack_rows},
                 "agreement": {"columns": agree_cols, "rows": agree_rows}},
      "figures": figures, "answer": answer,
  }
  io.write_json(os.path.join(workdir, "results.json"), results)
  with io.atomic_open(os.path.join(workdir, "summary.md")) as f:
    f.write(summary_markdown(config, results))
  common.log(workdir, "done")
  return results


def _gather(src, indices) -> dict:
  from percadv_jax import data
  return data.to_arrays(src, np.asarray(indices, np.int64))


def _above(a: dict, b: dict) -> str:
  """"higher"/"lower"/"indistinguishable"/"undefined" comparing two bootstrap CIs."""
  if not (np.isfinite(a["mean"]) and np.isfinite(b["mean"])):
    return "undefined"
  if a["lo"] > b["hi"]:
    return "higher"
  if a["hi"] < b["lo"]:
    return "lower"
  return "indistinguishable"


_VS = {"higher": "higher than", "lower": "lower than", "indistinguishable": "indistinguishable from",
       "undefined": "not comparable with"}


def answer_lines(agreement: dict, cam_vs_mask: dict, stats: dict, *, has_masks: bool
                 ) -> list[str]:
  """The answer to the paper's question as the numbers give it (95% bootstrap CIs)."""
  out = []
  for kind in cfgs.MAP_KINDS:
    s = agreement[f"ssim/{kind}"]["grad_cam_pp_pearson"]
    sign = ("undefined (constant maps) for" if not np.isfinite(s["mean"]) else
            "positively" if s["lo"] > 0 else "negatively" if s["hi"] < 0 else "not measurably")
    line = (f"{MAP_LABELS[kind]} of the SSIM-constrained perturbations is {sign} correlated "
            f"with Grad-CAM++ (Pearson {common.fmt_ci(s)})")
    comps = []
    for other in ("linf", "l2"):
      o = agreement[f"{other}/{kind}"]["grad_cam_pp_pearson"]
      comps.append(f"{_VS[_above(s, o)]} {ATTACK_LABELS[other]} ({common.fmt_ci(o)})")
    out.append(line + "; " + ", ".join(comps) + ".")
  if has_masks:
    for kind in cfgs.MAP_KINDS:
      s = agreement[f"ssim/{kind}"]["mask_energy_ratio"]
      where = ("is undefined" if not np.isfinite(s["mean"]) else
               "concentrates on the object" if s["lo"] > 1 else
               "avoids the object (lands on the background)" if s["hi"] < 1 else
               "is spread like chance over object and background")
      comps = [f"{ATTACK_LABELS[o]} {common.fmt_ci(agreement[f'{o}/{kind}']['mask_energy_ratio'])}"
               for o in ("linf", "l2")]
      out.append(f"Measured against the foreground mask, the SSIM attack's {MAP_LABELS[kind]} "
                 f"{where}: energy in the mask / chance {common.fmt_ci(s)} (1 = chance; "
                 + ", ".join(comps) + ").")
    g = cam_vs_mask.get("grad_cam_pp")
    if g:
      out.append(f"Grad-CAM++ itself puts {common.fmt_ci(g['energy_ratio'])} times chance of its "
                 "mass on the object (the CAM is a sensible reference only if this is > 1).")
  s = stats["ssim"]
  out.append(f"The SSIM attack fooled the model on {100 * s['success_rate']:.1f}% of the images "
             f"at mean standard SSIM {s['ssim_mean']:.3f} (Linf PGD "
             f"{100 * stats['linf']['success_rate']:.1f}% at SSIM {stats['linf']['ssim_mean']:.3f},"
             f" L2 PGD {100 * stats['l2']['success_rate']:.1f}% at SSIM "
             f"{stats['l2']['ssim_mean']:.3f}, radii matched as configured).")
  verdict_kind = agreement["ssim/abs_d"]["grad_cam_pp_pearson"]
  better = all(_above(verdict_kind, agreement[f"{o}/abs_d"]["grad_cam_pp_pearson"]) == "higher"
               for o in ("linf", "l2"))
  if better and verdict_kind["lo"] > 0:
    out.insert(0, "Answer: yes — on this model and data the SSIM-constrained perturbations "
                  "follow the CAM more closely than Lp PGD perturbations of the same size.")
  elif verdict_kind["hi"] <= 0 or not any(
      _above(verdict_kind, agreement[f"{o}/abs_d"]["grad_cam_pp_pearson"]) == "higher"
      for o in ("linf", "l2")):
    out.insert(0, "Answer: no — on this model and data the SSIM-constrained perturbations do "
                  "not follow the CAM more closely than Lp PGD perturbations of the same size.")
  else:
    out.insert(0, "Answer: mixed — the SSIM-constrained perturbations follow the CAM more "
                  "closely than one Lp baseline but not the other.")
  return out


def summary_markdown(config: cfgs.PerceptualConfig, results: dict, prefix: str = "") -> str:
  """The study's Markdown section (figure links relative to ``prefix``)."""
  d, m = results["data"], results["model"]
  attack_md = io.markdown_table(results["tables"]["attacks"]["rows"],
                                results["tables"]["attacks"]["columns"])
  agree_md = io.markdown_table(results["tables"]["agreement"]["rows"],
                               results["tables"]["agreement"]["columns"])
  lines = [
      "## Perceptual perturbations vs class activation maps", "",
      f"Model: {m['source']} (CAM layer `{m['cam_layer']}`). {d['num_images']} correctly "
      f"classified {d['dataset']} {d['split']} images ({d['image_size']} px; labels from "
      f"{d['label_source']}; {100 * d['candidate_accuracy']:.1f}% of {d['candidates']} "
      "candidates correct). Quality ball: "
      f"window {config.ball_window}, stride {config.ball_stride}, e1 = {config.eps_luminance}, "
      f"e2 = {config.eps_structure}; SSIM attack {config.ssim_steps} steps; PGD "
      f"{config.pgd_steps} steps. SSIM is the standard (Gaussian 11x11) SSIM.", "",
      attack_md,
      "Agreement with the clean image's CAM (target = true class) and the foreground mask: "
      "mean over images [95% bootstrap CI].", "", agree_md]
  for name, path in results["figures"].items():
    lines += [f"![{ATTACK_LABELS[name]}]({prefix}{path})", ""]
  lines += ["What the numbers say:", ""] + [f"- {s}" for s in results["answer"]]
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- flags

def _define_flags():
  from absl import flags
  d = cfgs.PerceptualConfig()
  flags.DEFINE_string("workdir", "runs/perceptual_cam", "Output directory (resumable).")
  flags.DEFINE_enum("preset", "default", sorted(cfgs.PRESETS), "Base configuration.")
  flags.DEFINE_bool("quick", False, "Shorthand for --preset=quick.")
  flags.DEFINE_enum("dataset", None, list(common.DATASETS) + ["image_folder"],
                    f"Dataset (default {d.dataset}).")
  flags.DEFINE_string("data_dir", None, "Data directory (image folder root).")
  flags.DEFINE_string("labels_file", None, "image_folder: file of '<file> <label>' lines.")
  flags.DEFINE_integer("image_size", None, "Image side; default: the dataset's.", lower_bound=32)
  flags.DEFINE_string("split", None, f"Split of the studied images (default {d.split}).")
  flags.DEFINE_string("keras_weights", None, "Keras MobileNetV2 weights (.h5/.weights.h5).")
  flags.DEFINE_float("width", None, "MobileNetV2 alpha of the model trained here.",
                     lower_bound=0)
  flags.DEFINE_integer("num_train", None, "Training images (0 = all).", lower_bound=0)
  flags.DEFINE_integer("batch_size", None, "Training batch size.", lower_bound=1)
  flags.DEFINE_integer("epochs", None, "Training epochs.", lower_bound=1)
  flags.DEFINE_float("learning_rate", None, "Adam learning rate.", lower_bound=0)
  flags.DEFINE_integer("warmup_steps", None, "Warm-up steps.", lower_bound=0)
  flags.DEFINE_integer("seed", None, "Seed.")
  flags.DEFINE_integer("num_images", None, "Images studied.", lower_bound=1)
  flags.DEFINE_integer("candidates", None, "Images scanned (0 = all).", lower_bound=0)
  flags.DEFINE_integer("ball_window", None, "Quality-ball window.", lower_bound=2)
  flags.DEFINE_integer("ball_stride", None, "Quality-ball stride.", lower_bound=1)
  flags.DEFINE_float("eps_structure", None, "e2 in (0,1).", lower_bound=0, upper_bound=1)
  flags.DEFINE_float("eps_luminance", None, "e1 in [0,1); 0 = off.", lower_bound=0,
                     upper_bound=1)
  flags.DEFINE_integer("ssim_steps", None, "SSIM attack iterations.", lower_bound=1)
  flags.DEFINE_string("linf_eps", None, "Linf PGD radius (e.g. 4/255); 0 = matched.")
  flags.DEFINE_string("l2_eps", None, "L2 PGD radius; 0 = matched.")
  flags.DEFINE_integer("pgd_steps", None, "PGD iterations.", lower_bound=1)
  flags.DEFINE_string("cam_layer", None, "CAM tap (default: the model's, or the deepest "
                       "tap of at least 4x4 where the model's is smaller).")
  flags.DEFINE_float("top_k", None, "Top-k fraction of the IoU.", lower_bound=0, upper_bound=1)
  flags.DEFINE_integer("bootstrap", None, "Bootstrap resamples.", lower_bound=10)
  flags.DEFINE_integer("batch_size_attack", None, "Images per attack batch.", lower_bound=1)
  flags.DEFINE_integer("figure_images", None, "Rows per figure.", lower_bound=1)

  def ok(v):
    if v is None:
      return True
    try:
      return common.parse_fraction(v) >= 0
    except ValueError:
      return False
  for name in ("linf_eps", "l2_eps"):
    flags.register_validator(name, ok, f"--{name} must be a number >= 0 such as 4/255")


def config_from_flags(fv) -> cfgs.PerceptualConfig:
  base = cfgs.PRESETS["quick" if fv.quick else fv.preset]()
  over = {}
  for f in dataclasses.fields(base):
    if f.name not in fv or fv[f.name].value is None:
      continue
    v = fv[f.name].value
    if f.name in ("linf_eps", "l2_eps"):
      v = common.parse_fraction(v)
    over[f.name] = v
  return dataclasses.replace(base, **over)


def main(argv: Sequence[str]) -> None:
  from absl import flags
  results = common.run_from_flags(argv, config_from_flags=config_from_flags, validate=validate,
                                  run=run)
  for line in results["answer"]:
    print("-", line)
  print(f"results in {os.path.abspath(flags.FLAGS.workdir)}")


if __name__ == "__main__":
  from absl import app
  _define_flags()
  app.run(main)
