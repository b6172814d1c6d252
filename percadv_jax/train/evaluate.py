"""Evaluation: natural accuracy and robust accuracy under PGD and APGD (pointwise worst case).

An example counts as robust under a set of attacks when the model classifies it correctly clean
*and* under every attack (the per-example worst case, as AutoAttack reports it). In the masked
setting the model sees ``x * mask`` and the attacks change only foreground pixels.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import attacks, io
from percadv_jax.train.loop import ArrayData
from percadv_jax.train.steps import AttackConfig, make_logits_fn, model_input


def _batch_fn(apply_fn: Callable, *, masked: bool, attack: AttackConfig, use_pgd: bool,
              use_apgd: bool) -> Callable:
  """Jitted ``(variables, x, y, mask, key) -> dict of bool [B]`` correctness per attack."""

  def fn(variables, x, y, mask, key):
    k_pgd, k_apgd = jax.random.split(key)
    logits_fn = make_logits_fn(apply_fn, variables, mask=mask, masked=masked)
    x0 = model_input(x, mask, masked)
    m = mask if masked else None
    out = {"natural": jnp.argmax(logits_fn(x0), -1) == y}
    if use_pgd:
      x_adv = attacks.pgd(logits_fn, x0, y, key=k_pgd, eps=attack.eps,
                          step_size=attack.step_size, steps=attack.steps, norm=attack.norm,
                          mask=m, restarts=attack.restarts)
      out["pgd"] = jnp.argmax(logits_fn(x_adv), -1) == y
    if use_apgd:
      x_adv = attacks.apgd(logits_fn, x0, y, key=k_apgd, eps=attack.eps, steps=attack.steps,
                           norm=attack.norm, mask=m)
      out["apgd"] = jnp.argmax(logits_fn(x_adv), -1) == y
    return out

  return jax.jit(fn)


def evaluate(apply_fn: Callable, variables: Any, data: Any, *, attack: AttackConfig,
             key: jax.Array, masked: bool = False, batch_size: int = 256,
             use_pgd: bool = True, use_apgd: bool = True, desc: str = "eval") -> dict:
  """Natural and robust accuracy of a model on ``data``.

  Args:
    apply_fn, variables: the model, applied as ``apply_fn(variables, x, train=False)``.
    data: a ``percadv_jax.data`` source, an ``ArrayData`` or a dict of arrays
      ``{"image": float32 [N,H,W,3] in [0,1], "mask": float32 [N,H,W,1], "label": int32 [N]}``.
    attack: the threat model (eps, step_size, steps, norm, restarts); APGD uses its eps and
      steps (its step size adapts itself).
    key: PRNG key for the random starts (folded with the batch index).
    masked: the masked setting.
    batch_size: evaluation batch (the last batch may be smaller; it compiles once more).
    use_pgd, use_apgd: which attacks to run.
    desc: progress-bar label.

  Returns:
    ``{"n", "natural_accuracy", "pgd_accuracy", "apgd_accuracy", "robust_accuracy"}``: floats in
    [0, 1]; ``pgd_accuracy`` (``apgd_accuracy``) counts examples correct both clean and under
    PGD (APGD); ``robust_accuracy`` is the pointwise worst case over the attacks that ran.
    ``per_example`` holds the bool [N] arrays (as NumPy) for further bookkeeping.
  """
  data = data if isinstance(data, ArrayData) else ArrayData(data)
  fn = _batch_fn(apply_fn, masked=masked, attack=attack, use_pgd=use_pgd, use_apgd=use_apgd)
  n = len(data)
  parts: dict[str, list[np.ndarray]] = {}
  starts = range(0, n, batch_size)
  for b, start in enumerate(io.progress(starts, total=len(starts), desc=desc, unit="batch")):
    batch = data.batch(np.arange(start, min(start + batch_size, n)))
    out = fn(variables, batch["image"], batch["label"], batch["mask"],
             jax.random.fold_in(key, b))
    for k, v in jax.device_get(out).items():
      parts.setdefault(k, []).append(np.asarray(v))
  correct = {k: np.concatenate(v) for k, v in parts.items()}
  robust = correct["natural"].copy()
  for k in ("pgd", "apgd"):
    if k in correct:
      correct[k] = correct[k] & correct["natural"]
      robust &= correct[k]
  result = {"n": int(n), "natural_accuracy": float(correct["natural"].mean())}
  for k in ("pgd", "apgd"):
    if k in correct:
      result[f"{k}_accuracy"] = float(correct[k].mean())
  result["robust_accuracy"] = float(robust.mean())
  result["per_example"] = correct
  return result


def accuracy_vs_eps(apply_fn: Callable, variables: Any, data: Any, *, eps_values: Sequence[float],
                    attack: AttackConfig, key: jax.Array, masked: bool = False,
                    batch_size: int = 256, use_apgd: bool = False) -> list[dict]:
  """Robust accuracy at each eps of ``eps_values`` (step size scaled as ``attack``'s).

  Returns:
    One dict per eps: ``{"eps", "pgd_accuracy", ["apgd_accuracy"], "robust_accuracy"}``;
    eps 0 gives the natural accuracy.
  """
  rows = []
  data = data if isinstance(data, ArrayData) else ArrayData(data)
  for eps in eps_values:
    if eps == 0:
      r = evaluate(apply_fn, variables, data, attack=attack, key=key, masked=masked,
                   batch_size=batch_size, use_pgd=False, use_apgd=False, desc="eps=0")
      rows.append({"eps": 0.0, "pgd_accuracy": r["natural_accuracy"],
                   **({"apgd_accuracy": r["natural_accuracy"]} if use_apgd else {}),
                   "robust_accuracy": r["natural_accuracy"]})
      continue
    scale = eps / attack.eps if attack.eps > 0 else 1.0
    a = AttackConfig(eps=float(eps), step_size=attack.step_size * scale, steps=attack.steps,
                     norm=attack.norm, restarts=attack.restarts)
    r = evaluate(apply_fn, variables, data, attack=a, key=key, masked=masked,
                 batch_size=batch_size, use_apgd=use_apgd, desc=f"eps={eps:.4g}")
    row = {"eps": float(eps), "pgd_accuracy": r["pgd_accuracy"],
           "robust_accuracy": r["robust_accuracy"]}
    if use_apgd:
      row["apgd_accuracy"] = r["apgd_accuracy"]
    rows.append(row)
  return rows
