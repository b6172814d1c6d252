"""The robustness checklist of each Table 4 model (``percadv_jax.attacks.checklist``).

After a model's evaluation, ``run_model`` checks its PGD evaluation on the first
``eval.checklist.examples`` evaluation images: the checklist's attacks run through the
experiments' store (``experiments/evaluation.py``: a resumed study finds them), the evaluation's
PGD and APGD count as white-box attacks, its accuracy-vs-eps curve and trust checks are reused,
and a masked model gets the transfer item from the full-image model of its training (the full
model's PGD examples, saved in ``<workdir>/checklist/<full model>.npz``, as the masked model sees
them: background removed). ``write`` writes ``checklist.json`` / ``checklist.md``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np

from experiments import evaluation
from experiments.configs.attention_masks import MODEL_LABELS
from percadv_jax import attacks, io, train


def options(config: Any) -> attacks.checklist.Options:
  """The checklist's budgets of ``config.eval.checklist`` (``evaluation.checklist_options``)."""
  return evaluation.checklist_options(config.eval.checklist, "eval.checklist")


def source_path(workdir: str, name: str) -> str:
  """Where a full-image model's PGD examples on the checklist images are kept."""
  return os.path.join(workdir, "checklist", f"{name}.npz")


def run_model(config: Any, *, name: str, masked: bool, logits_fn: Any, data: Mapping[str, Any],
              attack: attacks.Attack, key: jax.Array, spec: Mapping[str, Any], store: str,
              batch_size: int, ev: attacks.Evaluation, curve: list, workdir: str
              ) -> dict[str, Any]:
  """One model's checklist (``Checklist.to_json()``; see the module docstring).

  Args:
    config: the study's config; name, masked: the model and its setting.
    logits_fn, data: the model and its evaluation data ``{"image" (as the model sees it),
      "mask", "label"}``.
    attack: the evaluated PGD; key: the model's evaluation key (the checklist folds in its own).
    spec, store, batch_size: the evaluation's store description, directory and batch size.
    ev: the evaluation (its PGD and APGD outcomes, its trust checks); curve: its
      accuracy-vs-eps records.
    workdir: the study's workdir.
  """
  opts = options(config)
  n = min(opts.examples, len(data["label"]))
  first = {k: np.asarray(v)[:n] for k, v in data.items()}

  evaluate = evaluation.checklist_evaluate(store, spec, logits_fn=logits_fn, data=first,
                                          batch_size=batch_size, desc=f"{name} checklist")
  source, source_name = None, None
  if masked:
    source_name = name.replace("masked_", "full_")
    path = source_path(workdir, source_name)
    if os.path.exists(path):
      with np.load(path, allow_pickle=False) as z:
        x_src = z["x_adv"]
      if x_src.shape == first["image"].shape:
        source = np.asarray(train.model_input(x_src, first["mask"], True), np.float32)
  ck = attacks.checklist.run(
      logits_fn, first["image"], first["label"], attack=attack, key=jax.random.fold_in(key, 17),
      mask=first["mask"], white_box={k: ev.survived[k][:n] for k in ("pgd", "apgd")}, curve=curve,
      trust_checks=ev.checks, source_adv=source,
      source_name=MODEL_LABELS.get(source_name, "the source model"), options=opts,
      evaluate=evaluate, seed=int(config.seed), return_adversarial=not masked)
  if not masked:
    with io.atomic_open(source_path(workdir, name), "wb") as f:
      np.savez(f, x_adv=ck.x_adv)
  return ck.to_json()


def write(workdir: str, models: Mapping[str, Mapping[str, Any]]) -> dict[str, str] | None:
  """Writes ``checklist.json`` / ``checklist.md`` (one section per model with a checklist);
  returns their paths, or None when no model has one."""
  checked = {n: m["checklist"] for n, m in models.items() if m.get("checklist")}
  if not checked:
    return None
  return attacks.checklist.write(
      workdir, checked, title="Robustness checklist of Table 4's models (PGD evaluation)",
      labels={n: f"{MODEL_LABELS[n]} ({n})" for n in checked})


def notes(models: Mapping[str, Mapping[str, Any]]) -> list[str]:
  """One line per model with a checklist: ``"<label>: checklist: N pass, M flag (...)"``."""
  return [f"{MODEL_LABELS[n]}: {attacks.checklist.summary(m['checklist'])}"
          for n, m in models.items() if m.get("checklist")]
