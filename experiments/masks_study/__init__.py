"""The masks paper's Table 4 study: train the four models, evaluate them, write the report.

``run(config, workdir)`` (config: ``experiments/configs/attention_masks.py``) trains
{full image, masked} x {natural, adversarial} models (``train``), evaluates natural accuracy and
robust accuracy under Linf PGD and APGD and their pointwise worst case, plus accuracy-vs-eps
curves (``evaluate``), and writes into ``workdir``:

- ``config.json``       the run's configuration (a workdir of another configuration is refused)
- ``table.md/.csv``     Table 4 in the paper's layout (rows N X, N X_F, A X, A X_F): natural and
                        PGD accuracy (%), each as ours, the paper's and ours minus the paper's on
                        its datasets; then our APGD and worst-case accuracy (``report``)
- ``curves.png``        PGD accuracy vs eps for each model; ``curves.md/.csv`` the same numbers
- ``dimension.md/.csv``, ``dimension_curves.md/.csv``, ``dimension.png``: the paper's future
                        work, PGD robustness against the number of attacked pixels and the curves
                        against eps x sqrt(d) (``dimension``)
- ``results.json``      every number above (accuracies as fractions; tables show percentages),
                        the paper's Table 4 (``paper``), its claims judged with paired bootstrap
                        intervals over the test images (``claims``), the findings
- ``summary.md``        the tables, the figures and the findings: the paper's claims (``claims``:
                        holds / direction holds / does not hold), the input-dimension finding,
                        then what our point estimates show; on a dataset the paper does not use,
                        the paper's Table 4 beside ours, labelled as other datasets
- ``metrics.jsonl``     stage events; ``models/<name>/`` each model's config, metrics, checkpoints
- ``eval/<name>.json``, ``evaluations/``: finished evaluations (a rerun skips them);
  ``per_example/<name>.npz``: each model's per-image outcomes and attacked pixels
"""

from __future__ import annotations

import os
from typing import Any

from experiments import common, papers
from experiments.configs import data as data_config
from experiments.configs.attention_masks import MODEL_NAMES
from experiments.masks_study import claims, dimension, report
from experiments.masks_study.evaluate import evaluate_model, load_per_example
from experiments.masks_study.train import train_config, train_model
from percadv_jax import checks, io, models as models_lib
from percadv_jax import train as train_lib

__all__ = ["run", "validate", "train_config", "train_model", "evaluate_model", "report",
           "claims", "dimension"]


def validate(config: Any) -> None:
  """Checks the whole configuration before any work; raises ValueError naming the field."""
  if isinstance(config.models, str):
    config.models = tuple(s.strip() for s in config.models.split(",") if s.strip())
  if any("," in m for m in config.models):
    config.models = tuple(s.strip() for m in config.models for s in m.split(",") if s.strip())
  checks.check_choice(config.data.dataset, "data.dataset", common.DATASETS)
  if not config.models:
    raise ValueError("models is empty: choose some of " + ", ".join(MODEL_NAMES))
  for name in config.models:
    checks.check_choice(name, "models entry", MODEL_NAMES)
  if config.data.dataset != "synthetic_signs":
    common.check_data_dir(config.data.dataset, config.data.data_dir)
  for f in ("num_train", "num_test", "image_size"):
    checks.check_positive(config.data[f], f"data.{f}", allow_zero=True)
  for f in ("examples", "curve_examples"):
    checks.check_positive(config.eval[f], f"eval.{f}", allow_zero=True)
  for f in ("eps", "steps", "apgd_steps", "restarts", "batch_size"):
    checks.check_positive(config.eval[f], f"eval.{f}")
  for e in config.eval.curve_eps:
    checks.check_positive(e, "eval.curve_eps entry", allow_zero=True)
  t = config.train
  checks.check_choice(t.adversarial_init, "train.adversarial_init", ("natural", "scratch"))
  checks.check_positive(t.adversarial_epochs, "train.adversarial_epochs", allow_zero=True)
  if t.adversarial_init == "natural":
    for name in config.models:
      nat = name.replace("adversarial", "natural")
      if name.endswith("_adversarial") and nat not in config.models:
        raise ValueError(f"train.adversarial_init='natural': {name} fine-tunes {nat}; add it "
                         "to models or use train.adversarial_init='scratch'")
  for name in config.models:
    train_config(config, name).validate()
  m = config.model
  kw = ({"variant": m.variant, "width": m.width, "batch_norm": m.batch_norm}
        if m.name == "vgg19" else {"width": m.width})
  models_lib.get_model(m.name, num_classes=2, **kw)  # raises on a bad name / variant / width


