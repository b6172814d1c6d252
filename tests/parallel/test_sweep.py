"""experiments.sweep_grid: resume == uninterrupted, nothing deleted, cells keyed by step."""

import os
import shutil

import pytest

from experiments import evaluation, sweep_grid
from experiments.configs import sweep as sweep_cfgs
from percadv_jax import io, train

TINY = "tests.parallel._tiny:TinyCNN"  # a user's own Flax module (init:SEED checkpoints)


def _config(**over):
  c = sweep_cfgs.get_config("default")
  c.checkpoints = ("init:0", "init:1")
  c.attacks = ("fgsm", "pgd")
  c.eps = (0.0, 4 / 255, 16 / 255)
  c.steps = (2,)
  c.data.update(num_examples=12, image_size=16, num_classes=3)
  c.model.name = TINY
  with c.unlocked():
    c.model.kwargs = {}
  c.batch_size = 8
  c.seed = 3
  for k, v in over.items():
    c[k] = v
  return c


class Crash(RuntimeError):
  pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  config = _config()
  full = str(tmp_path_factory.mktemp("full"))
  rows = sweep_grid.run(config, full)
  broken = str(tmp_path_factory.mktemp("broken"))
  real, calls = evaluation.evaluate, []

  def crashing(*a, **k):  # a kill after 4 finished cells
    if len(calls) == 4:
      raise Crash()
    calls.append(1)
    return real(*a, **k)
  sweep_grid.evaluation.evaluate = crashing
  try:
    with pytest.raises(Crash):
      sweep_grid.run(config, broken)
  finally:
    sweep_grid.evaluation.evaluate = real
  done_before = sorted(f for f in os.listdir(os.path.join(broken, "evaluations"))
                       if f.endswith(".npz"))
  resumed_rows = sweep_grid.run(config, broken)
  return {"config": config, "full": full, "broken": broken, "rows": rows,
          "resumed_rows": resumed_rows, "done_before": done_before}


def _read(path):
  with open(path, "rb") as f:
    return f.read()


def test_resumed_sweep_writes_the_same_files(runs):
  assert len(runs["done_before"]) == 4  # the crash left 4 finished cells on disk
  for name in (sweep_grid.RESULTS, "cells.csv", "cells.md"):
    assert _read(os.path.join(runs["full"], name)) == _read(os.path.join(runs["broken"], name))
  assert runs["rows"] == runs["resumed_rows"]
  png = _read(os.path.join(runs["broken"], "accuracy_vs_eps.png"))
  assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_cells_cover_the_grid_and_make_sense(runs):
  rows = runs["rows"]
  ids = [r["id"] for r in rows]
  assert len(ids) == len(set(ids)) == 10  # 2 checkpoints x (clean + 2 fgsm + 2 pgd)
  assert [c.id for c in sweep_grid.grid(runs["config"])] == ids
  for r in rows:
    assert r["count"] == 12
    assert r["distance"] <= r["eps"] + 1e-6
    assert 0.0 <= r["robust"] <= r["clean"] + 1e-9
  by = {(r["checkpoint"], r["attack"], round(r["eps"] * 255)): r for r in rows}
  for ck in runs["config"].checkpoints:
    assert by[(ck, "none", 0)]["distance"] == 0.0
    assert by[(ck, "pgd", 16)]["distance"] > 4 / 255  # the bigger ball was used
    assert by[(ck, "fgsm", 16)]["distance"] == pytest.approx(16 / 255, abs=1e-6)
    assert by[(ck, "pgd", 16)]["robust"] <= by[(ck, "none", 0)]["clean"]


def test_a_changed_grid_keeps_finished_cells(runs, tmp_path):
  w = str(tmp_path / "w")
  shutil.copytree(runs["full"], w)
  kept = set(os.listdir(os.path.join(w, "evaluations")))
  rows = sweep_grid.run(_config(eps=(0.0, 8 / 255)), w)  # 4/255 and 16/255 leave the grid
  assert {round(r["eps"] * 255) for r in rows} == {0, 8}
  assert kept < set(os.listdir(os.path.join(w, "evaluations")))  # nothing deleted
  back = sweep_grid.run(runs["config"], w)  # the old grid again: reused, same numbers
  assert back == runs["rows"]


def test_another_setup_is_refused_without_touching_config(runs):
  before = _read(os.path.join(runs["full"], "config.json"))
  with pytest.raises(ValueError, match=r"different configuration \(seed: 3 -> 4\)"):
    sweep_grid.run(_config(seed=4), runs["full"])
  assert _read(os.path.join(runs["full"], "config.json")) == before


def test_cells_are_keyed_by_checkpoint_step(tmp_path):
  """A training workdir swept at step 2, then again after training reached step 4: the table
  shows step-4 numbers only, and the step-2 cells stay on disk."""
  from percadv_jax import data as data_lib

  class Stop(RuntimeError):
    pass

  src = data_lib.load("synthetic_signs", split="train", num_examples=32, image_size=32,
                      num_classes=3, seed=0)
  tc = train.TrainConfig(model="vgg19", model_kwargs={"variant": "small", "width": 0.0625},
                         batch_size=8, steps=4, checkpoint_every=2, log_every=2)
  ck = str(tmp_path / "train")

  def stop_at_2(step, state, metrics):
    if step == 2:
      raise Stop()
  with pytest.raises(Stop):
    train.fit(tc, ck, src, on_step=stop_at_2)
  c = _config(checkpoints=(ck,), attacks=("fgsm",), eps=(0.0, 8 / 255))
  c.data.update(image_size=32)
  w = str(tmp_path / "sweep")
  first = sweep_grid.run(c, w)
  assert {r["checkpoint_step"] for r in first} == {2}
  train.fit(tc, ck, src)  # training goes on to step 4
  second = sweep_grid.run(c, w)
  assert {r["checkpoint_step"] for r in second} == {4}
  assert len(os.listdir(os.path.join(w, "evaluations"))) == 2 * 2 * len(first)  # npz + json
  assert io.read_json(os.path.join(w, sweep_grid.RESULTS))["cells"] == second
