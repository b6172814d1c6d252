"""Evaluating a Table 4 model: natural, PGD, APGD and worst-case accuracy, and the eps curves."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from experiments import common, evaluation
from percadv_jax import attacks, train


def evaluate_model(config: Any, state: train.TrainState, *, name: str, masked: bool,
                   eval_arrays: dict, index: int, workdir: str) -> dict:
  """Table 4's numbers and the accuracy-vs-eps curve of one trained model.

  Args:
    config: the study's config (``eval`` and ``seed`` are used).
    state: the trained model.
    name, index: the model's name and its position in ``MODEL_NAMES`` (seeds its attacks).
    masked: the masked setting (the model sees and the attacks change only the foreground).
    eval_arrays: ``{"image", "mask", "label"}`` of the evaluation images.
    workdir: the study's workdir (finished evaluations are kept in ``workdir/evaluations``).

  Returns:
    ``{"n", "natural_accuracy", "pgd_accuracy", "apgd_accuracy", "robust_accuracy", "curve":
    [{"eps", "pgd_accuracy", "robust_accuracy"}], "seconds", "curve_seconds"}``.
  """
  e = config.eval
  store = os.path.join(workdir, "evaluations")
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 7919), index)
  logits_fn = train.make_logits_fn(state.apply_fn, state.variables())
  data = {"image": train.model_input(eval_arrays["image"], eval_arrays["mask"], masked),
          "mask": eval_arrays["mask"], "label": eval_arrays["label"]}
  n = len(data["label"])
  m = min(e.curve_examples or n, n)
  # One attack batch shape for the evaluation and the curves: each attack compiles once.
  bs = min(e.batch_size, m, n)
  spec = {"model": name, "step": int(state.step), "seed": config.seed}
  pgd = attacks.Attack("pgd", steps=e.steps, restarts=e.restarts)
  apgd = attacks.Attack("apgd", steps=e.apgd_steps, restarts=e.restarts)
  with common.Timer() as t:
    r = evaluation.evaluate(store, {**spec, "data": "eval"}, logits_fn=logits_fn, data=data,
                            attacks={"pgd": pgd, "apgd": apgd}, eps=e.eps, key=key,
                            masked=masked, batch_size=bs, desc=f"{name} PGD+APGD",
                            diagnostics=({"max_examples": e.diagnostic_examples,
                                          "stronger_steps": e.stronger_steps,
                                          "large_eps_steps": e.stronger_steps}
                                         if e.diagnostics else False))
  s = r["summary"]
  out = {"n": s["n"], "natural_accuracy": s["clean"], "pgd_accuracy": s["per_attack"]["pgd"],
         "apgd_accuracy": s["per_attack"]["apgd"], "robust_accuracy": s["robust"],
         "seconds": t.seconds}
  if e.diagnostics:
    out["diagnostics"] = r["diagnostics"]
    out["diagnostics_summary"] = r["diagnostics_summary"]
  subset = {k: v[:m] for k, v in data.items()}
  curve = []
  with common.Timer() as t:
    for eps in e.curve_eps:
      if eps == 0:
        acc = float(np.mean(r["clean_correct"][:m]))
        curve.append({"eps": 0.0, "pgd_accuracy": acc, "robust_accuracy": acc})
        continue
      c = evaluation.evaluate(store, {**spec, "data": f"curve{m}"}, logits_fn=logits_fn,
                              data=subset, attacks={"pgd": pgd}, eps=float(eps), key=key,
                              masked=masked, batch_size=bs)["summary"]
      curve.append({"eps": float(eps), "pgd_accuracy": c["per_attack"]["pgd"],
                    "robust_accuracy": c["robust"]})
  out["curve"], out["curve_seconds"] = curve, t.seconds
  return out
