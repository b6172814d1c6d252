"""The robustness checklist of each seed's Linf PGD evaluation (``percadv_jax.attacks.checklist``).

After a seed's attacks (``attacks.run_attacks``), ``run_seed`` checks the Linf PGD evaluation on
the first ``attack.checklist.examples`` selected images: the checklist's attacks run through the
experiments' store in the seed's ``evaluations/`` (``experiments/evaluation.py``: a resumed study
finds them), the evaluation's per-image outcome counts as a white-box attack, its trust checks
(``attack.diagnostics``) are reused; there is no accuracy-vs-eps curve and no transfer source
(the ``transfer`` item is "skip"). ``write`` writes ``checklist.json`` / ``checklist.md``.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from experiments import evaluation
from experiments.perceptual_study import attacks as study_attacks
from percadv_jax import attacks

# The checklist's key: folded into the seed's attack key (``attacks.key_of``).
KEY_FOLD = 17


def options(config: Any) -> attacks.checklist.Options:
  """The checklist's budgets of ``config.attack.checklist`` (``evaluation.checklist_options``)."""
  return evaluation.checklist_options(config.attack.checklist, "attack.checklist")


def label(seed: int | str) -> str:
  """A checklist section's heading: the seed's model and the checked evaluation."""
  return f"MobileNetV2 seed {seed}, Linf PGD"


def run_seed(config: Any, workdir: str, *, logits_fn: Any, x: np.ndarray, y: np.ndarray,
             linf: Mapping[str, Any], seed: int) -> dict[str, Any]:
  """One seed's checklist (``Checklist.to_json()``; see the module docstring).

  Args:
    config: the study's config; workdir: the seed's workdir (``evaluations/`` is the store).
    logits_fn: the seed's model; x: float [N,H,W,C] the selected images; y: int [N] labels.
    linf: ``run_attacks``' Linf PGD result (its ``"attack"``, ``"success"`` bool [N] and, with
      diagnostics, ``"diagnostics"["checks"]``).
    seed: the seed (the checklist's key is ``fold_in(attacks.key_of(seed), KEY_FOLD)``).
  """
  opts = options(config)
  n = min(opts.examples, len(y))
  first = {"image": np.asarray(x)[:n], "label": np.asarray(y)[:n],
           "mask": np.ones((n,) + np.shape(x)[1:3] + (1,), np.float32)}
  spec = study_attacks.spec_of(seed)
  evaluate = evaluation.checklist_evaluate(
      study_attacks.store_of(workdir), spec, logits_fn=logits_fn, data=first,
      batch_size=config.attack.batch_size, desc=f"seed {seed} checklist")
  diagnostics = linf.get("diagnostics")
  ck = attacks.checklist.run(
      logits_fn, first["image"], first["label"], attack=linf["attack"],
      key=jax.random.fold_in(study_attacks.key_of(seed), KEY_FOLD),
      white_box={"linf": ~np.asarray(linf["success"])[:n]},
      trust_checks=None if diagnostics is None else diagnostics["checks"], options=opts,
      evaluate=evaluate, seed=int(seed))
  return ck.to_json()


def write(workdir: str, checklists: Mapping[str, Mapping[str, Any]]) -> dict[str, str] | None:
  """Writes ``checklist.json`` / ``checklist.md`` in the study's workdir, one section per seed
  (``checklists``: ``{str(seed): run_seed(...)}``); returns their paths, or None when empty."""
  if not checklists:
    return None
  return attacks.checklist.write(
      workdir, checklists, title="Robustness checklist of each seed's Linf PGD evaluation",
      labels={s: label(s) for s in checklists})


def notes(checklists: Mapping[str, Mapping[str, Any]]) -> list[str]:
  """One line per seed: ``"<label>: checklist: N pass, M flag (...)"``."""
  return [f"{label(s)}: {attacks.checklist.summary(c)}" for s, c in checklists.items()]
