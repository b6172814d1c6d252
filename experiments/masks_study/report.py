"""Table 4 beside the paper's, the curves and figure, the findings and the study's Markdown.

``table4`` writes Table 4 in the paper's layout: rows N X, N X_F, A X, A X_F (``papers.
TABLE4_ROWS``), per dataset (MS-COCO-IC before GTSRB-IC, as the paper) natural and PGD accuracy,
each as ours, the paper's and ours minus the paper's (points); our extra columns (APGD, the
pointwise worst case, AutoAttack, and PGD on masked models whose mask is computed from the
attacked image) follow, each when some model has it ("-" for a model without it). A dataset
the paper does not use gets our columns only, and ``paper_beside`` sets the paper's Table 4
beside ours, labelled as other datasets.

``check_combinable`` is the combined report's rule: at most one study per dataset, every dataset
one of the paper's, and all studies of one family (the same model, training attack and
evaluation attacks: ``FAMILY_FIELDS``), as the paper presets are; anything else is one error
naming the studies.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from experiments import common, papers
from experiments.configs.attention_masks import MODEL_LABELS
from percadv_jax import io

DATASET_LABELS = {**papers.DATASET_LABELS, "synthetic_signs": "synthetic signs"}


# A model's numbers are its ``Evaluation.summary()`` (PGD and APGD), read in place.
def natural(m: Mapping[str, Any]) -> float:
  return m["clean"]


def pgd(m: Mapping[str, Any]) -> float:
  return m["per_attack"]["pgd"]


def apgd(m: Mapping[str, Any]) -> float:
  return m["per_attack"]["apgd"]


def worst(m: Mapping[str, Any]) -> float:
  return m["robust"]


def autoattack(m: Mapping[str, Any]) -> float | None:
  """AutoAttack's robust accuracy (its cascade's worst case); None when not evaluated."""
  return m["autoattack"]["robust"] if "autoattack" in m else None


def adaptive(m: Mapping[str, Any]) -> float | None:
  """PGD accuracy of the pipeline that masks the attacked image with its own segmentation;
  None for a full-image model (or when not evaluated)."""
  return m["adaptive"]["per_attack"]["pgd"] if "adaptive" in m else None


# The paper's two columns per dataset (label, accessor, key in papers.TABLE4), then ours.
PAPER_METRICS = (("natural", natural, "natural"), ("PGD", pgd, "pgd"))
EXTRA_METRICS = (("APGD", apgd), ("worst case", worst), ("AutoAttack", autoattack),
                 ("PGD, masks from the attacked image", adaptive))
TABLE_METRICS = tuple((label, fn) for label, fn, _ in PAPER_METRICS) + EXTRA_METRICS


def label(dataset: str) -> str:
  return DATASET_LABELS.get(dataset, dataset)


def ours_column(dataset: str, metric: str) -> str:
  return f"{label(dataset)} {metric} (%)"


def paper_column(dataset: str, metric: str) -> str:
  return f"{label(dataset)} {metric}, paper (%)"


def diff_column(dataset: str, metric: str) -> str:
  return f"{label(dataset)} {metric}, ours - paper"


def cell(fn: Any, m: Mapping[str, Any] | None) -> float | str:
  """A table cell: ``fn(m)`` in %, or "-" for a missing model or a metric it lacks."""
  v = fn(m) if m else None
  return "-" if v is None else common.pct(v)


def _ordered(studies: Sequence[tuple[str, Mapping[str, dict]]]
             ) -> list[tuple[str, Mapping[str, dict]]]:
  rank = {ds: i for i, ds in enumerate(papers.TABLE4_DATASETS)}
  return sorted(studies, key=lambda s: rank.get(s[0], len(rank)))  # stable for the others


def table4(studies: Sequence[tuple[str, Mapping[str, dict]]]) -> tuple[list[str], list[dict]]:
  """Table 4 in the paper's layout from ``[(dataset, {name: summary})]``: ``(columns, rows)``.

  Rows: the models present, in the paper's order (``model``: ours; ``paper row``: its name in
  the paper). Columns per dataset: ``ours_column``, and for the paper's datasets
  ``paper_column`` and ``diff_column`` (ours minus the paper's, in points), of natural and PGD
  accuracy; then our ``EXTRA_METRICS`` per dataset, each present when some model of the studies
  has it. A model missing from a study, or a metric missing from a model, shows "-".
  """
  studies = _ordered(studies)
  extra = [(metric, fn) for metric, fn in EXTRA_METRICS
           if any(fn(m) is not None for _, models in studies for m in models.values())]
  columns = ["model", "paper row"]
  for ds, _ in studies:
    for metric, _, _ in PAPER_METRICS:
      columns.append(ours_column(ds, metric))
      if ds in papers.TABLE4:
        columns += [paper_column(ds, metric), diff_column(ds, metric)]
  for ds, _ in studies:
    columns += [ours_column(ds, metric) for metric, _ in extra]
  rows = []
  for name in papers.TABLE4_ROWS:
    if not any(name in models for _, models in studies):
      continue
    row: dict[str, Any] = {"model": MODEL_LABELS[name], "paper row": papers.ROW_LABELS[name]}
    for ds, models in studies:
      m = models.get(name)
      for metric, fn, key in PAPER_METRICS:
        row[ours_column(ds, metric)] = common.pct(fn(m)) if m else "-"
        if ds in papers.TABLE4:
          theirs = papers.TABLE4[ds][name][key]
          row[paper_column(ds, metric)] = theirs
          row[diff_column(ds, metric)] = (round(common.pct(fn(m)) - theirs, 2) if m else "-")
      for metric, fn in extra:
        row[ours_column(ds, metric)] = cell(fn, m)
    rows.append(row)
  return columns, rows


def table(dataset: str, models: Mapping[str, dict]) -> tuple[list[str], list[dict]]:
  """One study's Table 4 (``table4`` of one dataset)."""
  return table4([(dataset, models)])


def paper_beside(dataset: str, models: Mapping[str, dict]) -> tuple[list[str], list[dict]]:
  """Our natural and PGD accuracy on ``dataset`` beside the paper's Table 4 on its datasets
  (other images: the cells are not comparable one to one; no differences are taken)."""
  columns = ["model", "paper row", *(f"ours: {ours_column(dataset, m)}"
                                     for m, _, _ in PAPER_METRICS)]
  for ds in papers.TABLE4_DATASETS:
    columns += [f"paper: {label(ds)} {m} (%)" for m, _, _ in PAPER_METRICS]
  rows = []
  for name in papers.TABLE4_ROWS:
    row: dict[str, Any] = {"model": MODEL_LABELS[name], "paper row": papers.ROW_LABELS[name]}
    m = models.get(name)
    for metric, fn, _ in PAPER_METRICS:
      row[f"ours: {ours_column(dataset, metric)}"] = common.pct(fn(m)) if m else "-"
    for ds in papers.TABLE4_DATASETS:
      for metric, _, key in PAPER_METRICS:
        row[f"paper: {label(ds)} {metric} (%)"] = papers.TABLE4[ds][name][key]
    rows.append(row)
  return columns, rows


def curve_table(curve_eps: Sequence[float], models: Mapping[str, dict]
                ) -> tuple[list[str], list[dict]]:
  """Accuracy under PGD (%) per eps (rows) and model (columns)."""
  columns = ["eps (x255)"] + [MODEL_LABELS[n] for n in models]
  rows = []
  for i, eps in enumerate(curve_eps):
    row = {"eps (x255)": round(eps * 255, 2)}
    for n, m in models.items():
      row[MODEL_LABELS[n]] = common.pct(pgd(m["curve"][i]))
    rows.append(row)
  return columns, rows


def figure(models: Mapping[str, dict], path: str, *, eps: float, steps: int, title: str) -> None:
  """PGD accuracy vs eps, one line per model (natural training dashed, adversarial solid)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  styles = {"full_natural": ("C0", "--"), "full_adversarial": ("C0", "-"),
            "masked_natural": ("C3", "--"), "masked_adversarial": ("C3", "-")}
  for name, m in models.items():
    c, ls = styles[name]
    xs = [r["eps"] * 255 for r in m["curve"]]
    ax.plot(xs, [100 * pgd(r) for r in m["curve"]], color=c, linestyle=ls,
            marker="o", label=MODEL_LABELS[name])
  ax.axvline(eps * 255, color="grey", lw=0.8, ls=":")
  ax.set_xlabel("Linf eps (x 1/255)")
  ax.set_ylabel(f"PGD-{steps} accuracy (%)")
  ax.set_title(title)
  ax.set_ylim(-2, 102)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, handlelength=4)  # long enough handles to show the dashes
  io.save_figure(fig, path)


def training_figure(studies: Mapping[str, str], path: str, *, title: str = "Training",
                    num_classes: Mapping[str, int] | None = None) -> dict[str, dict]:
  """Training loss and accuracy against epochs, one line per (study, model), from the metrics.

  Args:
    studies: ``{label: study workdir}``; each workdir holds the study's ``config.json`` (the
      epoch of a record is ``step * train.batch_size / data.num_train``) and
      ``models/<name>/metrics.jsonl`` (``percadv_jax.train.fit``'s records: mean loss and
      accuracy of the steps since the previous record).
    path: the PNG to write (two panels: loss, accuracy in %).
    title: the figure's title.
    num_classes: ``{label: classes}``; chance, ``log(classes)`` and ``1 / classes``, is drawn
      dotted for the studies it names.

  Returns:
    the plotted series, ``{"<label>, <model name>": {"epoch", "loss", "accuracy"}}`` (lists).
  """
  import math
  import os

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.6))
  series: dict[str, dict] = {}
  for i, (label, workdir) in enumerate(studies.items()):
    config = io.read_json(os.path.join(workdir, "config.json"))
    per_epoch = config["data"]["num_train"] / config["train"]["batch_size"]
    for name in MODEL_LABELS:
      records = [r for r in io.read_jsonl(os.path.join(workdir, "models", name, "metrics.jsonl"))
                 if "loss" in r]
      if not records:
        continue
      xs = [r["step"] / per_epoch for r in records]
      ls = "-" if name.endswith("adversarial") else "--"
      text = f"{label}, {name}"
      series[text] = {"epoch": xs, "loss": [r["loss"] for r in records],
                      "accuracy": [r["accuracy"] for r in records]}
      ax_loss.plot(xs, [r["loss"] for r in records], color=f"C{i}", ls=ls, marker=".",
                   label=text)
      ax_acc.plot(xs, [100 * r["accuracy"] for r in records], color=f"C{i}", ls=ls, marker=".")
    k = (num_classes or {}).get(label)
    if k:
      ax_loss.axhline(math.log(k), color=f"C{i}", lw=0.8, ls=":")
      ax_acc.axhline(100 / k, color=f"C{i}", lw=0.8, ls=":")
  ax_loss.set_xlabel("epoch")
  ax_loss.set_ylabel("training loss")
  ax_acc.set_xlabel("epoch")
  ax_acc.set_ylabel("training accuracy (%)")
  ax_acc.set_ylim(-2, 102)
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
  ax_loss.legend(fontsize=7)
  fig.suptitle(title)
  io.save_figure(fig, path)
  return series


def findings(models: Mapping[str, dict]) -> list[str]:
  """Sentences stating what our point estimates show (whichever way they come out); the
  paper's claims, with intervals and verdicts, are ``claims.judge``'s."""
  out = []

  def get(n, fn):
    return fn(models[n]) if n in models else None
  for regime in ("natural", "adversarial"):
    f, m = get(f"full_{regime}", pgd), get(f"masked_{regime}", pgd)
    if f is not None and m is not None:
      verb = "raises" if m > f else ("does not change" if m == f else "lowers")
      out.append(f"With {regime} training, masking the background {verb} PGD accuracy: "
                 f"{100 * f:.1f}% (full image) -> {100 * m:.1f}% (masked).")
  for setting in ("full", "masked"):
    n, a = get(f"{setting}_natural", pgd), get(f"{setting}_adversarial", pgd)
    if n is not None and a is not None:
      verb = "raises" if a > n else ("does not change" if a == n else "lowers")
      out.append(f"On {'full images' if setting == 'full' else 'masked images'}, adversarial "
                 f"training {verb} PGD accuracy: {100 * n:.1f}% -> {100 * a:.1f}% (natural "
                 f"accuracy {100 * get(f'{setting}_natural', natural):.1f}% -> "
                 f"{100 * get(f'{setting}_adversarial', natural):.1f}%).")
  for name, m in models.items():
    if apgd(m) < pgd(m):
      out.append(f"APGD finds more adversarial examples than PGD on "
                 f"'{MODEL_LABELS[name]}' ({100 * pgd(m):.1f}% -> {100 * apgd(m):.1f}%).")
  for name, m in models.items():
    if "autoattack" in m and m["autoattack"]["robust_all"] < worst(m):
      out.append(f"AutoAttack finds adversarial examples that PGD and APGD miss on "
                 f"'{MODEL_LABELS[name]}': the worst case over all three is "
                 f"{100 * m['autoattack']['robust_all']:.1f}% (PGD and APGD: "
                 f"{100 * worst(m):.1f}%).")
  for name, m in models.items():
    if adaptive(m) is not None:
      verb = "lowers" if adaptive(m) < pgd(m) else "does not lower"
      out.append(f"On '{MODEL_LABELS[name]}', attacking the whole image of a pipeline that "
                 f"segments it (masks from the attacked image) {verb} the PGD accuracy of the "
                 f"fixed-mask setting: {100 * pgd(m):.1f}% -> {100 * adaptive(m):.1f}% "
                 f"(the pipeline's clean accuracy {100 * m['adaptive']['clean']:.1f}%).")
  return out


def extra_column_notes(config: Any, models: Mapping[str, dict]) -> list[str]:
  """The notes of our AutoAttack and adaptive columns: budgets, segmenter, seconds per model."""
  a, d, e = config.eval.autoattack, config.eval.adaptive, config.eval
  out = []
  timed = {n: m["autoattack"]["seconds"] for n, m in models.items() if "autoattack" in m}
  if timed:
    out.append(f"AutoAttack: the cascade APGD-CE, APGD-T, FAB-T ({a.iterations} iterations, "
               f"up to {a.targets} targets) and Square ({a.queries} queries), each on the images "
               "still robust, masked models on the foreground; seconds per model: "
               + ", ".join(f"{MODEL_LABELS[n]} {s:.1f}" for n, s in timed.items()) + ".")
  timed = {n: m["adaptive"] for n, m in models.items() if "adaptive" in m}
  if timed:
    out.append(f"PGD, masks from the attacked image: the masked model as a pipeline that "
               f"segments the image it receives ({d.segmenter} segmenter at {d.work_size} px, "
               f"on the host) and classifies image x mask; PGD-{d.steps or e.steps} on the "
               "whole image, the gradient through the mask by BPDA (mask constant in the "
               "backward pass). Clean accuracy (masks of the clean images) and seconds per "
               "model: " + ", ".join(f"{MODEL_LABELS[n]} {100 * r['clean']:.1f}%, "
                                     f"{r['seconds']:.1f} s" for n, r in timed.items()) + ".")
  return out


def reliability_notes(models: Mapping[str, dict]) -> list[str]:
  """One line per model: the trust checks that tripped, with their evidence, or that none did."""
  return [f"{MODEL_LABELS[n]}: {m['checks']}" for n, m in models.items() if "checks" in m]


def summary_markdown(config: Any, results: dict, prefix: str = "") -> str:
  """The study's Markdown section (figure links relative to ``prefix``)."""
  from experiments.masks_study import checklist, dimension
  d, tm = results["dataset"], results["threat_model"]
  table_md = io.markdown_table(results["table"]["rows"], results["table"]["columns"], 2)
  curves_md = io.markdown_table(results["curves"]["rows"], results["curves"]["columns"], 2)
  m = config.model
  lines = [
      f"## Foreground attention masks (Table 4 layout) on {label(d['name'])}", "",
      f"{m.name} ({m.variant} variant, width {m.width}), {d['num_train']} training "
      f"images, {d['num_classes']} classes, {d['image_size']} px, masks: {d['mask_source']}. "
      f"Linf eps = {tm['eps'] * 255:.3g}/255; adversarial training with PGD-{tm['train_steps']}"
      f" (step {tm['train_step'] * 255:.3g}/255); evaluation on {d['num_eval']} test images "
      f"with PGD-{tm['eval_steps']} (step 2.5 eps / steps) and APGD-CE-{tm['apgd_steps']}; "
      "'worst case' counts an image only if it survives both. Accuracies in %."]
  if d["name"] in papers.TABLE4:
    lines += ["Ours beside the paper's Table 4 (its rows N X, N X_F, A X, A X_F; 'ours - paper' "
              "in points); APGD, worst case, AutoAttack and PGD with masks from the attacked "
              "image are ours only.", "", table_md]
  else:
    beside = results.get("paper_beside")
    lines += ["", table_md]
    if beside:
      lines += [f"The paper's Table 4 beside ours. **Different datasets**: ours is on "
                f"{label(d['name'])}, the paper's on MS-COCO-IC and GTSRB-IC, so only the "
                "pattern across the four rows can be compared, not the cells:", "",
                io.markdown_table(beside["rows"], beside["columns"], 2)]
  lines += [f"- {n}" for n in extra_column_notes(config, results["models"])] + [""]
  lines += ["Accuracy under PGD vs eps (first "
            f"{results['curves']['examples']} evaluation images):", "", curves_md,
            f"![accuracy vs eps]({prefix}curves.png)", ""]
  notes = reliability_notes(results["models"])
  if notes:
    lines += ["Reliability of the evaluation (checks on the first "
              f"{config.eval.diagnostic_examples} evaluation images):", ""]
    lines += [f"- {n}" for n in notes] + [""]
  ck_notes = checklist.notes(results["models"])
  if ck_notes:
    lines += ["Robustness checklist of each model (first "
              f"{config.eval.checklist.examples} evaluation images; items and evidence in "
              f"[checklist.md]({prefix}checklist.md)):", ""]
    lines += [f"- {n}" for n in ck_notes] + [""]
  if results.get("dimension"):
    lines += ["The paper's future work, the input dimension (rule: "
              "`experiments/masks_study/dimension.py`):", ""]
    lines += dimension.markdown(results["dimension"], prefix)
  lines += ["What the numbers say (the paper's claims first, judged by the rule of "
            "`experiments/masks_study/claims.py`; then the input dimension; then ours):", ""]
  lines += [f"- {s}" for s in results["findings"]]
  return "\n".join(lines) + "\n"