def _load(config: Any):
  d = config.data
  size, opts = d.image_size or None, data_config.options(d)
  train_src = common.load_split(d.dataset, "train", data_dir=d.data_dir or None,
                                image_size=size, num_examples=d.num_train, seed=config.seed,
                                **opts)
  test_src = common.load_split(d.dataset, "test", data_dir=d.data_dir or None, image_size=size,
                               num_examples=d.num_test, seed=config.seed, **opts)
  if d.dataset != "synthetic_signs" and d.num_train:
    train_data = train_lib.ArrayData(common.subset_arrays(train_src, d.num_train, seed=config.seed))
  else:
    train_data = train_lib.ArrayData(train_src)
  n_eval = min(config.eval.examples or len(test_src), d.num_test or len(test_src))
  eval_arrays = common.subset_arrays(test_src, n_eval, seed=config.seed + 1)
  return train_src, train_data, eval_arrays


def run(config: Any, workdir: str) -> dict:
  """Runs (or resumes) the study in ``workdir``; returns the ``results.json`` dict."""
  validate(config)
  io.lock_config(workdir, config)
  io.log_event(workdir, "start")
  train_src, train_data, eval_arrays = _load(config)
  info = train_src.info
  results_models: dict[str, Any] = {}
  for index, name in enumerate(MODEL_NAMES):
    if name not in config.models:
      continue
    eval_path = os.path.join(workdir, "eval", f"{name}.json")
    if os.path.exists(eval_path):
      results_models[name] = io.read_json(eval_path)
      io.log_event(workdir, "skip", model=name, reason="evaluation finished earlier")
      continue
    state = train_model(config, name, workdir, train_data, info.num_classes)
    tc = train_config(config, name, workdir)
    hist = [r for r in io.read_jsonl(os.path.join(workdir, "models", name, "metrics.jsonl"))
            if "loss" in r]

    def compute(state=state, tc=tc, index=index, hist=hist, name=name):
      r = evaluate_model(config, state, name=name, masked=tc.masked, eval_arrays=eval_arrays,
                         index=index, workdir=workdir)
      r.update(masked=tc.masked, adversarial=tc.adversarial, train_steps=int(state.step),
               final_train_loss=hist[-1]["loss"] if hist else None,
               final_train_accuracy=hist[-1]["accuracy"] if hist else None)
      return r

    results_models[name] = io.cached(eval_path, compute)
    m = results_models[name]
    io.log_event(workdir, "evaluated", model=name, clean=m["clean"], robust=m["robust"],
                 **m["per_attack"])
  return write_report(config, workdir, results_models, info=info, num_train=len(train_data),
                      num_eval=int(len(eval_arrays["label"])))


def write_report(config: Any, workdir: str, results_models: dict, *, info: Any, num_train: int,
                 num_eval: int) -> dict:
  """Writes the tables, curves, figures, results.json and summary.md; returns the results."""
  ds = config.data.dataset
  columns, rows = report.table(ds, results_models)
  io.write_table(os.path.join(workdir, "table"), rows, columns, digits=2)
  ccols, crows = report.curve_table(config.eval.curve_eps, results_models)
  io.write_table(os.path.join(workdir, "curves"), crows, ccols, digits=2)
  title = f"on {report.label(ds)} ({config.model.name})"
  report.figure(results_models, os.path.join(workdir, "curves.png"), eps=config.eval.eps,
                steps=config.eval.steps, title=f"Robustness {title}")
  per_example = load_per_example(workdir, results_models)
  judged = claims.judge(ds, results_models, per_example)
  curve_examples = min(config.eval.curve_examples or num_eval, num_eval)
  dim = dimension.write(workdir, results_models, per_example, eps=config.eval.eps,
                        examples=curve_examples,
                        title=f"Input dimension {title}")
  beside = None
  if ds not in papers.TABLE4:
    bcols, brows = report.paper_beside(ds, results_models)
    beside = {"columns": bcols, "rows": brows}
  results = {
      "study": "attention_masks",
      "dataset": {"name": ds, "num_classes": info.num_classes, "image_size": info.image_size,
                  "num_train": num_train, "num_eval": num_eval,
                  "mask_source": info.mask_source},
      "threat_model": {"norm": "linf", "eps": config.eval.eps,
                       "train_step": train_config(config, MODEL_NAMES[1]).attack.step,
                       "train_steps": config.train.attack.steps,
                       "eval_steps": config.eval.steps, "apgd_steps": config.eval.apgd_steps,
                       "restarts": config.eval.restarts},
      "models": results_models,
      "table": {"columns": columns, "rows": rows},
      "curves": {"columns": ccols, "rows": crows, "examples": curve_examples},
      "paper": {"table4": papers.TABLE4.get(ds)},
      "paper_beside": beside,
      "claims": judged,
      "dimension": dim,
      "findings": ([c["text"] for c in judged]
                   + [f["text"] for f in (dim or {}).get("findings", [])]
                   + report.findings(results_models)),
  }
  io.write_json(os.path.join(workdir, "results.json"), results)
  with io.atomic_open(os.path.join(workdir, "summary.md")) as f:
    f.write(report.summary_markdown(config, results))
  io.log_event(workdir, "done")
  return results
