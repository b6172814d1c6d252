r"""The masks paper's Table 4: {full image, masked} x {natural, adversarial training}, VGG-19.

Trains the four models, evaluates natural accuracy and robust accuracy under Linf PGD and APGD
(and their pointwise worst case), and writes into ``--workdir``:

- ``config.json``       the run's configuration (a workdir of another configuration is refused)
- ``table.md/.csv``     Table 4's layout: rows = models, columns = natural / PGD / APGD accuracy (%)
- ``curves.png``        PGD accuracy vs eps for each model; ``curves.md/.csv`` the same numbers
- ``results.json``      every number above (accuracies as fractions; tables show percentages)
- ``summary.md``        the tables, the figure and what the numbers say
- ``metrics.jsonl``     stage events; ``models/<name>/`` each model's config, metrics, checkpoints
- ``eval/<name>.json``  finished evaluations (a restarted run skips finished models/evaluations)

Usage::

  python -m experiments.attention_masks --workdir=runs/masks                 # synthetic signs
  python -m experiments.attention_masks --workdir=runs/masks --quick         # ~1 min smoke run
  python -m experiments.attention_masks --workdir=runs/gtsrb --dataset=gtsrb_ic \
      --data_dir=/data/gtsrb --image_size=48
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax

from experiments import common
from experiments.configs import attention_masks as cfgs
from percadv_jax import io, train

TABLE_METRICS = (("natural", "natural_accuracy"), ("PGD", "pgd_accuracy"),
                 ("APGD", "apgd_accuracy"), ("worst case", "robust_accuracy"))


def train_config(config: cfgs.MasksConfig, name: str, workdir: str = "") -> train.TrainConfig:
  """The TrainConfig of Table 4 model ``name`` (e.g. "masked_adversarial") in ``workdir``."""
  setting, regime = name.split("_")
  adversarial = regime == "adversarial"
  finetune = adversarial and config.adversarial_init == "natural"
  epochs = config.adversarial_epochs if adversarial and config.adversarial_epochs else (
      config.epochs)
  return train.TrainConfig(
      model=config.model,
      model_kwargs={"variant": "small", "width": config.width, "batch_norm": config.batch_norm},
      batch_size=config.batch_size, epochs=epochs, seed=config.seed,
      adversarial=adversarial, masked=setting == "masked",
      init_from=os.path.join(workdir, "models", f"{setting}_natural") if finetune else "",
      attack=train.AttackConfig(eps=config.eps, step_size=config.step_size,
                                steps=config.train_attack_steps),
      optimizer=train.OptimizerConfig(name=config.optimizer, learning_rate=config.learning_rate,
                                      schedule=config.schedule,
                                      warmup_steps=config.warmup_steps,
                                      weight_decay=config.weight_decay),
      checkpoint_every=config.checkpoint_every, log_every=20)


def validate(config: cfgs.MasksConfig) -> None:
  """Raises ValueError naming the first bad setting."""
  from percadv_jax import checks
  checks.check_choice(config.dataset, "dataset", set(common.DATASETS))
  for name in config.models:
    checks.check_choice(name, "model name", set(cfgs.MODEL_NAMES))
  if not config.models:
    raise ValueError("models is empty: choose some of " + ", ".join(cfgs.MODEL_NAMES))
  for f in ("num_train", "num_test", "eval_examples", "curve_examples", "warmup_steps"):
    checks.check_positive(getattr(config, f), f, allow_zero=True)
  for f in ("width", "batch_size", "epochs", "learning_rate", "eps", "step_size",
            "train_attack_steps", "eval_attack_steps", "apgd_steps", "eval_restarts",
            "checkpoint_every", "eval_batch_size"):
    checks.check_positive(getattr(config, f), f)
  checks.check_choice(config.adversarial_init, "adversarial_init", {"natural", "scratch"})
  checks.check_positive(config.adversarial_epochs, "adversarial_epochs", allow_zero=True)
  if config.adversarial_init == "natural":
    for name in config.models:
      if name.endswith("_adversarial") and name.replace("adversarial", "natural") not in (
          config.models):
        raise ValueError(f"adversarial_init='natural': {name} fine-tunes "
                         f"{name.replace('adversarial', 'natural')}; add it to models or use "
                         "adversarial_init='scratch'")
  if any(e < 0 for e in config.curve_eps):
    raise ValueError(f"curve_eps must be >= 0, got {config.curve_eps}")
  train_config(config, config.models[0]).validate()


def _load(config: cfgs.MasksConfig):
  train_src = common.load_split(config.dataset, "train", data_dir=config.data_dir,
                                image_size=config.image_size, num_examples=config.num_train,
                                seed=config.seed)
  test_src = common.load_split(config.dataset, "test", data_dir=config.data_dir,
                               image_size=config.image_size, num_examples=config.num_test,
                               seed=config.seed)
  if config.dataset != "synthetic_signs" and config.num_train:
    train_data = train.ArrayData(common.subset_arrays(train_src, config.num_train,
                                                      seed=config.seed))
  else:
    train_data = train.ArrayData(train_src)
  n_eval = min(config.eval_examples or len(test_src), config.num_test or len(test_src))
  eval_arrays = common.subset_arrays(test_src, n_eval, seed=config.seed + 1)
  return train_src, train_data, eval_arrays


def _evaluate(config: cfgs.MasksConfig, state: train.TrainState, masked: bool,
              eval_arrays: dict, index: int) -> dict:
  attack = train.AttackConfig(eps=config.eps, step_size=config.step_size,
                              steps=config.eval_attack_steps, restarts=config.eval_restarts)
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 7919), index)
  variables = state.variables()
  m = config.curve_examples or len(eval_arrays["label"])
  # One attack batch shape for the evaluation and the curves: each attack compiles once.
  bs = min(config.eval_batch_size, m, len(eval_arrays["label"]))
  with common.Timer() as t:
    r = train.evaluate(state.apply_fn, variables, eval_arrays, attack=attack, key=key,
                       masked=masked, batch_size=bs, apgd_steps=config.apgd_steps)
  out = {k: v for k, v in r.items() if k != "per_example"}
  out["seconds"] = t.seconds
  curve_data = {k: v[:m] for k, v in eval_arrays.items()}
  with common.Timer() as t:
    out["curve"] = train.accuracy_vs_eps(state.apply_fn, variables, curve_data,
                                         eps_values=config.curve_eps, attack=attack, key=key,
                                         masked=masked, batch_size=bs)
  out["curve_seconds"] = t.seconds
  return out


def _table(config: cfgs.MasksConfig, models: dict) -> tuple[list[str], list[dict]]:
  ds = config.dataset
  columns = ["model"] + [f"{ds} {label} (%)" for label, _ in TABLE_METRICS]
  rows = []
  for name, m in models.items():
    row = {"model": cfgs.MODEL_LABELS[name]}
    for label, key in TABLE_METRICS:
      row[f"{ds} {label} (%)"] = common.pct(m[key])
    rows.append(row)
  return columns, rows


def _curve_table(config: cfgs.MasksConfig, models: dict) -> tuple[list[str], list[dict]]:
  columns = ["eps (x255)"] + [cfgs.MODEL_LABELS[n] for n in models]
  rows = []
  for i, eps in enumerate(config.curve_eps):
    row = {"eps (x255)": round(eps * 255, 2)}
    for n, m in models.items():
      row[cfgs.MODEL_LABELS[n]] = common.pct(m["curve"][i]["pgd_accuracy"])
    rows.append(row)
  return columns, rows


def _figure(config: cfgs.MasksConfig, models: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  styles = {"full_natural": ("C0", "--"), "full_adversarial": ("C0", "-"),
            "masked_natural": ("C3", "--"), "masked_adversarial": ("C3", "-")}
  for name, m in models.items():
    c, ls = styles[name]
    eps = [r["eps"] * 255 for r in m["curve"]]
    ax.plot(eps, [100 * r["pgd_accuracy"] for r in m["curve"]], color=c, linestyle=ls,
            marker="o", label=cfgs.MODEL_LABELS[name])
  ax.axvline(config.eps * 255, color="grey", lw=0.8, ls=":")
  ax.set_xlabel("Linf eps (x 1/255)")
  ax.set_ylabel(f"PGD-{config.eval_attack_steps} accuracy (%)")
  ax.set_title(f"Robustness on {config.dataset} ({config.model})")
  ax.set_ylim(-2, 102)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  io.save_figure(fig, path)


def findings(models: dict) -> list[str]:
  """Sentences stating what the numbers show (whichever way they come out)."""
  out = []
  def get(n, k):
    return models[n][k] if n in models else None
  for regime in ("natural", "adversarial"):
    f, m = get(f"full_{regime}", "pgd_accuracy"), get(f"masked_{regime}", "pgd_accuracy")
    if f is not None and m is not None:
      verb = "raises" if m > f else ("does not change" if m == f else "lowers")
      out.append(f"With {regime} training, masking the background {verb} PGD accuracy: "
                 f"{100 * f:.1f}% (full image) -> {100 * m:.1f}% (masked).")
  for setting in ("full", "masked"):
    n, a = get(f"{setting}_natural", "pgd_accuracy"), get(f"{setting}_adversarial",
                                                          "pgd_accuracy")
    if n is not None and a is not None:
      verb = "raises" if a > n else ("does not change" if a == n else "lowers")
      out.append(f"On {'full images' if setting == 'full' else 'masked images'}, adversarial "
                 f"training {verb} PGD accuracy: {100 * n:.1f}% -> {100 * a:.1f}% (natural "
                 f"accuracy {100 * get(f'{setting}_natural', 'natural_accuracy'):.1f}% -> "
                 f"{100 * get(f'{setting}_adversarial', 'natural_accuracy'):.1f}%).")
  for name, m in models.items():
    if m["apgd_accuracy"] < m["pgd_accuracy"]:
      out.append(f"APGD finds more adversarial examples than PGD on "
                 f"'{cfgs.MODEL_LABELS[name]}' ({100 * m['pgd_accuracy']:.1f}% -> "
                 f"{100 * m['apgd_accuracy']:.1f}%).")
  return out


def run(config: cfgs.MasksConfig, workdir: str) -> dict:
  """Runs (or resumes) the study in ``workdir``; returns the ``results.json`` dict."""
  validate(config)
  common.prepare_workdir(workdir, config)
  common.log(workdir, "start")
  train_src, train_data, eval_arrays = _load(config)
  info = train_src.info
  models: dict[str, Any] = {}
  for index, name in enumerate(cfgs.MODEL_NAMES):
    if name not in config.models:
      continue
    tc = train_config(config, name, workdir)
    mdir = os.path.join(workdir, "models", name)
    eval_path = os.path.join(workdir, "eval", f"{name}.json")
    if os.path.exists(eval_path):
      models[name] = io.read_json(eval_path)
      common.log(workdir, "skip", model=name, reason="evaluation finished earlier")
      continue
    with common.Timer() as t:
      state = train.fit(tc, mdir, train_data, num_classes=info.num_classes, desc=name)
    common.log(workdir, "trained", model=name, seconds=t.seconds, steps=int(state.step))
    hist = io.read_jsonl(os.path.join(mdir, "metrics.jsonl"))

    def compute(state=state, tc=tc, index=index, hist=hist):
      r = _evaluate(config, state, tc.masked, eval_arrays, index)
      r.update(masked=tc.masked, adversarial=tc.adversarial, train_steps=int(state.step),
               final_train_loss=hist[-1]["loss"] if hist else None,
               final_train_accuracy=hist[-1]["accuracy"] if hist else None)
      return r

    models[name] = common.cached(eval_path, compute)
    common.log(workdir, "evaluated", model=name,
               **{k: models[name][k] for k in ("natural_accuracy", "pgd_accuracy",
                                                "apgd_accuracy", "robust_accuracy")})
  columns, rows = _table(config, models)
  table_md = io.write_table(os.path.join(workdir, "table"), rows, columns, digits=2)
  ccols, crows = _curve_table(config, models)
  curves_md = io.write_table(os.path.join(workdir, "curves"), crows, ccols, digits=2)
  _figure(config, models, os.path.join(workdir, "curves.png"))
  results = {
      "study": "attention_masks",
      "dataset": {"name": config.dataset, "num_classes": info.num_classes,
                  "image_size": info.image_size, "num_train": len(train_data),
                  "num_eval": int(len(eval_arrays["label"])), "mask_source": info.mask_source},
      "threat_model": {"norm": "linf", "eps": config.eps, "step_size": config.step_size,
                       "train_steps": config.train_attack_steps,
                       "eval_steps": config.eval_attack_steps, "apgd_steps": config.apgd_steps,
                       "restarts": config.eval_restarts},
      "models": models,
      "table": {"columns": columns, "rows": rows},
      "curves": {"columns": ccols, "rows": crows},
      "findings": findings(models),
  }
  io.write_json(os.path.join(workdir, "results.json"), results)
  del table_md, curves_md
  summary = summary_markdown(config, results)
  with io.atomic_open(os.path.join(workdir, "summary.md")) as f:
    f.write(summary)
  common.log(workdir, "done")
  return results


def summary_markdown(config: cfgs.MasksConfig, results: dict, prefix: str = "") -> str:
  """The study's Markdown section (figure links relative to ``prefix``)."""
  d, tm = results["dataset"], results["threat_model"]
  table_md = io.markdown_table(results["table"]["rows"], results["table"]["columns"], 2)
  curves_md = io.markdown_table(results["curves"]["rows"], results["curves"]["columns"], 2)
  lines = [
      f"## Foreground attention masks (Table 4 layout) on {d['name']}", "",
      f"{config.model} (small-input variant, width {config.width}), {d['num_train']} training "
      f"images, {d['num_classes']} classes, {d['image_size']} px, masks: {d['mask_source']}. "
      f"Linf eps = {tm['eps'] * 255:.3g}/255; adversarial training with PGD-{tm['train_steps']}"
      f" (step {tm['step_size'] * 255:.3g}/255); evaluation on {d['num_eval']} test images "
      f"with PGD-{tm['eval_steps']} and APGD-CE-{tm['apgd_steps']}; 'worst case' counts an "
      "image only if it survives both. Accuracies in %.", "", table_md,
      "Accuracy under PGD vs eps (first "
      f"{config.curve_examples} evaluation images):", "", curves_md,
      f"![accuracy vs eps]({prefix}curves.png)", "", "What the numbers say:", ""]
  lines += [f"- {s}" for s in results["findings"]]
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- flags

