import json
import os

import numpy as np
import pytest

from percadv_jax import checks, io


def test_atomic_write_leaves_old_file_on_crash(tmp_path):
  path = str(tmp_path / "a.json")
  io.write_json(path, {"v": 1})
  with pytest.raises(RuntimeError):
    with io.atomic_open(path) as f:
      f.write('{"v": 2')
      raise RuntimeError("killed")
  assert io.read_json(path) == {"v": 1}
  assert os.listdir(tmp_path) == ["a.json"]


def test_jsonl_ignores_torn_last_line(tmp_path):
  path = str(tmp_path / "m.jsonl")
  io.append_jsonl(path, {"step": 1, "acc": np.float32(0.5)})
  with open(path, "a") as f:
    f.write('{"step": 2, "ac')
  rows = io.read_jsonl(path)
  assert [r["step"] for r in rows] == [1] and rows[0]["acc"] == 0.5


def test_tables_markdown_and_csv_agree(tmp_path):
  rows = [{"model": "a", "acc": 0.91234}, {"model": "b", "acc": 0.5}]
  md = io.write_table(str(tmp_path / "t"), rows, digits=3)
  assert "| a | 0.912 |" in md
  assert (tmp_path / "t.csv").read_text().splitlines()[1] == "a,0.91234"


@pytest.mark.parametrize("x,msg", [
    (np.zeros((2, 8, 8), np.float32), "rank 4"),
    (np.zeros((2, 8, 8, 1), np.float32), "3 channels"),
    (np.zeros((2, 8, 8, 3), np.uint8), "float"),
    (np.full((2, 8, 8, 3), np.nan, np.float32), "NaN"),
    (np.full((2, 8, 8, 3), 255.0, np.float32), r"\[0, 1\]"),
])
def test_check_images_names_the_problem(x, msg):
  with pytest.raises(ValueError, match=msg):
    checks.check_images(x)


def test_check_mask():
  checks.check_mask(np.ones((2, 8, 8, 1)), (2, 8, 8, 3))
  with pytest.raises(ValueError, match="broadcast"):
    checks.check_mask(np.ones((2, 7, 8, 1)), (2, 8, 8, 3))
  with pytest.raises(ValueError, match="0 and 1"):
    checks.check_mask(np.full((2, 8, 8, 1), 0.5), (2, 8, 8, 3))
