"""Evaluating a Table 4 model: natural, PGD, APGD and worst-case accuracy, and the eps curves;
our extra columns AutoAttack (``autoattack_attacks``) and, for masked models, PGD on the pipeline
that computes its mask from the attacked image (``adaptive_logits``, ``adaptive_attack``).

Besides the summaries, each model's per-example outcomes are kept in
``<workdir>/per_example/<name>.npz`` (``save_per_example`` / ``load_per_example``): the bootstrap
confidence intervals of the claims (``claims``) and the input-dimension analysis (``dimension``)
read them, so neither runs an attack.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common, evaluation
from experiments.masks_study import checklist
from percadv_jax import attacks, checks, io, parallel, train
from percadv_jax.data import segment

# The per-example record's arrays, each [N] over the evaluation images in their order.
PER_EXAMPLE_KEYS = ("clean", "pgd", "apgd", "robust", "foreground", "attacked", "label")


def eval_attacks(config: Any, masked: bool) -> dict[str, attacks.Attack]:
  """Table 4's evaluation attacks ``{"pgd", "apgd"}`` of a model in the given setting."""
  e = config.eval
  return {"pgd": attacks.Attack("pgd", eps=e.eps, steps=e.steps, restarts=e.restarts,
                                masked=masked),
          "apgd": attacks.Attack("apgd", eps=e.eps, steps=e.apgd_steps, restarts=e.restarts,
                                 masked=masked)}


# ``eval.autoattack.version``; the cascade's attacks, in AutoAttack's order and names.
AUTOATTACK_VERSIONS = ("standard", "off")
AUTOATTACK_NAMES = ("apgd_ce", "apgd_t", "fab_t", "square")


def validate_extra_columns(config: Any) -> None:
  """Checks ``eval.autoattack`` and ``eval.adaptive``; raises ValueError naming the field."""
  a, d = config.eval.autoattack, config.eval.adaptive
  checks.check_choice(a.version, "eval.autoattack.version", AUTOATTACK_VERSIONS)
  checks.check_int(a.iterations, "eval.autoattack.iterations", minimum=1)
  checks.check_int(a.queries, "eval.autoattack.queries", minimum=1)
  checks.check_int(a.targets, "eval.autoattack.targets", minimum=1)
  checks.check_bool(d.enabled, "eval.adaptive.enabled")
  checks.check_choice(d.segmenter, "eval.adaptive.segmenter", segment.SEGMENTERS)
  checks.check_int(d.steps, "eval.adaptive.steps", minimum=0)
  checks.check_int(d.work_size, "eval.adaptive.work_size", minimum=8)


def autoattack_attacks(config: Any, masked: bool, num_classes: int = 10
                       ) -> dict[str, attacks.Attack] | None:
  """AutoAttack's cascade at the budgets of ``eval.autoattack`` (None when "off"):
  ``{"apgd_ce", "apgd_t", "fab_t", "square"}``, for ``robust_accuracy(..., cascade=True)``; at
  100 iterations, 5000 queries and 9 targets it is ``attacks.autoattack_attacks``'s "standard".

  On a ``num_classes``-way model the targets are at most ``num_classes - 1`` (AutoAttack's rule),
  and below 4 classes APGD-T, whose targeted DLR loss reads 4 logits, is left out.
  """
  a, e = config.eval.autoattack, config.eval
  if a.version == "off":
    return None
  targets = max(1, min(a.targets, num_classes - 1))
  budget = {"apgd_ce": attacks.Attack("apgd", steps=a.iterations),
            "apgd_t": attacks.Attack("apgd_t", steps=a.iterations, targets=targets),
            "fab_t": attacks.Attack("fab_t", steps=a.iterations, targets=targets),
            "square": attacks.Attack("square", steps=a.queries)}
  if num_classes < 4:
    del budget["apgd_t"]
  named = attacks.autoattack_attacks(e.eps, version="custom", masked=masked,
                                     attacks=list(budget.values()))
  return dict(zip(budget, named.values()))


def adaptive_attack(config: Any) -> attacks.Attack:
  """The adaptive column's attack: the study's PGD (``eval.adaptive.steps``, 0 = ``eval.steps``)
  on the whole image (``masked=False``)."""
  e = config.eval
  return attacks.Attack("pgd", eps=e.eps, steps=e.adaptive.steps or e.steps,
                        restarts=e.restarts, masked=False)


def adaptive_logits(config: Any, logits_fn: Callable) -> Callable:
  """The masked model as a pipeline that segments the image it receives (``eval.adaptive``'s
  segmenter on the host, BPDA gradient): ``x [N,H,W,3] -> logits_fn(x * mask(x))``."""
  d = config.eval.adaptive
  return attacks.bpda_masked_logits(
      logits_fn, segment.batch_segmenter(d.segmenter, work_size=d.work_size))


