"""The masks paper's claims (``experiments.papers.CLAIMS``) judged on our models.

Each claim compares the masked model with the full-image model of one training regime
(``masked_<regime>`` minus ``full_<regime>``) in one metric (natural or PGD accuracy). The
paper's figure is that difference in its Table 4. Ours is the difference in accuracy points over
our evaluation images with a 95% percentile bootstrap interval; both models are evaluated on the
same images, so the bootstrap is paired (a resample draws images and keeps both models' outcomes
of each). 2,000 resamples, seed 0 (ours).

Verdicts (the rule is ours):

- a "gain" claim with the paper's figure f (in points; its sign is the claimed direction):
  **holds** if the interval contains f or lies wholly beyond f in the claimed direction (our
  effect is at least the paper's); else **direction holds** if the interval lies wholly on the
  claimed side of 0 (the effect is there, smaller than the paper's); else **does not hold** (the
  interval contains 0, or lies on the other side, and misses f).
- a "no_loss" claim (masking has "at worst, no impact on natural accuracy"): **holds** if the
  interval's upper end is >= 0 (no measurable loss), **does not hold** if the whole interval lies
  below 0.
- **not judged**: a model of the pair, or its per-example record, is missing.

On a dataset the paper does not use (the synthetic signs), each claim's direction is judged
once (per training regime, metric and kind): a gain "direction holds" or "does not hold", never
"holds", as there is no figure of that dataset to hold ours against; "no_loss" by its own rule.

The one claim across datasets (the adversarial masking gain in PGD accuracy is smaller on
GTSRB-IC than on MS-COCO-IC) is judged by ``cross_dataset`` with the "gain" rule on the
difference of the two gains, bootstrapped independently per dataset (two test sets).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from experiments import common, papers

RESAMPLES = 2000
SEED = 0
METRIC_KEYS = {"natural": "clean", "pgd": "pgd"}  # a claim's metric -> per-example outcome
METRIC_WORDS = {"natural": "natural accuracy", "pgd": "PGD accuracy"}
VERDICTS = ("holds", "direction holds", "does not hold", "not judged")


def verdict(kind: str, paper: float | None, ci: Mapping[str, float] | None) -> tuple[str, str]:
  """``(verdict, reason)`` of a claim by the module's rule.

  Args:
    kind: ``"gain"`` or ``"no_loss"``.
    paper: the paper's figure in points (its sign is the claimed direction of a gain); ``None``
      judges a gain's direction only, claimed positive.
    ci: ``{"lo", "hi"}`` of ours in points (``None`` or NaN: not judged).
  """
  if ci is None or not np.isfinite(ci["lo"]) or not np.isfinite(ci["hi"]):
    return "not judged", "no per-example record of both models"
  lo, hi = float(ci["lo"]), float(ci["hi"])
  if kind == "no_loss":
    if hi >= 0:
      return "holds", "the interval reaches 0 or above: no measurable loss"
    return "does not hold", "the whole interval lies below 0: masking lowers it"
  if kind != "gain":
    raise ValueError(f"unknown claim kind {kind!r}")
  sign = 1.0 if paper is None or paper >= 0 else -1.0
  if paper is not None:
    if lo <= paper <= hi:
      return "holds", "the interval contains the paper's figure"
    if (lo > paper) if sign > 0 else (hi < paper):
      return "holds", "the interval lies beyond the paper's figure"
  if (lo > 0) if sign > 0 else (hi < 0):
    return "direction holds", ("the interval excludes 0 on the claimed side" if paper is None
                               else "the interval excludes 0 but falls short of the paper's "
                                    "figure")
  return "does not hold", ("the interval contains 0" if lo <= 0 <= hi
                           else "the interval lies on the other side of 0")


def _directions() -> list[papers.Claim]:
  """The claims' directions, one per (regime, metric, kind), worded for any dataset, with the
  paper's figures on its datasets."""
  seen: dict[tuple[str, str, str], list[papers.Claim]] = {}
  for c in papers.CLAIMS:
    seen.setdefault((c.regime, c.metric, c.kind), []).append(c)
  out = []
  for (regime, metric, kind), group in seen.items():
    figures = ", ".join(f"{papers.DATASET_LABELS[c.dataset]} {c.paper:+.2f}" for c in group)
    what = (f"masking raises {METRIC_WORDS[metric]}" if kind == "gain"
            else f"masking does not lower {METRIC_WORDS[metric]}")
    out.append(papers.Claim("", regime, metric, kind,
                            f"with {regime} training, {what} (the paper's Table 4: {figures} "
                            "points)"))
  return out


def _difference(per_example: Mapping[str, Mapping[str, np.ndarray]], regime: str, metric: str
                ) -> dict[str, float] | None:
  full, masked = per_example.get(f"full_{regime}"), per_example.get(f"masked_{regime}")
  if full is None or masked is None:
    return None
  key = METRIC_KEYS[metric]
  ci = common.bootstrap_difference(np.asarray(masked[key], np.float64),
                                   np.asarray(full[key], np.float64),
                                   resamples=RESAMPLES, seed=SEED)
  return {k: (100 * v if k != "n" else v) for k, v in ci.items()}


def _fmt(x: float) -> str:
  return f"{x:+.2f}"


