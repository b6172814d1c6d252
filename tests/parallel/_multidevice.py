"""Sharded == single-device checks on 8 forced CPU devices; prints one JSON line of results.

Run as ``XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.parallel._multidevice``
(test_parallel.py does, in a subprocess, so the pytest process keeps its device count).
"""

from __future__ import annotations

import json


def _maxdiff(a, b) -> float:
  import jax
  import numpy as np
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(la, lb))


def main() -> None:
  import jax
  import numpy as np

  from percadv_jax import attacks, cam, parallel
  from tests.parallel import _tiny

  out: dict = {"device_count": jax.device_count()}
  module, variables = _tiny.init_variables(seed=0)
  data = _tiny.toy_data(16, seed=3)

  # --- attack with per-example keys (each row independent of the batch) through map_examples:
  # 16 rows in one batch of 16, and 13 rows whose batch is padded to 16, on 8 devices == one
  # device.
  def pgd(v, x, y, key):
    logits_fn = lambda z: module.apply(v, z, train=False)  # noqa: E731
    return attacks.pgd(logits_fn, x, y, key=key, eps=0.05, step_size=0.02, steps=2)

  def attack(v, batch, _):
    return {"x_adv": pgd(v, batch["image"], batch["label"], batch["key"])}
  key = jax.random.PRNGKey(5)
  keys = jax.random.split(key, 16)
  ref = jax.jit(pgd)(variables, data["image"], data["label"], keys)
  even = {"image": data["image"], "label": data["label"], "key": np.asarray(keys)}
  got = parallel.map_examples(attack, variables, even, batch_size=16)
  out["attack_even"] = _maxdiff(ref, got["x_adv"])
  out["attack_perturbed"] = _maxdiff(ref, data["image"])

  sub = {k: v[:13] for k, v in even.items()}
  got13 = parallel.map_examples(attack, variables, sub, batch_size=16)
  out["attack_uneven_rows"] = len(got13["x_adv"])
  out["attack_uneven"] = _maxdiff(ref[:13], got13["x_adv"])
  padded = parallel.shard_batch(sub, pad=True)
  out["pad_shape"] = list(padded["image"].shape)
  out["pad_weight"] = np.asarray(padded["weight"]).tolist()
  out["pad_sharding"] = str(padded["image"].sharding.spec)
  try:
    parallel.shard_batch(sub)
    out["attack_uneven_error"] = ""
  except ValueError as e:
    out["attack_uneven_error"] = str(e)

  # --- robust accuracy + CAM + agreement over 21 examples (batch 8: the last one padded),
  # sharded over 8 devices == the same per-example function jitted on one device.
  ev_data = _tiny.toy_data(21, seed=4)

  def per_example(v, batch, k):
    x, y = batch["image"], batch["label"]
    x_adv = pgd(v, x, y, k)
    maps = cam.grad_cam(module, v, x, layer="features")
    agree = cam.agreement(cam.perturbation_magnitude(x_adv - x), maps,
                          region=batch["mask"][..., 0])
    return {"robust": module.apply(v, x_adv, train=False).argmax(-1) == y,
            "cam_sum": maps.sum(axis=(1, 2)),
            **{n: agree[n] for n in ("pearson", "spearman", "perturbation_energy_ratio")}}
  eval_8 = parallel.map_examples(per_example, variables, ev_data, batch_size=8, key=key)
  out["eval_8"] = {name: np.asarray(v, np.float64).tolist() for name, v in eval_8.items()}
  single_fn = jax.jit(per_example)
  rows: dict = {}
  for b, start in enumerate(range(0, 21, 8)):
    part = {k: v[start:start + 8] for k, v in ev_data.items()}
    n = len(part["label"])
    part = {k: np.concatenate([v, np.repeat(v[-1:], 8 - n, 0)]) for k, v in part.items()}
    res = single_fn(variables, part, jax.random.fold_in(key, b))
    for name, v in res.items():
      rows.setdefault(name, []).extend(np.asarray(v, np.float64)[:n].tolist())
  out["eval_single"] = rows
  try:
    parallel.map_examples(per_example, variables, ev_data, batch_size=12, key=key)
    out["eval_bad_batch_error"] = ""
  except ValueError as e:
    out["eval_bad_batch_error"] = str(e)

  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main()