def _define_flags():
  from absl import flags
  from experiments.configs import attention_masks as c
  d = c.MasksConfig()
  flags.DEFINE_string("workdir", "runs/attention_masks", "Output directory (resumable).")
  flags.DEFINE_enum("preset", "default", sorted(c.PRESETS), "Base configuration.")
  flags.DEFINE_bool("quick", False, "Shorthand for --preset=quick (about a minute).")
  flags.DEFINE_enum("dataset", None, list(common.DATASETS), f"Dataset (default {d.dataset}).")
  flags.DEFINE_string("data_dir", None, "Prepared data / cache directory.")
  flags.DEFINE_integer("image_size", None, "Image side; default: the dataset's.", lower_bound=32)
  flags.DEFINE_integer("num_train", None, "Training examples (0 = all).", lower_bound=0)
  flags.DEFINE_integer("num_test", None, "Test examples (0 = all).", lower_bound=0)
  flags.DEFINE_enum("model", None, ["vgg19", "mobilenet_v2"], f"Network (default {d.model}).")
  flags.DEFINE_float("width", None, f"Channel multiplier (default {d.width}).", lower_bound=0)
  flags.DEFINE_bool("batch_norm", None, f"BatchNorm in VGG-19 (default {d.batch_norm}).")
  flags.DEFINE_integer("batch_size", None, f"Batch size (default {d.batch_size}).",
                       lower_bound=1)
  flags.DEFINE_integer("epochs", None, f"Epochs (default {d.epochs}).", lower_bound=1)
  flags.DEFINE_enum("optimizer", None, ["sgd", "adam", "adamw"], "Optimiser.")
  flags.DEFINE_float("learning_rate", None, "Peak learning rate.", lower_bound=0)
  flags.DEFINE_enum("schedule", None, ["constant", "cosine", "piecewise"], "LR schedule.")
  flags.DEFINE_integer("warmup_steps", None, "Linear warm-up steps.", lower_bound=0)
  flags.DEFINE_float("weight_decay", None, "Weight decay.", lower_bound=0)
  flags.DEFINE_integer("seed", None, "Seed.")
  flags.DEFINE_string("eps", None, "Linf radius, e.g. 8/255 (default 8/255).")
  flags.DEFINE_string("step_size", None, "PGD step, e.g. 2/255 (default 2/255).")
  flags.DEFINE_integer("train_attack_steps", None, "PGD steps in training (default 7).",
                       lower_bound=1)
  flags.DEFINE_integer("eval_attack_steps", None, "PGD steps in evaluation (default 10).",
                       lower_bound=1)
  flags.DEFINE_integer("apgd_steps", None, "APGD steps in evaluation (default 10).",
                       lower_bound=1)
  flags.DEFINE_integer("eval_restarts", None, "Random restarts of the attacks.", lower_bound=1)
  flags.DEFINE_integer("eval_examples", None, "Test images attacked (0 = all).", lower_bound=0)
  flags.DEFINE_list("curve_eps", None, "Eps values of the curves, e.g. 0,4/255,8/255.")
  flags.DEFINE_integer("curve_examples", None, "Images per curve point.", lower_bound=0)
  flags.DEFINE_list("models", None, "Subset of " + ",".join(c.MODEL_NAMES))
  flags.DEFINE_integer("checkpoint_every", None, "Checkpoint interval (steps).", lower_bound=1)
  flags.DEFINE_integer("eval_batch_size", None, "Attack batch size.", lower_bound=1)
  flags.DEFINE_enum("adversarial_init", None, ["natural", "scratch"],
                    "Adversarial models: fine-tune the natural one or train from scratch "
                    f"(default {d.adversarial_init}).")
  flags.DEFINE_integer("adversarial_epochs", None, "Adversarial training epochs (0 = --epochs).",
                       lower_bound=0)

  def _fractions_ok(v):
    if v is None:
      return True
    try:
      return all(common.parse_fraction(s) >= 0 for s in (v if isinstance(v, list) else [v]))
    except ValueError:
      return False
  for name in ("eps", "step_size", "curve_eps"):
    flags.register_validator(name, _fractions_ok,
                             f"--{name} must be non-negative numbers like 8/255 or 0.03")
  flags.register_validator(
      "models", lambda v: v is None or (v and set(v) <= set(c.MODEL_NAMES)),
      "--models must be a comma-separated subset of " + ",".join(c.MODEL_NAMES))


def config_from_flags(flag_values) -> cfgs.MasksConfig:
  """The preset named by --preset/--quick with every flag given on the command line applied."""
  fv = flag_values
  base = cfgs.PRESETS["quick" if fv.quick else fv.preset]()
  over: dict[str, Any] = {}
  for f in dataclasses.fields(base):
    if f.name not in fv or fv[f.name].value is None:
      continue
    v = fv[f.name].value
    if f.name in ("eps", "step_size"):
      v = common.parse_fraction(v)
    elif f.name == "curve_eps":
      v = tuple(common.parse_fraction(s) for s in v)
    elif f.name == "models":
      v = tuple(v)
    over[f.name] = v
  return dataclasses.replace(base, **over)


def main(argv: Sequence[str]) -> None:
  from absl import flags
  results = common.run_from_flags(argv, config_from_flags=config_from_flags, validate=validate,
                                  run=run)
  print(open(os.path.join(flags.FLAGS.workdir, "table.md")).read())
  for s in results["findings"]:
    print("-", s)
  print(f"results in {os.path.abspath(flags.FLAGS.workdir)}")


if __name__ == "__main__":
  from absl import app
  _define_flags()
  app.run(main)
