"""The perceptual study's tables and answers (pooled over seeds, with replication), and its
summary: the paper's question answered directly (``question``), then the project's addition, the
comparison with Lp PGD of the same size (``answer_lines``, the agreement table)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from experiments import common
from experiments.perceptual_study import checklist
from experiments.configs.perceptual_cam import ATTACKS, MAP_KINDS
from percadv_jax import io

ATTACK_LABELS = {"ssim": "SSIM quality ball", "linf": "Linf PGD", "l2": "L2 PGD"}
MAP_LABELS = {"abs_d": "abs(d)", "one_minus_ssim": "1 - SSIM map"}
PRIMARY = "grad_cam_pp_pearson"


def stats(values: Mapping[str, np.ndarray], *, resamples: int, seed: int) -> dict[str, dict]:
  """``{name: bootstrap_mean(values[name])}`` (NaNs, i.e. failed attacks, left out)."""
  return {k: common.bootstrap_mean(v, resamples=resamples, seed=seed)
          for k, v in values.items()}


def above(a: Mapping[str, float], b: Mapping[str, float]) -> str:
  """"higher" / "lower" / "indistinguishable" / "undefined" comparing two bootstrap CIs."""
  if not (np.isfinite(a["mean"]) and np.isfinite(b["mean"])):
    return "undefined"
  if a["lo"] > b["hi"]:
    return "higher"
  if a["hi"] < b["lo"]:
    return "lower"
  return "indistinguishable"


_VS = {"higher": "higher than", "lower": "lower than", "indistinguishable": "indistinguishable from",
       "undefined": "not comparable with"}


def verdict(agreement: Mapping[str, Mapping[str, dict]], kind: str) -> str:
  """"yes" / "no" / "mixed" / "nothing to compare" for map ``kind`` of the SSIM attack against
  Grad-CAM++, compared with the Lp baselines (95% CIs)."""
  s = agreement["ssim"][f"{kind}/{PRIMARY}"]
  if s["n"] == 0 or not np.isfinite(s["mean"]):
    return "nothing to compare"
  cmp = [above(s, agreement[o][f"{kind}/{PRIMARY}"]) for o in ("linf", "l2")]
  if s["lo"] > 0 and all(c == "higher" for c in cmp):
    return "yes"
  if s["hi"] <= 0 or not any(c == "higher" for c in cmp):
    return "no"
  return "mixed"


_MEANING = {
    "yes": "the SSIM-constrained perturbations follow the CAM more closely than Lp PGD "
           "perturbations of the same size",
    "no": "the SSIM-constrained perturbations do not follow the CAM more closely than Lp PGD "
          "perturbations of the same size",
    "mixed": "the SSIM-constrained perturbations follow the CAM more closely than one Lp "
             "baseline but not the other",
    "nothing to compare": "the SSIM attack fooled the model on none of the images, so there is "
                          "no perturbation to compare with the CAM",
}


def answer_lines(pooled: Mapping[str, Mapping[str, dict]], per_seed: Sequence[Mapping],
                 seeds: Sequence[int], attack_stats: Mapping[str, dict], cam_mask: Mapping,
                 *, has_masks: bool) -> list[str]:
  """The project's addition (not the paper's question): do the SSIM-constrained perturbations
  follow Grad-CAM++ (Pearson) more than Lp PGD of the same size? First from the SSIM map, then
  from |d|; each with whether it replicates across seeds; then the evidence."""
  out = []
  for kind in MAP_KINDS:
    v = verdict(pooled, kind)
    seed_v = [verdict(p, kind) for p in per_seed]
    if len(seeds) > 1:
      rep = ("the same in each of the seeds " + ", ".join(map(str, seeds)) if len(set(seed_v)) == 1
             else "does not replicate across seeds: " + ", ".join(
                 f"seed {s} {x}" for s, x in zip(seeds, seed_v)))
    else:
      rep = f"one seed ({seeds[0]}): replication not tested"
    source = "the 1 - SSIM map" if kind == "one_minus_ssim" else "abs(d)"
    out.append(f"Versus Lp PGD (from {source}, Pearson vs Grad-CAM++): {v} — on this model and "
               f"data {_MEANING[v]} ({rep}).")
  for kind in MAP_KINDS:
    s = pooled["ssim"][f"{kind}/{PRIMARY}"]
    sign = ("undefined for" if not np.isfinite(s["mean"]) else
            "positively" if s["lo"] > 0 else "negatively" if s["hi"] < 0 else "not measurably")
    comps = [f"{_VS[above(s, pooled[o][f'{kind}/{PRIMARY}'])]} {ATTACK_LABELS[o]} "
             f"({common.fmt_ci(pooled[o][f'{kind}/{PRIMARY}'])}, n = "
             f"{pooled[o][f'{kind}/{PRIMARY}']['n']})" for o in ("linf", "l2")]
    out.append(f"The {MAP_LABELS[kind]} of the SSIM-constrained perturbations is {sign} "
               f"correlated with Grad-CAM++ (Pearson {common.fmt_ci(s)}, n = {s['n']} fooled "
               "images); " + ", ".join(comps) + ".")
  if has_masks:
    for kind in MAP_KINDS:
      s = pooled["ssim"][f"{kind}/mask_energy_ratio"]
      where = ("is undefined" if not np.isfinite(s["mean"]) else
               "concentrates on the object" if s["lo"] > 1 else
               "avoids the object (lands on the background)" if s["hi"] < 1 else
               "is spread like chance over object and background")
      comps = [f"{ATTACK_LABELS[o]} {common.fmt_ci(pooled[o][f'{kind}/mask_energy_ratio'])}"
               for o in ("linf", "l2")]
      out.append(f"Measured against the foreground mask, the SSIM attack's {MAP_LABELS[kind]} "
                 f"{where}: energy in the mask / chance {common.fmt_ci(s)} (1 = chance; "
                 + ", ".join(comps) + ").")
    g = cam_mask.get("grad_cam_pp_energy_ratio")
    if g:
      out.append(f"Grad-CAM++ itself puts {common.fmt_ci(g)} times chance of its mass on the "
                 "object (the CAM is a sensible reference only if this is > 1).")
  st = {k: attack_stats[k] for k in ATTACKS}
  out.append(
      f"The SSIM attack fooled the model on {st['ssim']['successes']} of {st['ssim']['n']} "
      f"images ({100 * st['ssim']['success_rate']:.1f}%) at mean standard SSIM "
      f"{st['ssim']['ssim_mean']:.3f} (Linf PGD {st['linf']['successes']}/{st['linf']['n']} at "
      f"SSIM {st['linf']['ssim_mean']:.3f}, L2 PGD {st['l2']['successes']}/{st['l2']['n']} at "
      f"SSIM {st['l2']['ssim_mean']:.3f}, radii matched as configured); the agreement measures "
      "use only the fooled images.")
  if "diagnostics_summary" in st["linf"]:
    out.append(f"Reliability of the Linf PGD evaluation: {st['linf']['diagnostics_summary']}.")
  return out


def attack_row(name: str, st: Mapping[str, Any], config: Any) -> dict:
  b = config.ball
  return {
      "attack": ATTACK_LABELS[name],
      "radius": (f"ball w={b.window} s={b.stride} e1={b.eps_luminance:g} e2={b.eps_structure:g}"
                 if name == "ssim" else f"eps={st['facts']['eps']:.4g} ({name})"),
      "success (%)": common.pct(st["success_rate"]), "fooled": st["successes"],
      "Linf mean": round(st["linf_mean"], 4), "L2 mean": round(st["l2_mean"], 4),
      "SSIM mean": round(st["ssim_mean"], 4), "seconds": round(st["seconds"], 1)}


def agreement_rows(pooled: Mapping[str, Mapping[str, dict]], *, top_k: float,
                   has_masks: bool) -> list[dict]:
  rows = []
  for name in ATTACKS:
    for kind in MAP_KINDS:
      e = pooled[name]
      row = {"attack": ATTACK_LABELS[name], "map": MAP_LABELS[kind],
             "n": e[f"{kind}/{PRIMARY}"]["n"],
             "Pearson vs Grad-CAM++": common.fmt_ci(e[f"{kind}/grad_cam_pp_pearson"]),
             "Spearman vs Grad-CAM++": common.fmt_ci(e[f"{kind}/grad_cam_pp_spearman"]),
             f"top-{int(top_k * 100)}% IoU vs Grad-CAM++":
                 common.fmt_ci(e[f"{kind}/grad_cam_pp_top_k_iou"]),
             "Pearson vs Grad-CAM": common.fmt_ci(e[f"{kind}/grad_cam_pearson"])}
      if has_masks:
        row["energy in mask / chance"] = common.fmt_ci(e[f"{kind}/mask_energy_ratio"])
        row["AUC vs mask"] = common.fmt_ci(e[f"{kind}/mask_auc"])
      rows.append(row)
  return rows


def replication_rows(per_seed: Sequence[Mapping], seeds: Sequence[int]) -> list[dict]:
  """Pearson vs Grad-CAM++ per seed: one row per attack and map."""
  rows = []
  for name in ATTACKS:
    for kind in MAP_KINDS:
      row = {"attack": ATTACK_LABELS[name], "map": MAP_LABELS[kind]}
      for s, p in zip(seeds, per_seed):
        row[f"seed {s}"] = common.fmt_ci(p[name][f"{kind}/{PRIMARY}"])
      rows.append(row)
  return rows


def summary_markdown(config: Any, results: dict, prefix: str = "") -> str:
  """The study's Markdown section (figure links relative to ``prefix``): the setup, the paper's
  question answered directly with its baselines, then the project's addition."""
  d, m = results["data"], results["model"]
  t = results["tables"]
  md = lambda name: io.markdown_table(t[name]["rows"], t[name]["columns"])
  b, a = config.ball, config.attack
  ks = ", ".join(f"{round(100 * f):g}%" for f in config.cam.energy_top_k)
  nulls = ", ".join(results["sanity"]["nulls"]) or "none"
  lines = [
      "## Perceptual perturbations vs class activation maps", "",
      f"Model: {m['source']} (CAM layer `{m['cam_layer']}`). Seeds {results['seeds']}: per "
      f"seed {d['num_images']} correctly classified {d['dataset']} {d['split']} images "
      f"({d['image_size']} px; labels from {d['label_source']}; "
      f"{100 * d['candidate_accuracy']:.1f}% of the candidates correct). Quality ball: window "
      f"{b.window}, stride {b.stride}, e1 = {b.eps_luminance}, e2 = {b.eps_structure}; SSIM "
      f"attack {a.ssim_steps} steps; PGD {a.pgd_steps} steps (step 2.5 eps / steps). SSIM is the "
      "standard (Gaussian 11x11) SSIM.", "", md("attacks")]
  cks = results.get("checklist") or {}
  if cks:
    lines += [f"Robustness checklist of each seed's Linf PGD evaluation (first "
              f"{next(iter(cks.values()))['n']} selected images; items and evidence in "
              f"[checklist.md]({prefix}checklist.md)):", ""]
    lines += [f"- {s}" for s in checklist.notes(cks)] + [""]
  lines += [
      "### The paper's question", "", f"> {results['questions']['paper']}", "",
      "Measured directly on the images each attack fooled (n), pooled over seeds, mean [95% "
      f"bootstrap CI]: the share of the perturbation map's energy inside the top {ks} of "
      "Grad-CAM++ of the clean image (true class; chance = k%) and the Spearman correlation "
      "with it (chance 0). Beside each number its null baselines "
      f"({nulls}) and the paired difference to them; 'positive' = the CIs of the differences to "
      "chance and to every null lie above 0. The quality-ball (SSIM attack) rows answer the "
      "question; the Lp rows are for comparison.", "", md("question")]
  if "question_seeds" in t:
    lines += ["The SSIM attack's direct measures per seed:", "", md("question_seeds")]
  if "cascade" in t:
    lines += ["Cascading model randomisation (layers re-initialised from the top; the SSIM "
              "attack's 1 - SSIM map against the randomised model's Grad-CAM++):", "",
              md("cascade")]
  if "deletion" in t:
    s = config.sanity
    fill = "mean colour" if s.deletion_baseline == "mean" else "blur"
    lines += [f"Grad-CAM++'s own faithfulness: deletion curves ({s.deletion_steps} steps; removed "
              f"pixels set to the image's {fill}), area under the true class's probability and "
              "logit for the CAM's pixel order and a random order (a faithful CAM has the "
              "smaller area), over all selected images:", "", md("deletion")]
  lines += ["What the numbers say:", ""] + [f"- {s}" for s in results["answer"]["paper"]]
  lines += ["", "### The project's addition (not the paper's question)", "",
            f"> {results['questions']['addition']}", "",
            "Agreement with the clean image's CAM (target = true class) and the foreground mask, "
            "over the images each attack fooled (n), pooled over seeds: mean [95% bootstrap CI].",
            "", md("agreement")]
  if len(results["seeds"]) > 1:
    lines += ["Pearson vs Grad-CAM++ per seed:", "", md("replication")]
  lines += ["The direct measures, the SSIM attack minus Lp PGD, paired over the images both "
            "fooled:", "", md("lp_comparison")]
  for name, path in results["figures"].items():
    lines += [f"![{ATTACK_LABELS[name]}]({prefix}{path})", ""]
  lines += ["What the numbers say:", ""] + [f"- {s}" for s in results["answer"]["addition"]]
  return "\n".join(lines) + "\n"
