"""Data-parallel ``train.fit`` runs for test_data_parallel.py, in their own processes.

``python -m tests.train._data_parallel --mode eight --out DIR`` (with
``--xla_force_host_platform_device_count=8``): the natural run on the first device and with
``data_parallel`` on 8 devices, a data-parallel run killed after its first checkpoint (resumed by
the test on one device), an FGSM-RS run both ways, and the refusal of an uneven batch.

``python -m tests.train._data_parallel --mode process --out DIR --coordinator H:P
--num_processes 2 --process_id I``: the data-parallel natural run by every process of a
``jax.distributed`` run, killed after its first checkpoint and resumed in the same processes.

Process 0 writes ``DIR/result.json`` (per-step losses, device and process counts, errors) and
``DIR/params_<run>.npz`` (final parameters); the runs' workdirs are ``DIR/<run>``.
"""

from __future__ import annotations

import argparse
import os

STEPS = 50
KILL_AT = 30  # after the checkpoint at step 25
ADVERSARIAL_STEPS = 5


class Killed(Exception):
  pass


def data():
  """128 images of the train tests' two-class toy problem (32 px, square masks)."""
  from tests.train.test_train import _toy
  return _toy(128, 0)


def config(**kw):
  """Natural training of the small VGG-19 (width 1/16, BatchNorm), batch 64, 50 steps of SGD.

  Batches of 64 (8 rows per device of 8): with 2-4 rows per device this tiny problem sits near
  kinks of its ReLUs and max-pools, where the float32 summation order alone (one device with or
  without XLA's YNNPACK reductions) changes the first gradient by 4% and the runs drift apart.
  """
  from percadv_jax import train
  base = dict(model_kwargs={"variant": "small", "width": 0.0625, "batch_norm": True},
              batch_size=64, steps=STEPS, checkpoint_every=25, log_every=1, seed=1,
              optimizer=train.OptimizerConfig(name="sgd", learning_rate=0.05, momentum=0.9))
  base.update(kw)
  return train.TrainConfig(**base)


def adversarial_config(**kw):
  from percadv_jax import attacks
  return config(steps=ADVERSARIAL_STEPS, adversarial=True,
                attack=attacks.Attack("fgsm_rs", eps=8 / 255), **kw)


def losses(workdir: str) -> list[float]:
  from percadv_jax import io
  return [r["loss"] for r in io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))]


def fit_killed(cfg, workdir: str, source) -> None:
  """Runs ``cfg`` until the end of step KILL_AT, as a kill there would leave the workdir."""
  from percadv_jax import train

  def kill(step, state, metrics):
    if step == KILL_AT:
      raise Killed()
  try:
    train.fit(cfg, workdir, source, num_classes=2, on_step=kill)
  except Killed:
    return
  raise AssertionError("the run was not killed")


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--mode", choices=("eight", "process"), required=True)
  ap.add_argument("--out", required=True)
  ap.add_argument("--coordinator", default=None)
  ap.add_argument("--num_processes", type=int, default=None)
  ap.add_argument("--process_id", type=int, default=None)
  a = ap.parse_args()
  from percadv_jax import parallel
  parallel.initialize(coordinator_address=a.coordinator, num_processes=a.num_processes,
                      process_id=a.process_id, timeout_s=120)
  import jax
  import numpy as np
  from percadv_jax import io, train

  source = data()
  result = {"device_count": jax.device_count(), "process_count": jax.process_count()}
  states = {}
  if a.mode == "eight":
    for name, cfg in (("one", config()), ("eight", config(data_parallel=True)),
                      ("adv_one", adversarial_config()),
                      ("adv_eight", adversarial_config(data_parallel=True))):
      states[name] = train.fit(cfg, os.path.join(a.out, name), source, num_classes=2)
      result[name] = losses(os.path.join(a.out, name))
    fit_killed(config(data_parallel=True), os.path.join(a.out, "killed"), source)
    try:
      train.fit(config(data_parallel=True, batch_size=12), os.path.join(a.out, "uneven"),
                source, num_classes=2)
      result["uneven_error"] = ""
    except ValueError as e:
      result["uneven_error"] = str(e)
  else:
    workdir = os.path.join(a.out, "processes")
    fit_killed(config(data_parallel=True), workdir, source)
    result["killed_steps"] = [r["step"] for r in io.read_jsonl(
        os.path.join(workdir, "metrics.jsonl"))]
    states["processes"] = train.fit(config(data_parallel=True), workdir, source, num_classes=2)
    result["processes"] = losses(workdir)
    result["processes_steps"] = [r["step"] for r in io.read_jsonl(
        os.path.join(workdir, "metrics.jsonl"))]
    result["param_sharding"] = str(jax.tree.leaves(states["processes"].params)[0].sharding.spec)
  for name, state in states.items():
    # Replicated: every process holds the whole array.
    params = {jax.tree_util.keystr(p): np.asarray(v.addressable_shards[0].data)
              for p, v in jax.tree_util.tree_leaves_with_path(state.params)}
    if parallel.is_main_process():
      np.savez(os.path.join(a.out, f"params_{name}.npz"), **params)
  if parallel.is_main_process():
    io.write_json(os.path.join(a.out, "result.json"), result)
  parallel.sync("tests.train._data_parallel: done")


if __name__ == "__main__":
  main()