def judge(dataset: str, models: Mapping[str, dict],
          per_example: Mapping[str, Mapping[str, np.ndarray]]) -> list[dict[str, Any]]:
  """The paper's claims on ``dataset`` judged on our models.

  Args:
    dataset: the study's dataset; a dataset of the paper judges its claims, any other the
      directions of the claims (one per regime, metric and kind).
    models: ``{name: summary}`` (``results.json``'s ``models``).
    per_example: ``{name: record}`` (``evaluate.load_per_example``).

  Returns:
    one dict per claim: ``dataset``, ``regime``, ``metric``, ``kind``, ``words``, ``paper``
    (points, or None), ``paper_cells`` (the two Table 4 cells, or None), ``ours`` (``{"mean",
    "lo", "hi", "n"}`` in points, or None), ``ours_cells`` (our two accuracies in %, or None),
    ``verdict``, ``reason``, ``text`` (the finding line).
  """
  if dataset in papers.TABLE4:
    chosen = [(c, c.paper) for c in papers.CLAIMS if c.dataset == dataset]
  else:
    chosen = [(c, None) for c in _directions()]
  out = []
  for c, paper in chosen:
    ci = _difference(per_example, c.regime, c.metric)
    v, reason = verdict(c.kind, paper, ci)
    full, masked = models.get(f"full_{c.regime}"), models.get(f"masked_{c.regime}")
    key = METRIC_KEYS[c.metric]
    ours_cells = (None if full is None or masked is None
                  else [common.pct(full[key] if key == "clean" else full["per_attack"][key]),
                        common.pct(masked[key] if key == "clean" else masked["per_attack"][key])])
    paper_cells = None
    if paper is not None:
      t = papers.TABLE4[dataset]
      paper_cells = [t[f"full_{c.regime}"][c.metric], t[f"masked_{c.regime}"][c.metric]]
    entry = {"dataset": dataset, "regime": c.regime, "metric": c.metric, "kind": c.kind,
             "words": c.words, "paper": paper, "paper_cells": paper_cells, "ours": ci,
             "ours_cells": ours_cells, "verdict": v, "reason": reason}
    entry["text"] = line(entry)
    out.append(entry)
  return out


def line(e: Mapping[str, Any]) -> str:
  """The finding line of a judged claim."""
  from experiments.masks_study.report import label as dataset_label
  label = dataset_label(e["dataset"])
  what = f"masked minus full image, {METRIC_WORDS[e['metric']]}, {e['regime']} training"
  if e["paper"] is not None:
    pc = e["paper_cells"]
    head = (f"{label}, the paper: {e['words']}; its Table 4: {pc[0]:.2f} -> {pc[1]:.2f} "
            f"({_fmt(e['paper'])} points).")
  else:
    head = (f"{label} (not a dataset of the paper: its direction only), the paper on its "
            f"datasets: {e['words']}.")
  ours = e["ours"]
  if ours is None:
    body = ("Ours: " + f"{e['ours_cells'][0]:.2f} -> {e['ours_cells'][1]:.2f} (no per-example "
            "record: no interval)" if e["ours_cells"] else "Ours: a model of the pair is missing")
  else:
    oc = e["ours_cells"]
    body = (f"Ours ({what}): {oc[0]:.2f} -> {oc[1]:.2f}, {_fmt(ours['mean'])} points, 95% CI "
            f"[{_fmt(ours['lo'])}, {_fmt(ours['hi'])}] (paired bootstrap over {ours['n']} test "
            "images)")
  return f"{head} {body}: {e['verdict']} ({e['reason']})."


def cross_dataset(per_example: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]
                  ) -> dict[str, Any] | None:
  """The claim that the adversarial masking gain in PGD accuracy is smaller on GTSRB-IC than on
  MS-COCO-IC, from ``{dataset: {name: record}}``; None when a dataset is missing.

  Returns:
    ``{"paper", "ours", "verdict", "reason", "text"}`` (points: GTSRB-IC's gain minus
    MS-COCO-IC's).
  """
  regime, metric, small, large = papers.CROSS_DATASET_CLAIM
  if small not in per_example or large not in per_example:
    return None
  t = papers.TABLE4
  gain = {ds: t[ds][f"masked_{regime}"][metric] - t[ds][f"full_{regime}"][metric]
          for ds in (small, large)}
  paper = round(gain[small] - gain[large], 2)
  diffs = {}
  for ds in (small, large):
    pe = per_example[ds]
    f, m = pe.get(f"full_{regime}"), pe.get(f"masked_{regime}")
    if f is not None and m is not None:
      key = METRIC_KEYS[metric]
      diffs[ds] = np.asarray(m[key], np.float64) - np.asarray(f[key], np.float64)
  ours = None
  if len(diffs) == 2:
    ci = common.bootstrap_difference(diffs[small], diffs[large], resamples=RESAMPLES, seed=SEED,
                                     paired=False)
    ours = {k: (100 * v if k != "n" else v) for k, v in ci.items()}
    ours["n_other"] = int(diffs[large].size)
  v, reason = verdict("gain", paper, ours)
  s, lg = papers.DATASET_LABELS[small], papers.DATASET_LABELS[large]
  text = (f"{s} against {lg}, the paper: with adversarial training, masking raises PGD accuracy "
          f"on {s} by less than on {lg}; its Table 4: {gain[small]:+.2f} against "
          f"{gain[large]:+.2f} points ({_fmt(paper)}).")
  if ours is None:
    text += " Ours: not judged (no per-example records of both pairs)."
  else:
    text += (f" Ours ({s}'s gain minus {lg}'s): {_fmt(ours['mean'])} points, 95% CI "
             f"[{_fmt(ours['lo'])}, {_fmt(ours['hi'])}] (bootstrap over {ours['n']} and "
             f"{ours['n_other']} test images, each set resampled on its own): {v} ({reason}).")
  return {"paper": paper, "ours": ours, "verdict": v, "reason": reason, "text": text}
