"""experiments/sweep.py: a sweep interrupted half-way and restarted == an uninterrupted one."""

import dataclasses
import json
import os

import numpy as np
import pytest
from absl import flags

from experiments import sweep

TINY = "tests.parallel._tiny:TinyCNN"  # a user's own Flax module (init:SEED checkpoints)


def _config() -> sweep.SweepConfig:
  return sweep.SweepConfig(checkpoints=("init:0", "init:1"), attacks=("fgsm", "pgd"),
                           eps=(0.0, 4 / 255, 16 / 255), steps=(2,), num_examples=12,
                           image_size=16, dataset_kwargs={"num_classes": 3}, model=TINY,
                           model_kwargs={}, batch_size=8, seed=3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  config = _config()
  full = str(tmp_path_factory.mktemp("full"))
  rows = sweep.run(config, full)
  broken = str(tmp_path_factory.mktemp("broken"))
  with pytest.raises(sweep.SweepInterrupted):
    sweep.run(config, broken, fail_after=4)
  partial = json.load(open(os.path.join(broken, sweep.RESULTS)))
  resumed_rows = sweep.run(config, broken)
  lines = [json.loads(l) for l in open(os.path.join(broken, "metrics.jsonl"))]
  return {"config": config, "full": full, "broken": broken, "rows": rows,
          "resumed_rows": resumed_rows, "partial": partial, "timed": lines}


def _read(path):
  with open(path, "rb") as f:
    return f.read()


def test_resumed_sweep_writes_the_same_files(runs):
  assert len(runs["partial"]["cells"]) == 4  # the crash left 4 finished cells on disk
  assert len(runs["timed"]) == 10  # 4 before the crash + only the 6 missing ones after it
  for name in (sweep.RESULTS, "cells.csv", "cells.md"):
    assert _read(os.path.join(runs["full"], name)) == _read(os.path.join(runs["broken"], name))
  assert runs["rows"] == runs["resumed_rows"]
  png = _read(os.path.join(runs["broken"], "accuracy_vs_eps.png"))
  assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_cells_cover_the_grid_and_make_sense(runs):
  rows = runs["rows"]
  ids = [r["id"] for r in rows]
  assert len(ids) == len(set(ids)) == 10  # 2 checkpoints x (clean + 2 fgsm + 2 pgd)
  assert [c.id for c in sweep.grid(runs["config"])] == ids
  for r in rows:
    assert r["count"] == 12
    assert r["distance"] <= r["eps"] + 1e-6
    assert 0.0 <= r["robust"] <= min(r["clean"], r["adversarial"]) + 1e-9
  by = {(r["checkpoint"], r["attack"], round(r["eps"] * 255)): r for r in rows}
  for ck in runs["config"].checkpoints:
    assert by[(ck, "none", 0)]["distance"] == 0.0
    assert by[(ck, "pgd", 16)]["distance"] > 4 / 255  # the bigger ball was used
    assert by[(ck, "fgsm", 16)]["distance"] == pytest.approx(16 / 255, abs=1e-6)
    assert by[(ck, "pgd", 16)]["robust"] <= by[(ck, "none", 0)]["clean"]


def test_resume_refuses_another_setup(runs):
  other = dataclasses.replace(runs["config"], seed=4)
  with pytest.raises(ValueError, match="another setup"):
    sweep.run(other, runs["full"])


def test_flags_and_json_config(tmp_path):
  path = tmp_path / "c.json"
  path.write_text(json.dumps({"attacks": ["apgd"], "eps": ["8/255"], "steps": [5],
                              "batch_size": 16}))
  fv = flags.FlagValues()
  sweep.define_flags(fv)
  fv(["sweep", "--workdir=/tmp/x", f"--config={path}", "--batch_size=32", "--steps=3,7"])
  cfg = sweep.config_from_flags(fv)
  assert cfg.attacks == ("apgd",) and cfg.eps == (8 / 255,)
  assert cfg.batch_size == 32 and cfg.steps == (3, 7)  # command line beats the file
  assert cfg.num_examples == 512  # dataclass default, not overridden by the flag default
  with pytest.raises(ValueError, match="unknown attack"):
    sweep.SweepConfig(attacks=("cw",)).validate()
  with pytest.raises(ValueError, match="neither init:SEED"):
    sweep.SweepConfig(checkpoints=(str(tmp_path),)).validate()
  assert sweep.parse_number("8/255") == pytest.approx(8 / 255)
