"""The masks paper's Table 4 study: train the four models, evaluate them, write the report.

``run(config, workdir)`` (config: ``experiments/configs/attention_masks.py``) trains
{full image, masked} x {natural, adversarial} models (``train``), evaluates natural accuracy and
robust accuracy under Linf PGD and APGD and their pointwise worst case, plus accuracy-vs-eps
curves (``evaluate``), and writes into ``workdir``:

- ``config.json``       the run's configuration (a workdir of another configuration is refused)
- ``table.md/.csv``     Table 4 in the paper's layout (rows N X, N X_F, A X, A X_F): natural and
                        PGD accuracy (%), each as ours, the paper's and ours minus the paper's on
                        its datasets; then our APGD, worst-case and AutoAttack accuracy and, for
                        the masked models, PGD with masks from the attacked image (``report``)
- ``curves.png``        PGD accuracy vs eps for each model; ``curves.md/.csv`` the same numbers
- ``training.png``      each model's training loss and accuracy against epochs (its metrics)
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
- ``checklist.md/.json`` the robustness checklist of each model (``checklist``: success vs eps,
                        more iterations, more restarts, FGSM vs PGD, Square vs the white-box
                        attacks, transfer from the full-image model of the same training, the
                        hyper-parameters, the trust checks; each pass or flag with its numbers),
                        one line per model in ``summary.md``; ``eval.checklist.enabled``
- ``metrics.jsonl``     stage events; ``models/<name>/`` each model's config, metrics, checkpoints
- ``eval/<name>.json``, ``evaluations/``: finished evaluations (a rerun skips them);
  ``per_example/<name>.npz``: each model's per-image outcomes and attacked pixels;
  ``checklist/<name>.npz``: a full-image model's PGD examples (the transfer source)
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from experiments import common, papers
from experiments.configs import data as data_config
from experiments.configs.attention_masks import MODEL_NAMES
from experiments.masks_study import checklist, claims, dimension, report
from experiments.masks_study.evaluate import (evaluate_model, load_per_example,
                                              validate_extra_columns)
from experiments.masks_study.train import model_kwargs, train_config, train_model
from percadv_jax import checks, io, models as models_lib, parallel
from percadv_jax import train as train_lib

__all__ = ["run", "validate", "check_inputs", "read_evaluation", "train_config", "train_model",
           "evaluate_model", "report", "claims", "dimension", "checklist"]


def validate(config: Any) -> None:
  """Checks the whole configuration before any work (changing nothing); raises ValueError
  naming the field. What the data decides is checked by ``check_inputs``."""
  common.check_names(config.models, "models")
  checks.check_choice(config.data.dataset, "data.dataset", common.DATASETS)
  if not config.models:
    raise ValueError("models is empty: choose some of " + ", ".join(MODEL_NAMES))
  for name in config.models:
    checks.check_choice(name, "models entry", MODEL_NAMES)
  checks.check_int(config.seed, "seed", minimum=0)
  if config.data.dataset != "synthetic_signs":
    common.check_data_dir(config.data.dataset, config.data.data_dir)
  for f in ("num_train", "num_test", "image_size"):
    checks.check_positive(config.data[f], f"data.{f}", allow_zero=True)
  for f in ("examples", "curve_examples"):
    checks.check_positive(config.eval[f], f"eval.{f}", allow_zero=True)
  for f in ("eps", "steps", "apgd_steps", "restarts", "batch_size"):
    checks.check_positive(config.eval[f], f"eval.{f}")
  checklist.options(config)
  for e in config.eval.curve_eps:
    checks.check_positive(e, "eval.curve_eps entry", allow_zero=True)
  validate_extra_columns(config)
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
  # raises on a bad name / variant / width / initializer
  models_lib.get_model(config.model.name, num_classes=2, **model_kwargs(config))


def _load(config: Any):
  d = config.data
  common.check_prepared(d, ("train", "test"))
  size, opts = d.image_size or None, data_config.options(d)
  classes = d.num_classes if d.dataset == "synthetic_signs" else None
  train_src = common.load_split(d.dataset, "train", data_dir=d.data_dir or None,
                                image_size=size, num_examples=d.num_train, seed=config.seed,
                                num_classes=classes, **opts)
  test_src = common.load_split(d.dataset, "test", data_dir=d.data_dir or None, image_size=size,
                               num_examples=d.num_test, seed=config.seed, num_classes=classes,
                               **opts)
  if d.dataset != "synthetic_signs" and d.num_train:
    train_data = train_lib.ArrayData(common.subset_arrays(train_src, d.num_train, seed=config.seed))
  else:
    train_data = train_lib.ArrayData(train_src)
  n_eval = min(config.eval.examples or len(test_src), d.num_test or len(test_src))
  eval_arrays = common.subset_arrays(test_src, n_eval, seed=config.seed + 1)
  return train_src, train_data, eval_arrays


def check_inputs(config: Any) -> tuple:
  """Opens the data and checks what it decides, before the workdir is locked: every model
  trains on this many images (batch size, guard split) and accepts their size.

  Returns:
    ``_load(config)``: the training source, the training data and the evaluation arrays.

  Raises:
    ValueError: a missing cache (with the command that prepares it), a batch size larger
      than the training set or (``train.data_parallel``) not a multiple of the device count,
      images too small for the model.
  """
  loaded = _load(config)
  train_src, train_data, _ = loaded
  image_shape = train_data.batch(np.arange(1))["image"].shape[1:]
  for name in config.models:
    tc = train_config(config, name)
    train_idx, _ = train_lib.split_guard(tc, len(train_data))
    try:
      train_lib.total_steps(tc, len(train_idx))
      train_lib.check_batch_split(tc)
    except ValueError as e:
      raise ValueError(f"train.batch_size: {e}") from None
    train_lib.build(tc, num_classes=train_src.info.num_classes, image_shape=image_shape,
                    total=1, abstract=True)  # the model's own size checks, nothing computed
  return loaded


EVAL_KEYS = ("clean", "robust", "per_attack", "curve", "masked", "adversarial")


def read_evaluation(path: str) -> dict:
  """A finished model's ``eval/<name>.json``, checked to hold what the report reads.

  Raises:
    ValueError: not valid JSON, or a JSON of another schema (naming the file and the missing
      keys; deleting it makes the rerun evaluate the model again).
  """
  r = io.read_json(path)
  missing = ([k for k in EVAL_KEYS if k not in r] if isinstance(r, dict) else list(EVAL_KEYS))
  if not missing:
    attacks = r["per_attack"] if isinstance(r["per_attack"], dict) else {}
    missing = [f"per_attack.{a}" for a in ("pgd", "apgd") if a not in attacks]
    if not isinstance(r["curve"], list) or not all(
        isinstance(c, dict) and "eps" in c and "pgd" in c.get("per_attack", {})
        for c in r["curve"]):
      missing.append("curve[].eps / curve[].per_attack.pgd")
  if missing:
    what = (f"lacks {', '.join(missing)}" if isinstance(r, dict)
            else f"is a {type(r).__name__}, not an object")
    raise ValueError(f"{path} is not a finished evaluation of this study (it {what}); delete "
                     "it to evaluate that model again")
  return r


def _final_record(workdir: str, name: str, steps: int) -> dict:
  """The model's last training record (loss, accuracy) and its step, from its metrics.jsonl.

  A run stopped by the overfitting guard logs its last step before ``steps``; any other
  finished run logs step ``steps``. When the log's last record is of another step (lost or
  damaged), the loss of the step it has is reported with a warning naming the file.
  """
  path = os.path.join(workdir, "models", name, "metrics.jsonl")
  records = io.read_jsonl(path)
  hist = [r for r in records if "loss" in r]
  stops = [r["step"] for r in records if r.get("event") == "catastrophic_overfitting"]
  expected = stops[-1] if stops else steps
  last = hist[-1] if hist else {}
  if last.get("step") != expected:
    found = f"ends at step {last['step']}" if hist else "holds no training record"
    warnings.warn(f"{path} {found}, but training ended at step {expected} (the record of the "
                  "last step is missing or damaged); final_train_loss and final_train_accuracy "
                  f"are {'those of step ' + str(last['step']) if hist else 'None'} "
                  "(final_train_step says which)", stacklevel=2)
  return {"final_train_loss": last.get("loss"), "final_train_accuracy": last.get("accuracy"),
          "final_train_step": last.get("step")}


def run(config: Any, workdir: str) -> dict | None:
  """Runs (or resumes) the study in ``workdir``; returns the ``results.json`` dict.

  In a multi-process run (``jax.distributed``; ``train.data_parallel`` trains each model on
  every device of every process, the evaluations are sharded over them too) every process
  calls it with the same arguments on a shared ``workdir``: process 0 writes the files and
  returns the results, the others return None.
  """
  validate(config)
  train_src, train_data, eval_arrays = check_inputs(config)
  main = parallel.is_main_process()
  io.lock_config(workdir, config, hold=main)  # the other processes share process 0's run
  if main:
    io.log_event(workdir, "start")
  info = train_src.info
  results_models: dict[str, Any] = {}
  for index, name in enumerate(MODEL_NAMES):
    if name not in config.models:
      continue
    eval_path = os.path.join(workdir, "eval", f"{name}.json")
    if os.path.exists(eval_path):
      results_models[name] = read_evaluation(eval_path)
      if main:
        io.log_event(workdir, "skip", model=name, reason="evaluation finished earlier")
      continue
    state = train_model(config, name, workdir, train_data, info.num_classes)
    tc = train_config(config, name, workdir)
    if not main:  # the evaluation's collectives need every process; process 0 writes
      evaluate_model(config, state, name=name, masked=tc.masked, eval_arrays=eval_arrays,
                     index=index, workdir=workdir)
      continue
    final = _final_record(workdir, name, int(state.step))

    def compute(state=state, tc=tc, index=index, final=final, name=name):
      r = evaluate_model(config, state, name=name, masked=tc.masked, eval_arrays=eval_arrays,
                         index=index, workdir=workdir)
      r.update(masked=tc.masked, adversarial=tc.adversarial, train_steps=int(state.step),
               **final)
      return r

    results_models[name] = io.cached(eval_path, compute)
    m = results_models[name]
    io.log_event(workdir, "evaluated", model=name, clean=m["clean"], robust=m["robust"],
                 **m["per_attack"])
  parallel.sync("experiments.masks_study: evaluated")
  if not main:
    return None
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
  report.training_figure({report.label(ds): workdir}, os.path.join(workdir, "training.png"),
                         title=f"Training {title}",
                         num_classes={report.label(ds): info.num_classes})
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
                       "restarts": config.eval.restarts,
                       "autoattack": config.eval.autoattack.to_dict(),
                       "adaptive": config.eval.adaptive.to_dict()},
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
  checklist.write(workdir, results_models)
  with io.atomic_open(os.path.join(workdir, "summary.md")) as f:
    f.write(report.summary_markdown(config, results))
  io.log_event(workdir, "done")
  return results