def evaluate_extra_columns(config: Any, logits_fn: Callable, *, name: str, masked: bool,
                           data: dict, eval_arrays: dict, spec: dict, key: jax.Array,
                           store: str, batch_size: int, worst: np.ndarray) -> dict:
  """Our extra columns of one model, each through the store (resumable).

  Args:
    logits_fn: the model (it sees its input as given; the masked setting's ``data`` holds
      ``x * mask``).
    data: the evaluation's ``{"image", "mask", "label"}`` (masked images for a masked model).
    eval_arrays: the raw evaluation images (the adaptive pipeline masks them itself).
    spec, key, store, batch_size: those of the model's PGD + APGD evaluation.
    worst: bool [N], the PGD + APGD worst case per image.
  Returns:
    ``{"autoattack": summary + "robust_all" (robust under PGD, APGD and AutoAttack) +
    "seconds"}`` unless AutoAttack is "off", ``{"adaptive": summary + "seconds"}`` for a masked
    model with ``eval.adaptive.enabled``.
  """
  out: dict[str, Any] = {}
  image = jax.ShapeDtypeStruct((1,) + tuple(np.shape(data["image"])[1:]), jnp.float32)
  named = autoattack_attacks(config, masked, int(jax.eval_shape(logits_fn, image).shape[-1]))
  if named is not None:
    with common.Timer() as t:
      ev = evaluation.evaluate(store, {**spec, "data": "eval", "column": "autoattack"},
                               logits_fn=logits_fn, data=data, attacks=named,
                               key=jax.random.fold_in(key, 1), batch_size=batch_size,
                               desc=f"{name} AutoAttack", cascade=True)
    out["autoattack"] = {**ev.summary(), "robust_all": float((ev.robust & worst).mean()),
                         "seconds": t.seconds}
  d = config.eval.adaptive
  if masked and d.enabled:
    raw = {"image": eval_arrays["image"], "mask": eval_arrays["mask"],
           "label": eval_arrays["label"]}
    # The host segmenter gathers each batch on one device: the pipeline runs on one.
    mesh = parallel.make_mesh(devices=jax.local_devices()[:1])
    with common.Timer() as t:
      ev = evaluation.evaluate(
          store, {**spec, "data": "eval", "column": "adaptive", "segmenter": d.segmenter,
                  "work_size": d.work_size}, logits_fn=adaptive_logits(config, logits_fn),
          data=raw, attacks={"pgd": adaptive_attack(config)}, key=jax.random.fold_in(key, 2),
          batch_size=batch_size, mesh=mesh, desc=f"{name} PGD, masks from the attacked image")
    out["adaptive"] = {**ev.summary(), "seconds": t.seconds}
  return out


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
    ``"curve_seconds"``, with the trust checks ``"trust_checks"`` (each check's result); our
    extra columns' ``"autoattack"`` and ``"adaptive"`` (``evaluate_extra_columns``); and with
    ``eval.checklist.enabled`` ``"checklist"`` (``checklist.run_model``) and
    ``"checklist_seconds"``.
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
  if parallel.is_main_process():
    save_per_example(per_example_path(workdir, name), per_example_record(ev, data, masked))
  if ev.checks is not None:
    out["trust_checks"] = ev.checks
  with common.Timer() as t:
    out["curve"] = evaluation.curve(
        store, {**spec, "data": f"curve{m}"}, attack=named["pgd"], eps_values=e.curve_eps,
        logits_fn=logits_fn, data={k: v[:m] for k, v in data.items()}, key=key,
        batch_size=bs)
  out["curve_seconds"] = t.seconds
  out.update(evaluate_extra_columns(config, logits_fn, name=name, masked=masked, data=data,
                                    eval_arrays=eval_arrays, spec=spec, key=key, store=store,
                                    batch_size=bs, worst=ev.robust))
  if e.checklist.enabled:
    with common.Timer() as t:
      out["checklist"] = checklist.run_model(
          config, name=name, masked=masked, logits_fn=logits_fn, data=data,
          attack=named["pgd"], key=key, spec=spec, store=store, batch_size=bs, ev=ev,
          curve=out["curve"], workdir=workdir)
    out["checklist_seconds"] = t.seconds
  return out


def per_example_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, "per_example", f"{name}.npz")


def attacked_pixels(mask: np.ndarray, masked: bool, image_shape: tuple[int, ...],
                    chunk: int = 1024) -> np.ndarray:
  """int64 [N]: the pixels the attack may change per image (``attacks.free_pixels``: the
  foreground in the masked setting, every pixel otherwise)."""
  n = int(image_shape[0])
  out = np.zeros(n, np.int64)
  for i in range(0, n, chunk):
    j = min(n, i + chunk)
    free = attacks.free_pixels(mask[i:j], masked, (j - i,) + tuple(image_shape[1:]))
    out[i:j] = np.asarray(free).reshape(j - i, -1).sum(1).round().astype(np.int64)
  return out


def per_example_record(ev: attacks.Evaluation, data: dict, masked: bool) -> dict[str, Any]:
  """The arrays of ``PER_EXAMPLE_KEYS`` (bool outcomes; pixel counts; labels) and ``channels``.

  ``foreground`` counts each image's mask pixels, ``attacked`` the pixels its attack may change.
  """
  mask = np.asarray(data["mask"])
  shape = tuple(np.shape(data["image"]))
  return {"clean": ev.clean, "pgd": ev.survived["pgd"], "apgd": ev.survived["apgd"],
          "robust": ev.robust,
          "foreground": mask.reshape(len(mask), -1).sum(1).round().astype(np.int64),
          "attacked": attacked_pixels(mask, masked, shape),
          "label": np.asarray(data["label"], np.int64), "channels": np.int64(shape[-1])}


def save_per_example(path: str, record: dict[str, Any]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with io.atomic_open(path, "wb") as f:
    np.savez(f, **record)


def load_per_example(workdir: str, names: Iterable[str]) -> dict[str, dict[str, np.ndarray]]:
  """``{name: record}`` of the models whose per-example record exists (a run that finished its
  evaluations before these records were kept has none: the report then gives no CIs)."""
  out = {}
  for name in names:
    path = per_example_path(workdir, name)
    if os.path.exists(path):
      with np.load(path, allow_pickle=False) as z:
        out[name] = {k: z[k] for k in z.files}
  return out
