"""Evaluation: natural accuracy and robust accuracy under PGD and APGD (pointwise worst case).

Built on ``percadv_jax.attacks.robust_accuracy``: an example counts as robust under a set of
attacks when the model classifies it correctly clean *and* after every attack (the per-example
worst case, as AutoAttack reports it). In the masked setting the model sees ``x * mask`` and the
attacks start from ``x * mask`` and change only foreground pixels.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import numpy as np

from percadv_jax import attacks
from percadv_jax.attacks._common import correct
from percadv_jax.train.loop import ArrayData
from percadv_jax.train.steps import AttackConfig, make_logits_fn, model_input


def evaluate(apply_fn: Callable, variables: Any, data: Any, *, attack: AttackConfig,
             key: jax.Array, masked: bool = False, batch_size: int = 256,
             use_pgd: bool = True, use_apgd: bool = True, apgd_steps: int | None = None,
             logits_fn: Callable | None = None) -> dict:
  """Natural and robust accuracy of a model on ``data``.

  Args:
    apply_fn, variables: the model, applied as ``apply_fn(variables, x, train=False)``.
    data: a ``percadv_jax.data`` source, an ``ArrayData`` or a dict of arrays
      ``{"image": float32 [N,H,W,3] in [0,1], "mask": float32 [N,H,W,1], "label": int32 [N]}``.
    attack: the threat model (eps, step_size, steps, norm, restarts). APGD uses its eps, norm
      and restarts with ``apgd_steps`` iterations (default ``attack.steps``, the same budget)
      and adapts its own step size.
    key: PRNG key for the random starts.
    masked: the masked setting.
    batch_size: attack this many examples at a time (the last batch is padded: one compile).
    use_pgd, use_apgd: which attacks to run (neither: natural accuracy only).
    logits_fn: the eval-mode ``x -> logits``; default ``make_logits_fn(apply_fn, variables)``
      (a ``Partial`` over the variables: models of one architecture share the compiled attacks).

  Returns:
    ``{"n", "natural_accuracy", "pgd_accuracy", "apgd_accuracy", "robust_accuracy"}`` (floats
    in [0, 1]; ``pgd_accuracy`` counts examples correct clean and under PGD, likewise APGD;
    ``robust_accuracy`` is the pointwise worst case of the attacks that ran) and
    ``"per_example"``: {"natural", "pgd", "apgd", "robust"} bool NumPy arrays [N].
  """
  data = data if isinstance(data, ArrayData) else ArrayData(data)
  arrays = data.all()
  # The full-image setting attacks with a mask of ones (the same result, bit for bit): full and
  # masked models then share one compile of each attack.
  mask = arrays["mask"] if masked else np.ones_like(arrays["mask"])
  x = model_input(arrays["image"], arrays["mask"], masked)
  y = arrays["label"]
  if logits_fn is None:
    logits_fn = make_logits_fn(apply_fn, variables)
  named = {}
  if use_pgd:
    named["pgd"] = functools.partial(attacks.pgd, eps=attack.eps, step_size=attack.step_size,
                                     steps=attack.steps, norm=attack.norm,
                                     restarts=attack.restarts)
  if use_apgd:
    named["apgd"] = functools.partial(attacks.apgd, eps=attack.eps,
                                      steps=apgd_steps or attack.steps, norm=attack.norm,
                                      restarts=attack.restarts)
  n = len(y)
  if not named:
    ok = np.concatenate([np.asarray(correct(logits_fn, x[i:i + batch_size], y[i:i + batch_size]))
                         for i in range(0, n, batch_size)])
    return {"n": int(n), "natural_accuracy": float(ok.mean()),
            "robust_accuracy": float(ok.mean()),
            "per_example": {"natural": ok, "robust": ok}}
  r = attacks.robust_accuracy(logits_fn, x, y, named, key=key, mask=mask,
                              batch_size=min(batch_size, n))
  out = {"n": int(n), "natural_accuracy": r["clean"]}
  for name in named:
    out[f"{name}_accuracy"] = r["per_attack"][name]
  out["robust_accuracy"] = r["robust"]
  out["per_example"] = {"natural": np.asarray(r["clean_correct"]),
                        "robust": np.asarray(r["robust_flags"]),
                        **{k: np.asarray(v) for k, v in r["flags"].items()}}
  return out


def accuracy_vs_eps(apply_fn: Callable, variables: Any, data: Any, *,
                    eps_values: Sequence[float], attack: AttackConfig, key: jax.Array,
                    masked: bool = False, batch_size: int = 256, use_apgd: bool = False,
                    apgd_steps: int | None = None,
                    logits_fn: Callable | None = None) -> list[dict]:
  """Robust accuracy at each eps of ``eps_values`` (step size scaled with eps as in ``attack``).

  Returns:
    One dict per eps: ``{"eps", "pgd_accuracy", ["apgd_accuracy"], "robust_accuracy"}``;
    at eps 0 every entry is the natural accuracy. eps is traced, not static: the attacks
    compile once for all eps values.
  """
  data = data if isinstance(data, ArrayData) else ArrayData(data)
  if logits_fn is None:
    logits_fn = make_logits_fn(apply_fn, variables)
  rows = []
  for eps in eps_values:
    eps = float(eps)
    if eps == 0:
      r = evaluate(apply_fn, variables, data, attack=attack, key=key, masked=masked,
                   batch_size=batch_size, use_pgd=False, use_apgd=False, logits_fn=logits_fn)
      acc = r["natural_accuracy"]
      rows.append({"eps": 0.0, "pgd_accuracy": acc, "robust_accuracy": acc,
                   **({"apgd_accuracy": acc} if use_apgd else {})})
      continue
    scale = eps / attack.eps if attack.eps > 0 else 1.0
    a = AttackConfig(eps=eps, step_size=attack.step_size * scale, steps=attack.steps,
                     norm=attack.norm, restarts=attack.restarts)
    r = evaluate(apply_fn, variables, data, attack=a, key=key, masked=masked,
                 batch_size=batch_size, use_apgd=use_apgd, apgd_steps=apgd_steps,
                 logits_fn=logits_fn)
    row = {"eps": eps, "pgd_accuracy": r["pgd_accuracy"], "robust_accuracy": r["robust_accuracy"]}
    if use_apgd:
      row["apgd_accuracy"] = r["apgd_accuracy"]
    rows.append(row)
  return rows
