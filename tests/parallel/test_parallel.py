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
  for var in ("PERCADV_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS", "PERCADV_NUM_PROCESSES",
              "JAX_NUM_PROCESSES", "PERCADV_PROCESS_ID", "JAX_PROCESS_ID"):
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


def test_sharded_adversarial_train_step_equals_single_device(eight):
  assert eight["train_adversarial_moved"] > 1e-3  # two steps really changed the parameters
  assert eight["train_adversarial_params"] < 1e-5
  assert eight["train_adversarial_batch_stats"] < 1e-5
  assert eight["train_adversarial_metrics"] < 1e-5
  assert eight["train_adversarial_param_sharding"] == "P()"  # replicated


def test_uneven_train_batch_is_a_clear_error(eight):
  assert "12 rows" in eight["train_uneven_error"] and "multiple of 8" in eight["train_uneven_error"]


def test_sharded_attack_equals_single_device(eight):
  assert eight["attack_perturbed"] > 0.04  # the attack moved the images (eps = 0.05)
  assert eight["attack_even"] < 1e-6
  assert eight["attack_even_sharding"] == "P('data',)"


def test_uneven_attack_batch_padded_or_error(eight):
  assert eight["pad_shape"] == [16, 8, 8, 3]
  assert eight["pad_weight"] == [1.0] * 13 + [0.0] * 3
  assert eight["attack_uneven"] < 1e-6  # the 13 real rows equal the unpadded single-device run
  assert "13 rows" in eight["attack_uneven_error"] and "pad=True" in eight["attack_uneven_error"]


def test_sharded_evaluation_with_cam_and_agreement_equals_single_device(eight):
  got, ref = eight["eval_8"], eight["eval_single"]
  assert got["count"] == 21
  assert set(ref) == set(got) - {"count"}
  for name, value in ref.items():
    assert abs(got[name] - value) < 1e-5 * max(1.0, abs(value)), name
  assert "multiple of the device count 8" in eight["eval_bad_batch_error"]
  assert 0.0 < got["cam_sum"] <= 64.0  # [8, 8] maps in [0, 1], not all zero


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


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
  assert dist["means"]["count"] == single["means"]["count"] == _distributed_eval.NUM_EXAMPLES
  for name in ("clean", "robust", "loss"):
    assert abs(dist["means"][name] - single["means"][name]) < 1e-5, name
  np.testing.assert_allclose(dist["x_adv"], single["x_adv"], atol=1e-6)
  assert np.max(np.abs(np.asarray(single["x_adv"]) - _tiny.toy_data(
      _distributed_eval.NUM_EXAMPLES, seed=1)["image"][:8])) > 0.01


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
