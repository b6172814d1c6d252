"""The reliability review's cases, each through the code path a user takes.

- Inputs checked before the workdir is locked: a refused run writes nothing, so the corrected
  command is not refused as "a different configuration".
- A missing GTSRB-IC / MS-COCO-IC cache names the ``prepare_data`` command that builds it, and
  that command works.
- A damaged ``metrics.jsonl``: the damaged line is named, ``results.json`` says which step its
  final training loss is from.
- Faults: a full disk during a checkpoint, a read-only workdir, two runs in one workdir, files
  of another schema, a bad list entry, an unknown demo preset: one line naming the problem.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from experiments import evaluation, masks_study, perceptual_study, report, sweep_grid
from experiments.configs import attention_masks as masks_cfgs
from experiments.configs import perceptual_cam as perc_cfgs
from experiments.configs import report as report_cfgs
from experiments.configs import sweep as sweep_cfgs
from experiments.perceptual_study import attacks as perc_attacks
from percadv_jax import attacks, io
from tests.data.coco_fixture import write_coco
from tests.data.gtsrb_fixture import write_gtsrb
from tests.experiments.test_binaries import ROOT, _env, run_binary
from tests.experiments.test_cli import _one_line_error

MASKS = "experiments.attention_masks"


# ---------------------------------------------------------------- checked before the lock


def _masks(**fields):
  c = masks_cfgs.get_config("quick")
  for k, v in fields.items():
    sub, _, f = k.rpartition(".")
    (c[sub] if sub else c)[f] = v
  return c


def _perc(**fields):
  c = perc_cfgs.get_config("quick")
  for k, v in fields.items():
    sub, _, f = k.rpartition(".")
    (c[sub] if sub else c)[f] = v
  return c


def _sweep(**fields):
  c = sweep_cfgs.get_config("quick")
  for k, v in fields.items():
    sub, _, f = k.rpartition(".")
    (c[sub] if sub else c)[f] = v
  return c


def _bad_inputs(tmp):
  """``{name: (run, config, message)}``: the refused runs of the review."""
  empty = tmp / "empty"
  empty.mkdir()
  bad_h5 = tmp / "bad.h5"
  bad_h5.write_bytes(b"garbage")
  ckpt = tmp / "ckpt"
  ckpt.mkdir()
  (ckpt / "config.json").write_text('{"model": ')
  study = tmp / "study"
  study.mkdir()
  (study / "results.json").write_text('{"study": "attention')
  rep = report_cfgs.get_config()
  rep.studies = (str(study),)
  cases = [
      ("masks_missing_cache", masks_study.run,
       _masks(**{"data.dataset": "gtsrb_ic", "data.data_dir": str(empty)}),
       r"no prepared GTSRB-IC cache"),
      ("masks_image_size_8", masks_study.run, _masks(**{"data.image_size": 8}),
       r"VGG19 needs inputs of at least 32x32 pixels"),
      ("masks_seed", masks_study.run, _masks(seed=-1), r"seed must be an integer >= 0, got -1"),
      ("masks_batch_size", masks_study.run, _masks(**{"train.batch_size": 100000}),
       r"train.batch_size: the training set has 256 examples, fewer than batch_size=100000"),
      ("perceptual_seeds", perceptual_study.run, _perc(seeds=(-1,)),
       r"seeds entry must be an integer >= 0, got -1"),
      ("perceptual_keras_weights", perceptual_study.run,
       _perc(**{"model.keras_weights": str(bad_h5)}), rf"{bad_h5}.* is not an HDF5 file"),
      ("perceptual_empty_pets", perceptual_study.run,
       _perc(**{"data.dataset": "oxford_iiit_pet", "data.data_dir": str(empty)}),
       rf"no prepared TFDS dataset 'oxford_iiit_pet' under {empty}"),
      ("sweep_missing_cache", sweep_grid.run,
       _sweep(**{"data.dataset": "gtsrb_ic", "data.data_dir": str(empty)}),
       rf"no prepared GTSRB-IC cache of split test .*`python -m experiments.prepare_data "
       rf"--config=experiments/configs/prepare_data.py:gtsrb --config.raw_dir=RAW "
       rf"--config.data.data_dir={empty} --config.splits=test`"),
      ("sweep_dataset", sweep_grid.run, _sweep(**{"data.dataset": "mnist"}),
       r"unknown data.dataset 'mnist'"),
      ("sweep_split", sweep_grid.run, _sweep(**{"data.split": "validation"}),
       r"unknown split 'validation'"),
      ("sweep_model", sweep_grid.run, _sweep(**{"model.name": "resnet"}),
       r"unknown model 'resnet'"),
      ("sweep_image_size_4", sweep_grid.run, _sweep(**{"data.image_size": 4}),
       r"image_size must be an integer >= 8, got 4"),
      ("sweep_checkpoint_config", sweep_grid.run, _sweep(checkpoints=(str(ckpt),)),
       rf"checkpoint '{ckpt}': {ckpt}/config.json: truncated JSON file"),
      ("report_results", report.run, rep,
       rf"{study}/results.json: (truncated|corrupt) JSON file"),
  ]
  return {name: rest for name, *rest in cases}


@pytest.mark.parametrize("name", [
    "masks_missing_cache", "masks_image_size_8", "masks_seed", "masks_batch_size",
    "perceptual_seeds", "perceptual_keras_weights", "perceptual_empty_pets",
    "sweep_missing_cache", "sweep_dataset",
    "sweep_split", "sweep_model", "sweep_image_size_4", "sweep_checkpoint_config",
    "report_results"])
def test_refused_runs_write_nothing(tmp_path, name):
  run, config, message = _bad_inputs(tmp_path)[name]
  workdir = tmp_path / "w"
  with pytest.raises(ValueError, match=message):
    run(config, str(workdir))
  assert not workdir.exists()  # not locked: the corrected command is accepted


def test_corrected_rerun_is_not_a_different_configuration(tmp_path):
  workdir = str(tmp_path / "sweep")
  with pytest.raises(ValueError, match="VGG19 needs inputs of at least 32x32"):
    sweep_grid.run(_sweep(eps=(0.0,), **{"data.image_size": 16}), workdir)
  rows = sweep_grid.run(_sweep(eps=(0.0,)), workdir)  # the corrected command
  assert [r["attack"] for r in rows] == ["none"]
  assert io.read_json(os.path.join(workdir, "setup.json"))["data"]["image_size"] == 0


# ------------------------------------------------------- the command of a missing cache


def _suggested_command(proc, raw):
  """The ``prepare_data`` command in a one-line error, with RAW replaced by ``raw``."""
  line = _one_line_error(proc, "no prepared")
  args = shlex.split(line.split("`")[1])
  assert args[:3] == ["python", "-m", "experiments.prepare_data"], args
  assert "--config.raw_dir=RAW" in args
  return [sys.executable, *[f"--config.raw_dir={raw}" if a == "--config.raw_dir=RAW" else a
                            for a in args[1:]]]


@pytest.mark.parametrize("dataset", ["gtsrb_ic", "coco_ic"])
def test_missing_cache_names_the_command_that_builds_it(tmp_path, dataset):
  raw, data_dir, workdir = (str(tmp_path / n) for n in ("raw", "data", "w"))
  if dataset == "gtsrb_ic":
    write_gtsrb(raw, classes=(0, 1, 2), per_class=4, num_test=6, defects=False)
    args = ["--config=experiments/configs/attention_masks.py:quick",
            "--config.data.dataset=gtsrb_ic"]
  else:  # the paper's preset: COCO-2014, its ten classes, one crop per object
    write_coco(raw, year=2014, splits=("train", "val"), per_class=(3, 2))
    args = ["--config=experiments/configs/attention_masks.py:coco_paper"]
  os.makedirs(data_dir)
  proc = run_binary(MASKS, *args, f"--config.data.data_dir={data_dir}", f"--workdir={workdir}",
                    timeout=600)
  command = _suggested_command(proc, raw)
  assert not os.path.exists(workdir)
  prep = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True,
                        timeout=900)
  assert prep.returncode == 0, prep.stderr[-3000:]
  # The study finds its cache: the same command now fails only at the next check (the fixture
  # has fewer images than the preset's batch size), still before anything is written.
  proc = run_binary(MASKS, *args, f"--config.data.data_dir={data_dir}", f"--workdir={workdir}",
                    "--config.train.batch_size=100000", timeout=600)
  _one_line_error(proc, "train.batch_size: the training set has")
  assert not os.path.exists(workdir)
  c = masks_cfgs.get_config("quick" if dataset == "gtsrb_ic" else "coco_paper")
  c.data.update(dataset=dataset, data_dir=data_dir)
  c.train.batch_size = 4
  train_src, _, eval_arrays = masks_study.check_inputs(c)
  assert train_src.info.name.startswith(dataset.split("_")[0]) and len(eval_arrays["label"])


# ------------------------------------------------------------- a damaged metrics.jsonl


def _small_masks():
  """One model, 6 training steps (records at steps 4 and 6), a tiny evaluation."""
  c = masks_cfgs.get_config("quick")
  c.models = ("full_natural",)
  c.data.update(num_train=192, num_test=32)
  c.eval.update(examples=16, curve_examples=8, curve_eps=(0.0, 8 / 255), batch_size=16,
                diagnostics=False)
  return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("masks") / "w")
  results = masks_study.run(_small_masks(), workdir)
  return workdir, results


def _copy(finished, tmp_path):
  workdir = str(tmp_path / "w")
  shutil.copytree(finished[0], workdir)
  return workdir, os.path.join(workdir, "models", "full_natural", "metrics.jsonl")


@pytest.mark.slow  # the finished study run: ~110 s
def test_results_say_which_step_the_final_loss_is_from(finished, tmp_path):
  m = finished[1]["models"]["full_natural"]
  assert m["train_steps"] == 6 and m["final_train_step"] == 6
  workdir, metrics = _copy(finished, tmp_path)
  records = io.read_jsonl(metrics)
  assert [r["step"] for r in records] == [4, 6]
  lines = open(metrics).read().splitlines()
  with open(metrics, "w") as f:  # the last record torn, the evaluation deleted
    f.write(lines[0] + "\n" + lines[1][:len(lines[1]) // 2])
  os.remove(os.path.join(workdir, "eval", "full_natural.json"))
  with pytest.warns(UserWarning) as warned:
    results = masks_study.run(_small_masks(), workdir)
  text = [str(w.message) for w in warned]
  assert any(f"{metrics}: dropping line 2, a record torn" in t for t in text), text
  assert any(f"{metrics} ends at step 4, but training ended at step 6" in t for t in text), text
  m = results["models"]["full_natural"]
  assert m["final_train_step"] == 4 and m["final_train_loss"] == records[0]["loss"]
  assert m["train_steps"] == 6
  assert io.read_json(os.path.join(workdir, "results.json"))["models"]["full_natural"][
      "final_train_step"] == 4


@pytest.mark.slow  # the finished study run: ~110 s
def test_a_damaged_line_in_the_metrics_log_is_named(finished, tmp_path):
  workdir, metrics = _copy(finished, tmp_path)
  lines = open(metrics).read().splitlines()
  with open(metrics, "w") as f:
    f.write('{"step": 4, "lo\n' + lines[1] + "\n")
  os.remove(os.path.join(workdir, "eval", "full_natural.json"))
  with pytest.raises(ValueError, match=rf"^{metrics}: line 1 is not valid JSON"):
    masks_study.run(_small_masks(), workdir)


@pytest.mark.slow  # the finished study run: ~110 s
def test_an_evaluation_of_another_schema_is_named(finished, tmp_path):
  workdir, _ = _copy(finished, tmp_path)
  path = os.path.join(workdir, "eval", "full_natural.json")
  io.write_json(path, {"clean": 0.5, "robust": 0.1})
  with pytest.raises(ValueError, match=rf"{path} is not a finished evaluation of this study "
                     r"\(it lacks per_attack, curve, masked, adversarial\); delete it"):
    masks_study.run(_small_masks(), workdir)
  io.write_json(path, [1, 2])
  with pytest.raises(ValueError, match=rf"{path} is not a finished evaluation .*is a list"):
    masks_study.run(_small_masks(), workdir)


# ------------------------------------------------------------------------------ faults


_FULL_DISK = textwrap.dedent("""
    import errno, runpy, sys
    from orbax.checkpoint._src.serialization import serialization

    async def full(*args, **kwargs):  # every array write of a checkpoint: the disk is full
      raise OSError(errno.ENOSPC, "No space left on device")

    serialization.async_serialize_from_host = full
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
""")


def test_full_disk_during_a_checkpoint_is_one_line(tmp_path):
  workdir = str(tmp_path / "w")
  proc = subprocess.run(
      [sys.executable, "-c", _FULL_DISK, MASKS,
       "--config=experiments/configs/attention_masks.py:quick", "--config.models=full_natural",
       f"--workdir={workdir}"], cwd=ROOT, env=_env(), capture_output=True, text=True,
      timeout=900)
  ckpts = os.path.join(workdir, "models", "full_natural", "checkpoints")
  line = _one_line_error(proc, f"{ckpts}: No space left on device (saving checkpoint step 4)")
  assert proc.stderr.strip() == line, proc.stderr[-3000:]  # no thread tracebacks, no logs


_READ_ONLY = textwrap.dedent("""
    import errno, os, sys
    from experiments import cli

    def run(config, workdir):  # what writing into a read-only file system raises
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(workdir, "config.json"))

    cli.define_flags("report")
    cli.main(run)
