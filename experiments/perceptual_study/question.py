"""The paper's question answered directly, with its sanity baselines: tables and answer lines.

The paper asks whether imperceptible (quality-ball) perturbations focus on changing the regions
that are important for the classification. The direct measures, for the SSIM attack's 1 - SSIM
map (and |d|) against Grad-CAM++ of the clean image: the share of the map's energy inside the
CAM's top-k% region (chance: k%) and the Spearman correlation (chance: 0). A measure counts as
positive only where the bootstrap CI of its paired difference excludes 0 against chance and
against every null reference (``sanity.nulls``); the answer is "yes" only where every measure is
positive and the CAM itself passes its deletion check. Whether the SSIM attack does so more than
Lp PGD of the same size is the project's addition (``lp_rows``, ``report.answer_lines``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from experiments import common
from experiments.configs.perceptual_cam import ATTACKS, CAM_METHODS, MAP_KINDS
from experiments.perceptual_study import agreement, sanity
from experiments.perceptual_study.report import ATTACK_LABELS, MAP_LABELS

PAPER_QUESTION = ("Do imperceptible adversarial perturbations focus on changing the regions of the "
                  "image that are important for classification?")
ADDITION_QUESTION = ("Do the SSIM-constrained perturbations do so more than Linf / L2 PGD "
                     "perturbations of the same size?")
CAM_LABELS = {"grad_cam_pp": "Grad-CAM++", "grad_cam": "Grad-CAM"}
NULL_LABELS = {"random_model": "randomised model's CAM", "smooth_random": "smooth random maps",
               "other_image": "another image's CAM"}
STAGE_LABELS = {"logits": "the head", "above_cam": "every layer above the CAM layer",
                "all": "every layer"}
FAITHFUL_SCORE = "prob"  # the deletion check reads the true class's probability (RISE)
MIN_IMAGES = 2  # a bootstrap CI of fewer images is no interval: nothing counts as positive


def measure_label(name: str) -> str:
  """The table label of a measure of ``agreement.measure_names``."""
  if name.startswith("energy_top"):
    return f"energy share in CAM top-{name[len('energy_top'):]}%"
  return "Spearman vs CAM"


def _positive(s: Mapping[str, float]) -> bool:
  return bool(s["n"] >= MIN_IMAGES and np.isfinite(s["mean"]) and s["lo"] > 0)


def fmt(s: Mapping[str, float] | None) -> str:
  """``common.fmt_ci``, or "undefined" where no image gave a value."""
  if not s or not np.isfinite(s["mean"]):
    return "undefined"
  return common.fmt_ci(s)


def status(st: Mapping[str, dict], kind: str, measure: str, nulls: Sequence[str]) -> dict:
  """``{"chance": bool, "nulls": {null: bool}, "positive": bool, "n": int}`` of one measure:
  whether the CI of the paired difference to chance and to each null lies above 0 (over at least
  ``MIN_IMAGES`` images)."""
  key = f"{kind}/{measure}"
  out = {"n": st[key]["n"], "chance": _positive(st[f"{key}-chance"]),
         "nulls": {n: _positive(st[f"{key}-{n}"]) for n in nulls if f"{key}-{n}" in st}}
  beats_nulls = len(out["nulls"]) == len(nulls) and all(out["nulls"].values())
  out["positive"] = out["chance"] and beats_nulls
  return out


def faithful(deletion_stats: Mapping[str, dict] | None, method: str = agreement.DIRECT_CAM
             ) -> bool | None:
  """Whether deleting the CAM's top pixels lowers the true class's probability faster than a
  random order (CI of the areas' difference above 0); None without the deletion check."""
  if deletion_stats is None:
    return None
  return _positive(deletion_stats[f"{method}/{FAITHFUL_SCORE}_auc_gain"])


def verdict(st: Mapping[str, dict], kind: str, measures: Sequence[str], nulls: Sequence[str],
            is_faithful: bool | None) -> str:
  """The direct answer for map ``kind`` of the SSIM attack (see the module docstring)."""
  stat = [status(st, kind, m, nulls) for m in measures]
  if all(s["n"] == 0 for s in stat):
    return "nothing to compare"
  if all(s["n"] < MIN_IMAGES for s in stat):
    return "too few images"
  if all(s["positive"] for s in stat):
    return "yes" if is_faithful is not False else "not established"
  if any(s["positive"] for s in stat):
    return "partly"
  if any(s["chance"] for s in stat):
    return "no, not beyond the null baselines"
  return "no"


_MEANING = {
    "yes": "the perturbations concentrate on the regions Grad-CAM++ marks as important, beyond "
           "chance and beyond every null baseline, and the CAM passes its deletion check",
    "not established": "the perturbations concentrate on the CAM's regions beyond chance and "
                       "every null baseline, but the CAM fails its deletion check, so those "
                       "regions are not shown to matter for the classification",
    "partly": "some measures are positive (beyond chance and every null baseline), others not",
    "no, not beyond the null baselines": "the perturbations follow the CAM above chance, but no "
                                         "more than they follow a null baseline",
    "no": "the perturbations do not concentrate on the CAM's regions above chance",
    "nothing to compare": "the SSIM attack fooled the model on none of the images",
    "too few images": f"the SSIM attack fooled the model on fewer than {MIN_IMAGES} images: no "
                      "confidence interval, no claim",
}


def _null_cols(nulls: Sequence[str]) -> list[tuple[str, str]]:
  return [(n, NULL_LABELS[n]) for n in nulls]


def question_rows(pooled: Mapping[str, Mapping[str, dict]], config: Any, num_pixels: int
                  ) -> list[dict]:
  """One row per attack, map and measure: value, chance, each null, the paired differences."""
  fractions = tuple(config.cam.energy_top_k)
  nulls = tuple(config.sanity.nulls)
  refs = sanity.null_refs(config)
  rows = []
  for name in ATTACKS:
    st = pooled[name]
    for kind in MAP_KINDS:
      for m in agreement.measure_names(fractions):
        key = f"{kind}/{m}"
        s = status(st, kind, m, nulls)
        row = {"attack": ATTACK_LABELS[name], "map": MAP_LABELS[kind], "measure": measure_label(m),
               "n": st[key]["n"], "value": fmt(st[key]),
               "chance": round(agreement.chance(m, fractions, num_pixels), 4),
               "value - chance": fmt(st[f"{key}-chance"])}
        for n, label in _null_cols(nulls):
          row[label] = fmt(st.get(f"{key}@{refs[n]}"))
          row[f"value - {label}"] = fmt(st.get(f"{key}-{n}"))
        row["positive"] = "yes" if s["positive"] else "no"
        rows.append(row)
  return rows


def seed_rows(per_seed: Sequence[Mapping], seeds: Sequence[int], config: Any) -> list[dict]:
  """The SSIM attack's direct measures per seed: value [CI] and whether it is positive."""
  nulls = tuple(config.sanity.nulls)
  rows = []
  for kind in MAP_KINDS:
    for m in agreement.measure_names(config.cam.energy_top_k):
      row = {"map": MAP_LABELS[kind], "measure": measure_label(m)}
      for s, p in zip(seeds, per_seed):
        row[f"seed {s}"] = fmt(p["ssim"][f"{kind}/{m}"])
        row[f"seed {s} positive"] = "yes" if status(p["ssim"], kind, m, nulls)["positive"] else "no"
      rows.append(row)
  return rows


def cascade_rows(pooled: Mapping[str, dict], similarity: Mapping[str, dict],
                 layers: Mapping[str, Sequence[str]], config: Any) -> list[dict]:
  """The cascade: per stage, the layers re-initialised, how much Grad-CAM++ still resembles the
  trained model's, and the SSIM attack's 1 - SSIM map measures against it."""
  kind = MAP_KINDS[0]
  measures = agreement.measure_names(config.cam.energy_top_k)
  rows = [{"stage": "trained model", "layers re-initialised": 0,
           "Spearman with the trained CAM": "1 (itself)",
           **{measure_label(m): fmt(pooled[f"{kind}/{m}"]) for m in measures}}]
  for stage in sanity.stages(config):
    names = layers[stage]
    first = f" (from {names[0]})" if names else ""
    rows.append({"stage": f"re-initialised: {STAGE_LABELS[stage]}",
                 "layers re-initialised": f"{len(names)}{first}",
                 "Spearman with the trained CAM": fmt(similarity[stage]),
                 **{measure_label(m): fmt(pooled[f"{kind}/{m}@cascade:{stage}"])
                    for m in measures}})
  return rows


def deletion_rows(stats: Mapping[str, dict]) -> list[dict]:
  """Per CAM method checked: the deletion curves' areas for the CAM's order and a random one."""
  rows = []
  for m in [m for m in CAM_METHODS if f"{m}/prob_auc" in stats]:
    row = {"CAM": CAM_LABELS[m], "n": stats[f"{m}/prob_auc"]["n"]}
    for score, label in (("prob", "probability"), ("logit", "logit")):
      row[f"area, {label}: CAM order"] = fmt(stats[f"{m}/{score}_auc"])
      row[f"area, {label}: random order"] = fmt(stats[f"random/{score}_auc"])
      row[f"random - CAM ({label})"] = fmt(stats[f"{m}/{score}_auc_gain"])
    row["faithful"] = "yes" if faithful(stats, m) else "no"
    rows.append(row)
  return rows


def lp_rows(pooled: Mapping[str, Mapping[str, dict]], config: Any) -> list[dict]:
  """The project's addition on the direct measures: the SSIM attack minus each Lp attack, paired
  over the images both fooled."""
  rows = []
  for lp in ("linf", "l2"):
    st = pooled[lp]
    for kind in MAP_KINDS:
      for m in agreement.measure_names(config.cam.energy_top_k):
        key = f"{kind}/{m}"
        d = st[f"{key}-diff"]
        rows.append({"map": MAP_LABELS[kind], "measure": measure_label(m),
                     "versus": ATTACK_LABELS[lp], "n (both fooled)": d["n"],
                     "SSIM attack": fmt(st[f"{key}@ssim"]),
                     "Lp attack": fmt(st[f"{key}@lp"]),
                     "SSIM - Lp": fmt(d),
                     "SSIM attack is": _compare(d)})
  return rows


def _compare(d: Mapping[str, float]) -> str:
  """"higher" / "lower" / "indistinguishable" / "undefined" from a paired difference's CI."""
  if d["n"] < MIN_IMAGES or not np.isfinite(d["mean"]):
    return "undefined"
  return "higher" if d["lo"] > 0 else "lower" if d["hi"] < 0 else "indistinguishable"


def lp_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  """One answer line per Lp attack: the 1 - SSIM map's direct measures, SSIM minus Lp."""
  out = []
  for lp in ("Linf PGD", "L2 PGD"):
    rs = [r for r in rows if r["versus"] == lp and r["map"] == MAP_LABELS["one_minus_ssim"]]
    if rs:
      out.append(f"On the direct measures of the 1 - SSIM map, paired over the images both "
                 f"fooled (n = {rs[0]['n (both fooled)']}), the SSIM attack minus {lp}: " +
                 "; ".join(f"{r['measure']} {r['SSIM - Lp']} ({r['SSIM attack is']})"
                           for r in rs) + ".")
  return out


def lp_differences(direct: Mapping[str, Mapping[str, np.ndarray]], fractions: Sequence[float]
                   ) -> dict[str, dict[str, np.ndarray]]:
  """Per image, for each Lp attack: ``<kind>/<measure>-diff`` (SSIM attack minus Lp attack),
  ``@ssim`` and ``@lp`` (the two values), NaN unless both attacks fooled the model."""
  out = {}
  for lp in ("linf", "l2"):
    out[lp] = {}
    for kind in MAP_KINDS:
      for m in agreement.measure_names(fractions):
        key = f"{kind}/{m}"
        a, b = direct["ssim"][key], direct[lp][key]
        both = np.isfinite(a) & np.isfinite(b)
        out[lp][f"{key}-diff"] = np.where(both, a - b, np.nan)
        out[lp][f"{key}@ssim"] = np.where(both, a, np.nan)
        out[lp][f"{key}@lp"] = np.where(both, b, np.nan)
  return out


def answer_lines(pooled: Mapping[str, Mapping[str, dict]], per_seed: Sequence[Mapping],
                 seeds: Sequence[int], deletion_stats: Mapping[str, dict] | None,
                 similarity: Mapping[str, dict], smooth: Sequence[Mapping[str, Any] | None],
                 config: Any, num_pixels: int) -> list[str]:
  """The direct answer to the paper's question: the verdict from the 1 - SSIM map (as the
  paper compares) and from |d|, then the numbers behind it, each beside its baselines."""
  fractions = tuple(config.cam.energy_top_k)
  measures = agreement.measure_names(fractions)
  nulls = tuple(config.sanity.nulls)
  is_faithful = faithful(deletion_stats)
  st = pooled["ssim"]
  out = []
  for kind in MAP_KINDS:
    v = verdict(st, kind, measures, nulls, is_faithful)
    seed_v = [verdict(p["ssim"], kind, measures, nulls, is_faithful) for p in per_seed]
    if len(seeds) > 1:
      rep = ("the same in each of the seeds " + ", ".join(map(str, seeds))
             if len(set(seed_v)) == 1 else "does not replicate across seeds: " + ", ".join(
                 f"seed {s} {x}" for s, x in zip(seeds, seed_v)))
    else:
      rep = f"one seed ({seeds[0]}): replication not tested"
    head = ("Answer (from the 1 - SSIM map, as the paper compares)" if kind == "one_minus_ssim"
            else "From abs(d) (the perturbation's magnitude)")
    out.append(f"{head}: {v} — on this model and data {_MEANING[v]} ({rep}).")
  kind = MAP_KINDS[0]
  for m in measures:
    key = f"{kind}/{m}"
    s = status(st, kind, m, nulls)
    vs = [f"{NULL_LABELS[n]} {fmt(st.get(f'{key}-{n}'))}" for n in nulls]
    what = (f"no interval (fewer than {MIN_IMAGES} images)" if s["n"] < MIN_IMAGES else
            "beats chance and every null" if s["positive"] else
            "beats chance but not every null" if s["chance"] else "does not beat chance")
    chance = ("chance " + f"{agreement.chance(m, fractions, num_pixels):.3f}"
              if m != "spearman" else "chance 0")
    out.append(f"{MAP_LABELS[kind]} of the SSIM attack, {measure_label(m)}: "
               f"{fmt(st[key])} (n = {st[key]['n']} fooled images; {chance}): {what}; "
               "value minus " + ", ".join(vs or ["(no nulls configured)"]) + ".")
  if deletion_stats is not None:
    g = deletion_stats[f"{agreement.DIRECT_CAM}/{FAITHFUL_SCORE}_auc_gain"]
    out.append("Is the CAM itself faithful? Deleting Grad-CAM++'s top pixels first "
               f"({config.sanity.deletion_steps} steps, removed pixels set to the image's "
               f"{'mean colour' if config.sanity.deletion_baseline == 'mean' else 'blur'}) "
               f"{'lowers' if is_faithful else 'does not measurably lower'} the true class's "
               "probability faster than a random order: area under the random curve minus the "
               f"CAM's {fmt(g)} (n = {g['n']}).")
  if similarity:
    parts = [f"{STAGE_LABELS[s]} re-initialised {fmt(similarity[s])}"
             for s in sanity.stages(config)]
    out.append("Cascading randomisation (Adebayo et al. 2018): Spearman of Grad-CAM++ with the "
               "trained model's, " + "; ".join(parts) + " (a CAM that explains the decision "
               "drifts away as the learned weights go).")
  smooth = [x for x in smooth if x]
  if smooth:
    sig = ", ".join(f"{x['sigma']:.2f} px ({x['source']})" for x in smooth)
    out.append(f"Smooth random maps: Gaussian-smoothed noise, per seed sigma {sig}; "
               f"{config.sanity.random_maps} maps per image.")
  return out

