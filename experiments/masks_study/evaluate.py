"""Evaluating a Table 4 model: natural, PGD, APGD and worst-case accuracy, and the eps curves."""

from __future__ import annotations

import os
from typing import Any

import jax

from experiments import common, evaluation
from percadv_jax import attacks, train


def eval_attacks(config: Any, masked: bool) -> dict[str, attacks.Attack]:
  """Table 4's evaluation attacks ``{"pgd", "apgd"}`` of a model in the given setting."""
  e = config.eval
  return {"pgd": attacks.Attack("pgd", eps=e.eps, steps=e.steps, restarts=e.restarts,
                                masked=masked),
          "apgd": attacks.Attack("apgd", eps=e.eps, steps=e.apgd_steps, restarts=e.restarts,
                                 masked=masked)}


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
    ``Evaluation.summary()`` of PGD and APGD (``"n", "clean", "robust", "per_attack": {"pgd",
    "apgd"}, "linf_mean", "l2_mean"``, ``"checks"``) plus ``"curve"``: ``[{"eps",
    **summary}]`` of PGD on the first ``eval.curve_examples`` images, ``"seconds"``,
    ``"curve_seconds"`` and, with the trust checks, ``"trust_checks"`` (each check's result).
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
  named = eval_attacks(config, masked)
  with common.Timer() as t:
    ev = evaluation.evaluate(store, {**spec, "data": "eval"}, logits_fn=logits_fn, data=data,
                             attacks=named, key=key, batch_size=bs, desc=f"{name} PGD+APGD",
                             trust_checks=(attacks.diagnostics.Options(
                                 max_examples=e.diagnostic_examples,
                                 stronger_steps=e.stronger_steps,
                                 large_eps_steps=e.stronger_steps) if e.diagnostics else None))
  out = {**ev.summary(), "seconds": t.seconds}
  if ev.checks is not None:
    out["trust_checks"] = ev.checks
  with common.Timer() as t:
    out["curve"] = evaluation.curve(
        store, {**spec, "data": f"curve{m}"}, attack=named["pgd"], eps_values=e.curve_eps,
        logits_fn=logits_fn, data={k: v[:m] for k, v in data.items()}, key=key,
        batch_size=bs)
  out["curve_seconds"] = t.seconds
  return out
