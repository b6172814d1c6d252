"""The masks paper's future work, measured: does masking help because it shrinks the input?

The paper's conclusion names Simon-Gabriel et al.: first-order adversarial vulnerability grows
with the input dimension, so masking may help by removing input features. An Linf perturbation
of radius eps over d attacked inputs has an L2 norm of up to eps sqrt(d); the adversary of a
masked model gets the foreground (d = foreground pixels x channels), that of a full-image model
every pixel. Two views, from the stored per-example evaluations and curves (no new attack):

- ``binned``: the evaluation images in quartiles of their foreground pixel count (by rank, ties
  by position, so every quartile holds a quarter of the images); per quartile and model, the
  mean number of attacked pixels (full image: every pixel; masked: the foreground) and the PGD
  accuracy at the evaluation eps (``dimension.md/.csv``).
- ``rescaled``: each model's accuracy-vs-eps curve against eps x s, with s the mean of
  sqrt(d) over the curve's images (``dimension_curves.md/.csv``); ``figure`` draws both views
  (``dimension.png``).

``finding`` (the rule is ours): per training regime, the masking gain at the evaluation eps,
G = acc_masked(eps) - acc_full(eps), is set against the gain at matched eps x s,
G_d = acc_masked(eps) - acc_full(eps x s_masked / s_full) (the full model's curve interpolated
linearly in eps). The share of the gain that the smaller input dimension accounts for is
(G - G_d) / G: "mostly explained" if >= 0.75, "partly explained" if >= 0.25, else "not
explained"; no verdict when G <= 0 (no gain to explain) or the evaluation eps lies outside the
curve. Both accuracies come from the curves (their first ``curve_examples`` images), as point
estimates.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from experiments import common, papers
from percadv_jax import io

QUARTILES = 4


def _names(per_example: Mapping[str, Any]) -> list[str]:
  return [n for n in papers.TABLE4_ROWS if n in per_example]


def binned(per_example: Mapping[str, Mapping[str, np.ndarray]], bins: int = QUARTILES
           ) -> tuple[list[str], list[dict]]:
  """Per-image PGD robustness by foreground size: ``(columns, rows)``, one row per quartile.

  Columns: ``quartile``, ``foreground px`` (the quartile's range), ``images``, then per model
  (Table 4's rows present) ``"<row> attacked px"`` (mean) and ``"<row> PGD (%)"``.
  """
  names = _names(per_example)
  if not names:
    return [], []
  fg = np.asarray(per_example[names[0]]["foreground"])
  for n in names[1:]:
    if not np.array_equal(per_example[n]["foreground"], fg):
      raise ValueError(f"{n} was evaluated on other images than {names[0]}")
  groups = [g for g in np.array_split(np.argsort(fg, kind="stable"), min(bins, fg.size))
            if g.size]
  columns = ["quartile", "foreground px", "images"]
  for n in names:
    columns += [f"{papers.ROW_LABELS[n]} attacked px", f"{papers.ROW_LABELS[n]} PGD (%)"]
  rows = []
  for k, g in enumerate(groups):
    row: dict[str, Any] = {"quartile": f"Q{k + 1}", "foreground px":
                           f"{int(fg[g].min())}-{int(fg[g].max())}", "images": int(g.size)}
    for n in names:
      pe = per_example[n]
      row[f"{papers.ROW_LABELS[n]} attacked px"] = round(float(pe["attacked"][g].mean()), 1)
      row[f"{papers.ROW_LABELS[n]} PGD (%)"] = common.pct(np.asarray(pe["pgd"])[g].mean())
    rows.append(row)
  return columns, rows


def sqrt_dimension(record: Mapping[str, np.ndarray], examples: int) -> float:
  """s: the mean over the first ``examples`` images of sqrt(attacked pixels x channels)."""
  d = np.asarray(record["attacked"][:examples], np.float64) * float(record["channels"])
  return float(np.sqrt(d).mean())


def rescaled(models: Mapping[str, dict], per_example: Mapping[str, Mapping[str, np.ndarray]],
             examples: int) -> tuple[list[str], list[dict]]:
  """Each model's curve against eps x s: ``(columns, rows)``, one row per model and eps."""
  columns = ["model", "eps (x255)", "mean sqrt(d)", "eps x sqrt(d)", "PGD (%)"]
  rows = []
  for n in _names(per_example):
    if n not in models:
      continue
    s = sqrt_dimension(per_example[n], examples)
    for point in models[n]["curve"]:
      rows.append({"model": papers.ROW_LABELS[n], "eps (x255)": round(point["eps"] * 255, 2),
                   "mean sqrt(d)": round(s, 2), "eps x sqrt(d)": round(point["eps"] * s, 4),
                   "PGD (%)": common.pct(point["per_attack"]["pgd"])})
  return columns, rows


def _curve(model: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  pts = sorted(model["curve"], key=lambda p: p["eps"])
  return (np.asarray([p["eps"] for p in pts], np.float64),
          np.asarray([p["per_attack"]["pgd"] for p in pts], np.float64))


def matched_gain(full: Mapping[str, Any], masked: Mapping[str, Any], s_full: float,
                 s_masked: float, eps: float) -> dict[str, Any] | None:
  """``{"gain", "gain_matched", "eps_full", "share"}`` (points; share None when gain <= 0) of
  the module's rule; None when ``eps`` lies outside either curve."""
  ef, af = _curve(full)
  em, am = _curve(masked)
  eps_full = eps * s_masked / s_full
  if not (ef[0] <= eps <= ef[-1] and em[0] <= eps <= em[-1] and ef[0] <= eps_full <= ef[-1]):
    return None
  acc_m = float(np.interp(eps, em, am))
  gain = 100 * (acc_m - float(np.interp(eps, ef, af)))
  gain_matched = 100 * (acc_m - float(np.interp(eps_full, ef, af)))
  share = (gain - gain_matched) / gain if gain > 0 else None
  return {"gain": gain, "gain_matched": gain_matched, "eps_full": eps_full, "share": share}


def finding(models: Mapping[str, dict], per_example: Mapping[str, Mapping[str, np.ndarray]], *,
            eps: float, examples: int) -> list[dict[str, Any]]:
  """Per regime with both models: ``{"regime", **matched_gain, "verdict", "text"}``."""
  out = []
  for regime in ("natural", "adversarial"):
    f, m = f"full_{regime}", f"masked_{regime}"
    if not all(n in models and n in per_example for n in (f, m)):
      continue
    s_f = sqrt_dimension(per_example[f], examples)
    s_m = sqrt_dimension(per_example[m], examples)
    g = matched_gain(models[f], models[m], s_f, s_m, eps)
    head = (f"Input dimension, {regime} training (the paper's future work): the masked "
            f"model's adversary gets mean sqrt(d) = {s_m:.1f} against {s_f:.1f} for the full "
            "image")
    if g is None:
      out.append({"regime": regime, "verdict": "cannot tell",
                  "text": f"{head}; the evaluation eps lies outside the curves: cannot tell."})
      continue
    if g["share"] is None:
      v = "no gain to explain"
    else:
      v = ("mostly explained" if g["share"] >= 0.75 else
           "partly explained" if g["share"] >= 0.25 else "not explained")
    text = (f"{head}. PGD gain of masking at eps {eps * 255:.3g}/255: {g['gain']:+.1f} points; "
            f"against the full model at the same eps x sqrt(d) (eps "
            f"{g['eps_full'] * 255:.3g}/255): {g['gain_matched']:+.1f} points")
    text += (f"; the smaller input dimension accounts for {100 * g['share']:.0f}% of the gain: "
             f"{v} by it." if g["share"] is not None else f": {v}.")
    out.append({"regime": regime, **g, "verdict": v, "text": text})
  return out


def figure(models: Mapping[str, dict], per_example: Mapping[str, Mapping[str, np.ndarray]],
           path: str, *, examples: int, title: str) -> None:
  """Left: PGD accuracy per foreground quartile against the mean attacked pixels; right: the
  curves against eps x mean sqrt(d)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  columns, rows = binned(per_example)
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
  styles = {"full_natural": ("C0", "--"), "full_adversarial": ("C0", "-"),
            "masked_natural": ("C3", "--"), "masked_adversarial": ("C3", "-")}
  for n in _names(per_example):
    c, ls = styles[n]
    label = papers.ROW_LABELS[n]
    a1.plot([r[f"{label} attacked px"] for r in rows], [r[f"{label} PGD (%)"] for r in rows],
            color=c, linestyle=ls, marker="o", label=label)
    if n in models:
      s = sqrt_dimension(per_example[n], examples)
      eps, acc = _curve(models[n])
      a2.plot(eps * s, 100 * acc, color=c, linestyle=ls, marker="o", label=label)
  a1.set_xscale("log")
  a1.set_xlabel("attacked pixels per image (mean per foreground quartile)")
  a1.set_ylabel("PGD accuracy (%)")
  a2.set_xlabel("eps x mean sqrt(d)  (d = attacked pixels x channels)")
  a2.set_ylabel("PGD accuracy (%)")
  for a in (a1, a2):
    a.set_ylim(-2, 102)
    a.grid(alpha=0.3)
    a.legend(fontsize=7, handlelength=4)
  fig.suptitle(title, fontsize=9)
  io.save_figure(fig, path)


def write(workdir: str, models: Mapping[str, dict],
          per_example: Mapping[str, Mapping[str, np.ndarray]], *, eps: float, examples: int,
          title: str) -> dict[str, Any] | None:
  """Writes ``dimension.md/.csv``, ``dimension_curves.md/.csv`` and ``dimension.png`` into
  ``workdir``; returns ``{"binned", "rescaled", "findings"}`` (None without records)."""
  if not _names(per_example):
    return None
  bcols, brows = binned(per_example)
  io.write_table(os.path.join(workdir, "dimension"), brows, bcols, digits=2)
  rcols, rrows = rescaled(models, per_example, examples)
  io.write_table(os.path.join(workdir, "dimension_curves"), rrows, rcols, digits=3)
  figure(models, per_example, os.path.join(workdir, "dimension.png"), examples=examples,
         title=title)
  return {"binned": {"columns": bcols, "rows": brows},
          "rescaled": {"columns": rcols, "rows": rrows},
          "findings": finding(models, per_example, eps=eps, examples=examples)}


def markdown(section: Mapping[str, Any], prefix: str = "") -> list[str]:
  """The summary's lines of the analysis written by ``write`` (its tables and figure; the
  finding lines are among the study's findings)."""
  b, r = section["binned"], section["rescaled"]
  return [
      f"The paper's future work: {papers.FUTURE_WORK}.", "",
      "PGD accuracy per quartile of the images' foreground size (full-image models: every "
      "pixel attacked; masked models: the foreground):", "",
      io.markdown_table(b["rows"], b["columns"], 2),
      "Accuracy-vs-eps curves against eps x mean sqrt(d) (d = attacked pixels x channels):", "",
      io.markdown_table(r["rows"], r["columns"], 3),
      f"![input dimension]({prefix}dimension.png)", ""]