def combined_table(results: Sequence[dict]) -> tuple[list[str], list[dict]]:
  """The paper's two-dataset Table 4 (``table4``) from several studies' ``results.json``."""
  return table4([(r["dataset"]["name"], r["models"]) for r in results])


# The fields that make studies one family: the same model, training attack and evaluation (a
# study without one of our extra columns shows "-" in it).
FAMILY_FIELDS = ("model.name", "model.variant", "model.width", "model.batch_norm",
                 "train.adversarial_init", "train.attack.kind", "train.attack.eps",
                 "train.attack.steps", "train.attack.step_factor", "eval.eps", "eval.steps",
                 "eval.apgd_steps", "eval.restarts", "eval.autoattack.iterations",
                 "eval.autoattack.queries", "eval.autoattack.targets", "eval.adaptive.steps")


def _get(config: Mapping[str, Any], path: str) -> Any:
  for k in path.split("."):
    if not isinstance(config, Mapping) or k not in config:
      return "<absent>"
    config = config[k]
  return config


def check_combinable(studies: Sequence[Mapping[str, Any]]) -> None:
  """The combined Table 4's rule, over ``[{"workdir", "results", "config"}]``.

  Raises:
    ValueError: a dataset that is not one of the paper's; two studies of one dataset (naming
      both and their image sizes); or studies of different families (naming the studies and the
      ``FAMILY_FIELDS`` that differ).
  """
  by_dataset: dict[str, list[Mapping[str, Any]]] = {}
  for s in studies:
    ds = s["results"]["dataset"]["name"]
    if ds not in papers.TABLE4:
      raise ValueError(f"{s['workdir']} is a study of {ds}, not of a dataset of the paper's "
                       f"Table 4 ({', '.join(papers.TABLE4_DATASETS)})")
    by_dataset.setdefault(ds, []).append(s)
  for ds, group in by_dataset.items():
    if len(group) > 1:
      named = ", ".join(f"{s['workdir']} ({s['results']['dataset']['image_size']} px)"
                        for s in group)
      raise ValueError(f"{len(group)} studies of {label(ds)}: {named}; the combined Table 4 "
                       "takes one study per dataset")
  first = studies[0]
  for s in studies[1:]:
    differ = [f"{f}: {_get(first['config'], f)!r} vs {_get(s['config'], f)!r}"
              for f in FAMILY_FIELDS if _get(first["config"], f) != _get(s["config"], f)]
    if differ:
      raise ValueError(f"{first['workdir']} and {s['workdir']} are studies of different "
                       f"settings ({'; '.join(differ)}); the combined Table 4 takes studies of "
                       "one family (e.g. the gtsrb_paper and coco_paper presets)")
