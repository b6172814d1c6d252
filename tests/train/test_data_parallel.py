"""Data-parallel ``train.fit`` (``TrainConfig.data_parallel``): 8 devices against one, checkpoints
from 8 devices resumed on one, two jax.distributed processes on loopback.

The runs with several devices happen in subprocesses (``tests.train._data_parallel``), so this
pytest process keeps its single CPU device; the resumes on one device happen here.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from percadv_jax import io, train
from tests.parallel.test_parallel import ROOT, _env, _free_port
from tests.train import _data_parallel as dp


def _run(args, devices):
  proc = subprocess.run([sys.executable, "-m", "tests.train._data_parallel", *args], cwd=ROOT,
                        env=_env(devices), capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("eight"))
  _run(["--mode", "eight", "--out", out], devices=8)
  with open(os.path.join(out, "result.json")) as f:
    return out, json.load(f)


@pytest.mark.slow  # one and eight devices' training runs: ~70 s
def test_eight_devices_follow_the_one_device_loss_curve(eight):
  _, r = eight
  assert r["device_count"] == 8
  one, eight_ = np.asarray(r["one"]), np.asarray(r["eight"])
  assert len(one) == len(eight_) == dp.STEPS
  assert one[-1] < 0.1 * one[0]  # it trained
  # Global BatchNorm statistics, the same batches and keys: the first step's loss agrees to
  # float rounding, and the curves stay together over the 50 steps.
  np.testing.assert_allclose(eight_[0], one[0], rtol=1e-6)
  np.testing.assert_allclose(eight_, one, atol=1e-4)


@pytest.mark.slow  # one and eight devices' training runs: ~70 s
def test_eight_devices_adversarial_training_takes_the_same_steps(eight):
  _, r = eight
  one, eight_ = np.asarray(r["adv_one"]), np.asarray(r["adv_eight"])
  assert len(one) == len(eight_) == dp.ADVERSARIAL_STEPS
  # The attack's random starts and the full-image mask are the same on 8 devices: the first two
  # steps agree to float rounding. FGSM's sign() turns rounding-level parameter differences into
  # whole steps of eps on some pixels, so later steps agree more loosely (measured: up to 0.024
  # at step 5 of losses around 0.13).
  np.testing.assert_allclose(eight_[:2], one[:2], atol=1e-4)
  np.testing.assert_allclose(eight_, one, atol=5e-2)


@pytest.mark.slow  # one and eight devices' training runs: ~70 s
def test_uneven_batch_is_refused_naming_both_numbers(eight):
  _, r = eight
  assert "batch_size=12" in r["uneven_error"] and "8 devices" in r["uneven_error"]


@pytest.mark.slow  # one and eight devices' training runs: ~70 s
def test_checkpoints_of_eight_devices_restore_and_resume_on_one(eight):
  out, r = eight
  assert jax.device_count() == 1
  source = dp.data()
  # The finished 8-device run restores on one device, bit for bit.
  state = train.fit(dp.config(data_parallel=True), os.path.join(out, "eight"), source,
                    num_classes=2, on_step=lambda *a: pytest.fail("a finished run was retrained"))
  saved = np.load(os.path.join(out, "params_eight.npz"))
  leaves = jax.tree_util.tree_leaves_with_path(state.params)
  assert len(leaves) == len(saved.files)
  for path, leaf in leaves:
    np.testing.assert_array_equal(np.asarray(leaf), saved[jax.tree_util.keystr(path)])
  # The run killed at step 30 on 8 devices resumes from its step-25 checkpoint here and follows
  # the uninterrupted 8-device run.
  killed = os.path.join(out, "killed")
  assert train.checkpoint.latest_step(os.path.join(killed, "checkpoints")) == 25
  resumed = train.fit(dp.config(data_parallel=True), killed, source, num_classes=2)
  assert int(resumed.step) == dp.STEPS
  records = io.read_jsonl(os.path.join(killed, "metrics.jsonl"))
  assert [rec["step"] for rec in records] == list(range(1, dp.STEPS + 1))
  np.testing.assert_allclose([rec["loss"] for rec in records], r["eight"], atol=1e-4)


@pytest.mark.slow  # one and eight devices' training runs: ~70 s
def test_two_processes_train_and_resume(eight, tmp_path):
  _, r = eight
  addr = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests.train._data_parallel", "--mode", "process", "--out",
       str(tmp_path), "--coordinator", addr, "--num_processes", "2", "--process_id", str(i)],
      cwd=ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  logs = [p.communicate(timeout=900) for p in procs]
  assert all(p.returncode == 0 for p in procs), [log[1][-2000:] for log in logs]
  with open(tmp_path / "result.json") as f:
    got = json.load(f)
  assert got["process_count"] == 2 and got["device_count"] == 4
  assert got["param_sharding"] == "P()"  # replicated
  # Killed after step 30 (checkpoint 25), resumed: steps 26-30 rerun, each record once.
  assert got["killed_steps"] == list(range(1, dp.KILL_AT + 1))
  assert got["processes_steps"] == list(range(1, dp.STEPS + 1))
  # Four devices' gradient sums round differently from eight's and one's: the first steps agree
  # to float rounding, and on this toy near its ReLUs' kinks the curves then drift apart by up to
  # ~7e-4 (measured with the column-group convolutions; a broken sharding differs by > 0.1).
  for ref in (r["eight"], r["one"]):
    np.testing.assert_allclose(got["processes"][:2], ref[:2], atol=1e-4)
    np.testing.assert_allclose(got["processes"], ref, atol=2e-3)


def test_data_parallel_must_be_a_bool():
  with pytest.raises(ValueError, match="data_parallel"):
    dp.config(data_parallel="yes").validate()
