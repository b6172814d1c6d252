"""Sharding on 8 forced CPU devices (a subprocess) and a two-process jax.distributed run.

The pytest process keeps its default device count: the 8-device checks run in
``python -m tests.parallel._multidevice`` with ``--xla_force_host_platform_device_count=8``, and
the multi-host check starts two ``tests.parallel._distributed_eval`` processes on loopback.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from percadv_jax import parallel
from tests.parallel import _distributed_eval, _tiny

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(devices: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PERCADV_QUIET="1",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(var, None)
  return env


@pytest.fixture(scope="module")
def eight():
  proc = subprocess.run([sys.executable, "-m", "tests.parallel._multidevice"], cwd=ROOT,
                        env=_env(8), capture_output=True, text=True, timeout=600)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  assert proc.returncode == 0 and lines, proc.stderr[-3000:]
  return json.loads(lines[-1][len("RESULT "):])


def test_main_process_keeps_default_device_count(eight):
  assert eight["device_count"] == 8
  assert jax.device_count() == 1  # the subprocess's flag did not leak into pytest


def test_sharded_attack_equals_single_device(eight):
  assert eight["attack_perturbed"] > 0.04  # the attack moved the images (eps = 0.05)
  assert eight["attack_even"] < 1e-6


def test_uneven_attack_batch_padded_or_error(eight):
  assert eight["pad_shape"] == [16, 8, 8, 3]
  assert eight["pad_weight"] == [1.0] * 13 + [0.0] * 3
  assert eight["pad_sharding"] == "P('data',)"
  assert eight["attack_uneven_rows"] == 13  # the padding rows are dropped from the outputs
  assert eight["attack_uneven"] < 1e-6  # the 13 real rows equal the unpadded single-device run
  assert "13 rows" in eight["attack_uneven_error"] and "pad=True" in eight["attack_uneven_error"]


def test_sharded_evaluation_with_cam_and_agreement_equals_single_device(eight):
  got, ref = eight["eval_8"], eight["eval_single"]
  assert set(got) == set(ref) == {"robust", "cam_sum", "pearson", "spearman",
                                  "perturbation_energy_ratio"}
  for name, values in ref.items():
    assert len(got[name]) == len(values) == 21, name
    # Spearman ranks |d|, whose values tie at eps: a float-rounding difference between the
    # sharded and the single-device attack (1 row vs 8 rows per program; below 1e-6, see
    # attack_even) can reorder tied pixels and move the coefficient by ~1e-3.
    tol = 1e-2 if name == "spearman" else 1e-5
    np.testing.assert_allclose(got[name], values, rtol=tol, atol=tol, err_msg=name)
  assert "multiple of the device count 8" in eight["eval_bad_batch_error"]
  cam_sum = np.asarray(got["cam_sum"])
  assert np.all((cam_sum >= 0.0) & (cam_sum <= 64.0)) and cam_sum.max() > 0.0  # [8, 8] in [0, 1]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # two processes: ~25 s
def test_two_processes_on_loopback_equal_single_process(tmp_path):
  out = str(tmp_path / "dist.json")
  addr = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests.parallel._distributed_eval", "--out", out,
       "--coordinator", addr, "--num_processes", "2", "--process_id", str(i)],
      cwd=ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  logs = [p.communicate(timeout=600) for p in procs]
  assert all(p.returncode == 0 for p in procs), [l[1][-2000:] for l in logs]
  dist = json.load(open(out))
  assert dist["process_count"] == 2 and dist["device_count"] == 4

  single = _distributed_eval.compute()  # this pytest process: one process, one device
  assert single["process_count"] == 1
  got, ref = dist["outputs"], single["outputs"]
  assert set(got) == set(ref) == {"clean", "robust", "loss", "x_adv"}
  for name in ("clean", "robust", "loss"):
    assert len(got[name]) == len(ref[name]) == _distributed_eval.NUM_EXAMPLES, name
    np.testing.assert_allclose(got[name], ref[name], atol=1e-5, err_msg=name)
  np.testing.assert_allclose(got["x_adv"], ref["x_adv"], atol=1e-6)
  assert np.max(np.abs(np.asarray(ref["x_adv"]) - _tiny.toy_data(
      _distributed_eval.NUM_EXAMPLES, seed=1)["image"])) > 0.01


def test_single_process_helpers():
  assert parallel.initialize() is False  # no coordinator configured: single process, no-op
  assert parallel.is_main_process()
  with pytest.raises(ValueError, match="coordinator"):
    parallel.initialize(num_processes=2, process_id=0)
  mesh = parallel.make_mesh()
  assert mesh.axis_names == ("data",) and mesh.devices.size == jax.device_count()
  assert parallel.local_slice(8) == slice(0, 8)
  padded = parallel.pad_batch({"x": np.arange(3.0), "y": np.array([1, 2, 3])}, 5)
  np.testing.assert_array_equal(padded["x"], [0, 1, 2, 2, 2])
  np.testing.assert_array_equal(padded["weight"], [1, 1, 1, 0, 0])
  with pytest.raises(ValueError, match="same leading"):
    parallel.shard_batch({"x": np.zeros(3), "y": np.zeros(4)})
  tree = parallel.replicate({"a": np.ones(3), "k": jax.random.key(0)})
  assert tree["a"].sharding.spec == jax.sharding.PartitionSpec()
  assert jax.random.key_data(tree["k"]).tolist() == jax.random.key_data(jax.random.key(0)).tolist()


def test_initialize_reads_jax_environment_variables(monkeypatch):
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("JAX_PROCESS_ID", "0")
  with pytest.raises(ValueError, match="JAX_COORDINATOR_ADDRESS"):
    parallel.initialize()  # two processes from the environment, but no coordinator
  monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
  assert parallel.initialize() is False


def test_sizes_are_checked():
  with pytest.raises(ValueError, match="batch_size"):
    parallel.padded_batch_size(10, 0)
  with pytest.raises(ValueError, match="examples"):
    parallel.padded_batch_size(0, 4)
  with pytest.raises(ValueError, match="global_size"):
    parallel.local_slice(-1)
  assert parallel.padded_batch_size(10, 4) % parallel.num_devices() == 0
  assert parallel.local_slice(6) == slice(0, 6)  # one process reads every row


def test_auto_batch_size_is_the_largest_power_of_two_that_fits():
  module, variables = _tiny.init_variables(seed=0)
  data = _tiny.toy_data(300, seed=2)
  small = {k: v[:21] for k, v in data.items()}

  def fn(v, batch, _):
    return {"logits": module.apply(v, batch["image"], train=False)}
  # The CPU reports no memory limit: the documented rows per device, at most the dataset's.
  assert parallel.device_memory(jax.devices()[0]) is None
  assert parallel.auto_batch_size(fn, variables, data) == parallel.AUTO_CPU_ROWS_PER_DEVICE
  assert parallel.auto_batch_size(fn, variables, small) == 32
  # With a memory figure: the compiled program's memory analysis decides.
  mesh = parallel.make_mesh()

  def need(rows):
    batch = {k: jax.ShapeDtypeStruct((rows, *v.shape[1:]), v.dtype,
                                     sharding=parallel.data_sharding(mesh=mesh))
             for k, v in {**data, "weight": np.zeros(300, np.float32)}.items()}
    return parallel.program_bytes(parallel._map_jit(fn, mesh).lower(
        parallel.replicate(variables, mesh=mesh), batch, None).compile())
  assert need(128) > need(64) > need(1) > 0
  memory = int(need(64) / parallel.AUTO_MEMORY_FRACTION) + 1
  assert parallel.auto_batch_size(fn, variables, data, memory=memory) == 64
  with pytest.raises(ValueError, match="one example per device"):
    parallel.auto_batch_size(fn, variables, data, memory=need(1) // 2)
  # batch_size=0 in map_examples: the same outputs as a fixed batch size.
  auto = parallel.map_examples(fn, variables, small, batch_size=0)
  fixed = parallel.map_examples(fn, variables, small, batch_size=8)
  np.testing.assert_allclose(auto["logits"], fixed["logits"], rtol=1e-6, atol=1e-6)
  assert auto["logits"].shape == (21, _tiny.NUM_CLASSES)
  with pytest.raises(ValueError, match="batch_size"):
    parallel.map_examples(fn, variables, small, batch_size=-8)
