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
  with pytest.warns(UserWarning, match="torn"):
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


def test_jsonl_torn_line_does_not_hide_later_records(tmp_path):
  """A crash mid-write, then a resumed writer: the torn line is skipped, nothing after it lost."""
  path = str(tmp_path / "m.jsonl")
  io.append_jsonl(path, {"step": 1})
  with open(path, "a") as f:
    f.write('{"step": 2, "loss": 0.')  # killed mid-write: no newline
  with pytest.warns(UserWarning, match="line 2, a record torn"):
    assert [r["step"] for r in io.read_jsonl(path)] == [1]
  io.append_jsonl(path, {"step": 3})  # the resumed run appends on a fresh line
  io.append_jsonl(path, {"step": 4})
  with open(path) as f:
    assert f.read().splitlines()[1] == '{"step": 2, "loss": 0.'
  with pytest.warns(UserWarning, match=r"m\.jsonl: skipping line 2"):
    assert [r["step"] for r in io.read_jsonl(path)] == [1, 3, 4]
  # A torn string (unterminated) and a torn nested object count as torn too.
  with open(path, "a") as f:
    f.write('{"step": 5, "a": {"b": 1}\n{"step": 6, "name": "ab\n')
  io.append_jsonl(path, {"step": 7})
  with pytest.warns(UserWarning):
    assert [r["step"] for r in io.read_jsonl(path)] == [1, 3, 4, 7]


@pytest.mark.parametrize("bad", ['{"step": 2}garbage', "\0\0\0\0\0\0", "[1, 2]", "step=2"])
def test_jsonl_bad_line_in_the_middle_names_path_and_line(tmp_path, bad):
  path = str(tmp_path / "m.jsonl")
  io.append_jsonl(path, {"step": 1})
  with open(path, "a") as f:
    f.write(bad + "\n")
  io.append_jsonl(path, {"step": 3})
  with pytest.raises(ValueError, match=rf"{path}: line 2 is not (valid JSON|a JSON object)"):
    io.read_jsonl(path)


@pytest.mark.parametrize("content, what", [('{"v": 1, "w": [1, 2', "truncated"),
                                           ("", "truncated"),
                                           ('{"v": 1}}', "corrupt"),
                                           (b"\0" * 16, "corrupt"),
                                           (b'{"v": "\xff"}', "corrupt")])
def test_read_json_corrupt_names_the_file(tmp_path, content, what):
  path = tmp_path / "eval.json"
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content)
  with pytest.raises(ValueError, match=rf"^{path}: {what} JSON file") as e:
    io.read_json(str(path))
  assert e.value.__cause__ is None and e.value.__suppress_context__
  with pytest.raises(FileNotFoundError):
    io.read_json(str(tmp_path / "missing.json"))