""")


def test_read_only_workdir_is_one_line(tmp_path):
  workdir = str(tmp_path / "w")
  proc = subprocess.run([sys.executable, "-c", _READ_ONLY, f"--workdir={workdir}"], cwd=ROOT,
                        env=_env(), capture_output=True, text=True, timeout=300)
  _one_line_error(proc, f"error: {workdir}/config.json: Read-only file system")
  assert proc.returncode == 1


def test_read_only_file_system_is_one_line(tmp_path):
  """The same on a real read-only file system (a tmpfs mounted read-only; needs root)."""
  mnt = tmp_path / "ro"
  mnt.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)],
                    capture_output=True).returncode:
    pytest.skip("cannot mount a read-only tmpfs here")
  try:
    study = tmp_path / "study"
    _write_study(study)
    proc = run_binary("experiments.report", f"--config.studies={study}",
                      f"--workdir={mnt / 'w'}", timeout=300)
    _one_line_error(proc, f"{mnt / 'w'}: Read-only file system")
  finally:
    subprocess.run(["umount", str(mnt)], check=True)


def _write_study(path):
  """A minimal finished attention_masks results.json in ``path``."""
  model = {"clean": 0.9, "robust": 0.1, "per_attack": {"pgd": 0.2, "apgd": 0.1}}
  io.write_json(os.path.join(path, "results.json"), {
      "study": "attention_masks", "dataset": {"name": "gtsrb_ic"},
      "models": {"full_natural": model}, "findings": ["a finding"]})


def test_a_second_run_in_the_same_workdir_is_refused(tmp_path):
  study, workdir = tmp_path / "study", str(tmp_path / "w")
  _write_study(study)
  holder = subprocess.Popen(
      [sys.executable, "-c", textwrap.dedent(f"""
          from experiments.configs import report
          from percadv_jax import io
          c = report.get_config()
          c.studies = ({str(study)!r},)
          io.lock_config({workdir!r}, c)  # a run in progress
          print("locked", flush=True)
          input()
      """)], cwd=ROOT, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    proc = run_binary("experiments.report", f"--config.studies={study}", f"--workdir={workdir}",
                      timeout=300)
    _one_line_error(proc, f"{workdir} is in use by another run (process {holder.pid} holds "
                    f"{workdir}/.lock)")
    assert not os.path.exists(os.path.join(workdir, "table4.md"))
  finally:
    holder.communicate("\n", timeout=60)
  proc = run_binary("experiments.report", f"--config.studies={study}", f"--workdir={workdir}",
                    timeout=300)  # the first run has ended: its lock is gone with it
  assert proc.returncode == 0, proc.stderr[-2000:]
  with pytest.raises(ValueError, match=f"{workdir} is in use by another run"):
    _in_other_process_holding(workdir)


def _in_other_process_holding(workdir):
  """``io.hold_workdir`` while a child process holds ``workdir``."""
  child = subprocess.Popen(
      [sys.executable, "-c", f"from percadv_jax import io; io.hold_workdir({workdir!r}); "
       "print('held', flush=True); input()"],
      cwd=ROOT, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert child.stdout.readline().strip() == "held"
    io.hold_workdir(workdir)
  finally:
    child.communicate("\n", timeout=60)


def test_files_of_another_schema_are_named(tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "config.json").write_text("[1, 2]")
  with pytest.raises(ValueError, match=rf"{workdir}/config.json: not a configuration \(a JSON "
                     r"object expected, got list \[1, 2\]\)"):
    io.lock_config(str(workdir), {"seed": 0})
  study = tmp_path / "study"
  io.write_json(str(study / "results.json"), {"study": "attention_masks", "models": {
      "full_natural": {"clean": 0.5}}})
  c = report_cfgs.get_config()
  c.studies = (str(study),)
  with pytest.raises(ValueError, match=rf"{study}/results.json lacks findings, dataset.name, "
                     r"models.full_natural.per_attack.pgd"):
    report.run(c, str(tmp_path / "r"))
  assert not (tmp_path / "r").exists()
  ckpt = tmp_path / "ckpt"
  io.write_json(str(ckpt / "config.json"), [1, 2])
  with pytest.raises(ValueError, match=rf"checkpoint '{ckpt}': {ckpt}/config.json is not a "
                     r"training configuration \(a JSON object expected, got list\)"):
    sweep_grid.train_config(str(ckpt))
  io.write_json(str(ckpt / "config.json"), {"modell": "vgg19"})
  with pytest.raises(ValueError, match=r"is not a training configuration \(.*'modell'"):
    sweep_grid.train_config(str(ckpt))
  seed_dir = tmp_path / "seed_0"
  io.write_json(str(seed_dir / "stages" / "selection.json"), {"indices": [3]})
  with pytest.raises(ValueError, match=rf"{seed_dir}/stages/selection.json is not an image "
                     r"selection of this study \(it lacks labels, label_source"):
    perc_attacks.select(perc_cfgs.get_config("quick"), str(seed_dir), None, None, 10, 0)


def test_an_evaluation_record_of_another_evaluation_is_named(tmp_path):
  store = str(tmp_path)
  rng = np.random.default_rng(0)
  data = {"image": rng.uniform(size=(8, 4, 4, 3)).astype(np.float32),
          "label": rng.integers(0, 3, 8).astype(np.int32),
          "mask": np.ones((8, 4, 4, 1), np.float32)}
  w = jax.numpy.asarray(rng.normal(size=(48, 3)), jax.numpy.float32)
  logits_fn = jax.tree_util.Partial(lambda w, x: x.reshape(x.shape[0], -1) @ w, w)
  both = {"pgd": attacks.Attack("pgd", eps=0.05, steps=1),
          "apgd": attacks.Attack("apgd", eps=0.05, steps=1)}
  kw = dict(logits_fn=logits_fn, data=data, key=jax.random.key(0), batch_size=8)
  evaluation.evaluate(store, {"m": 1}, attacks=both, **kw)
  (npz,) = [os.path.join(store, f) for f in os.listdir(store) if f.endswith(".npz")]
  one = evaluation.evaluate(None, {"m": 1}, attacks={"pgd": both["pgd"]}, **kw)
  with io.atomic_open(npz, "wb") as f:  # a valid record, of another evaluation
    np.savez(f, **one.to_arrays())
  with pytest.raises(ValueError, match=rf"{npz} is not this evaluation \(it holds attacks "
                     r"\['pgd'\] on 8 examples, this one runs \['apgd', 'pgd'\] on 8\)"):
    evaluation.evaluate(store, {"m": 1}, attacks=both, **kw)
  # The perceptual study's records hold the adversarial images; one without them is refused.
  evaluation.evaluate(store, {"m": 2}, attacks={"pgd": both["pgd"]}, return_adversarial=True,
                      **kw)
  (npz,) = [os.path.join(store, f) for f in os.listdir(store)
            if f.endswith(".npz") and f != os.path.basename(npz)]
  with io.atomic_open(npz, "wb") as f:
    np.savez(f, **one.to_arrays())
  with pytest.raises(ValueError, match=rf"{npz} lacks the adversarial images of \['pgd'\]"):
    evaluation.evaluate(store, {"m": 2}, attacks={"pgd": both["pgd"]}, return_adversarial=True,
                        **kw)


def test_bad_list_entries_and_presets_name_the_field():
  proc = run_binary("experiments.sweep", "--config=experiments/configs/sweep.py:quick",
                    "--config.steps=('a',)", "--workdir=/nonexistent/never", timeout=300)
  _one_line_error(proc, "steps entry must be an integer, got 'a'")
  proc = run_binary("experiments.demo", "--config.preset=xyz", "--workdir=/nonexistent/never",
                    timeout=300)
  _one_line_error(proc, "unknown preset 'xyz'; choose one of demo, quick")
