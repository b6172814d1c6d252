"""Sharded == single-device checks on 8 forced CPU devices; prints one JSON line of results.

Run as ``XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.parallel._multidevice``
(test_parallel.py does, in a subprocess, so the pytest process keeps its device count).
"""

from __future__ import annotations

import functools
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
  from percadv_jax.train import state as tstate
  from tests.parallel import _tiny

  out: dict = {"device_count": jax.device_count()}
  module = _tiny.TinyCNN()
  tx = tstate.make_optimizer(tstate.OptimizerConfig(name="sgd", learning_rate=0.1,
                                                    schedule="constant"), 10)
  state = tstate.create_train_state(0, module, tx, input_shape=(1, _tiny.SIZE, _tiny.SIZE, 3))
  data = _tiny.toy_data(16, seed=3)

  # --- adversarial train step (PGD-1 inside; covers the natural path), batch 16, 8 devices.
  from percadv_jax.train import steps as tsteps
  attack_cfg = tsteps.AttackConfig(eps=0.03, step_size=0.02, steps=1)
  for name, kw in [("adversarial", {"adversarial": True, "attack": attack_cfg})]:
    fn = functools.partial(tsteps.train_step, **kw)
    single = jax.jit(fn)
    s1, m1 = single(state, data)
    s1, m1 = single(s1, data)
    step = parallel.sharded_train_step(fn)
    s8, m8 = step(state, data)
    s8, m8 = step(s8, data)
    out[f"train_{name}_params"] = _maxdiff(s1.params, s8.params)
    out[f"train_{name}_batch_stats"] = _maxdiff(s1.batch_stats, s8.batch_stats)
    out[f"train_{name}_metrics"] = _maxdiff(m1, m8)
    out[f"train_{name}_moved"] = _maxdiff(state.params, s8.params)
    out[f"train_{name}_param_sharding"] = str(jax.tree.leaves(s8.params)[0].sharding.spec)
  try:
    parallel.sharded_train_step(tsteps.train_step)(state, {k: v[:12] for k, v in data.items()})
    out["train_uneven_error"] = ""
  except ValueError as e:
    out["train_uneven_error"] = str(e)

  # --- attack with per-example keys (each row independent of the batch): an even batch of 16,
  # and an uneven one (13 rows) padded to 16 by shard_batch, on 8 devices == one device.
  variables = state.variables()

  def pgd(v, x, y, key):
    logits_fn = lambda z: module.apply(v, z, train=False)  # noqa: E731
    return attacks.pgd(logits_fn, x, y, key=key, eps=0.05, step_size=0.02, steps=2)
  key = jax.random.PRNGKey(5)
  keys = jax.random.split(key, 16)
  ref = jax.jit(pgd)(variables, data["image"], data["label"], keys)
  run = parallel.sharded(pgd, batch_argnums=(1, 2, 3), out_shardings="batch")
  got = run(variables, data["image"], data["label"], keys)
  out["attack_even"] = _maxdiff(ref, got)
  out["attack_even_sharding"] = str(got.sharding.spec)
  out["attack_perturbed"] = _maxdiff(ref, data["image"])

  sub = {"image": data["image"][:13], "label": data["label"][:13], "key": np.asarray(keys)[:13]}
  padded = parallel.shard_batch(sub, pad=True)
  out["pad_shape"] = list(padded["image"].shape)
  out["pad_weight"] = np.asarray(padded["weight"]).tolist()
  got16 = parallel.to_host(run(variables, padded["image"], padded["label"], padded["key"]))
  out["attack_uneven"] = _maxdiff(ref[:13], got16[:13])
  try:
    run(variables, sub["image"], sub["label"], sub["key"])
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
  out["eval_8"] = parallel.evaluate(per_example, variables, ev_data, batch_size=8, key=key)
  single_fn = jax.jit(per_example)
  rows: dict = {}
  for b, start in enumerate(range(0, 21, 8)):
    part = {k: v[start:start + 8] for k, v in ev_data.items()}
    n = len(part["label"])
    part = {k: np.concatenate([v, np.repeat(v[-1:], 8 - n, 0)]) for k, v in part.items()}
    res = single_fn(variables, part, jax.random.fold_in(key, b))
    for name, v in res.items():
      rows.setdefault(name, []).extend(np.asarray(v, np.float64)[:n].tolist())
  out["eval_single"] = {name: float(np.nanmean(v)) for name, v in rows.items()}
  try:
    parallel.evaluate(per_example, variables, ev_data, batch_size=12, key=key)
    out["eval_bad_batch_error"] = ""
  except ValueError as e:
    out["eval_bad_batch_error"] = str(e)

  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main()
