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


def test_jsonl_append_cuts_a_torn_last_line(tmp_path):
  """A crash mid-write, then a resumed writer: the torn line goes, nothing after it is lost."""
  path = str(tmp_path / "m.jsonl")
  io.append_jsonl(path, {"step": 1})
  with open(path, "a") as f:
    f.write('{"step": 2, "loss": 0.')  # killed mid-write: no newline
  with pytest.warns(UserWarning, match=r"m\.jsonl: skipping line 2, a record torn"):
    assert [r["step"] for r in io.read_jsonl(path)] == [1]
  io.append_jsonl(path, {"step": 3})  # the resumed run: the torn line is cut off first
  io.append_jsonl(path, {"step": 4})
  lines = open(path).read().split("\n")
  assert lines[-1] == "" and [json.loads(line)["step"] for line in lines[:-1]] == [1, 3, 4]
  # A complete record whose newline was lost is kept, and the next one starts a line.
  with open(path, "a") as f:
    f.write('{"step": 5}')
  io.append_jsonl(path, {"step": 6})
  assert [r["step"] for r in io.read_jsonl(path)] == [1, 3, 4, 5, 6]


def test_drop_records_after_keeps_the_lines_as_written(tmp_path):
  path = str(tmp_path / "m.jsonl")
  for step in (2, 4, 6):
    io.append_jsonl(path, {"step": step})
  io.append_jsonl(path, {"event": "start"})
  before = open(path).read().splitlines()
  io.drop_records_after(path, 6)  # nothing to drop: the file is left alone
  assert open(path).read().splitlines() == before
  with open(path, "a") as f:
    f.write('{"step": 8, "lo')
  with pytest.warns(UserWarning, match=r"m\.jsonl: dropping line 5, a record torn"):
    io.drop_records_after(path, 3)  # the records of steps 4 and 6 and the torn line go
  assert open(path).read().splitlines() == [before[0], before[3]]
  io.drop_records_after(str(tmp_path / "missing.jsonl"), 0)


@pytest.mark.parametrize("bad", ['{"step": 2}garbage', "\0\0\0\0\0\0", "[1, 2]", "step=2",
                                 '{"step": 2, "loss": 0.'])
def test_jsonl_bad_line_in_the_middle_names_path_and_line(tmp_path, bad):
  """Only the last line can be torn: any other bad line is corruption, for readers and for
  ``drop_records_after``."""
  path = str(tmp_path / "m.jsonl")
  io.append_jsonl(path, {"step": 1})
  with open(path, "a") as f:
    f.write(bad + "\n")
  io.append_jsonl(path, {"step": 3})
  match = rf"{path}: line 2 is not (valid JSON|a JSON object)"
  with pytest.raises(ValueError, match=match):
    io.read_jsonl(path)
  with pytest.raises(ValueError, match=match):
    io.drop_records_after(path, 0)


def test_jsonl_bad_last_line_that_is_not_an_object_is_corruption(tmp_path):
  path = str(tmp_path / "m.jsonl")
  io.append_jsonl(path, {"step": 1})
  with open(path, "a") as f:
    f.write("[1, 2]\n")
  with pytest.raises(ValueError, match="line 2 is not a JSON object"):
    io.read_jsonl(path)


def test_lock_config_names_fields_and_writes_nothing_when_refused(tmp_path):
  import ml_collections
  def config(**train):
    return ml_collections.ConfigDict({"seed": 0, "train": {"epochs": 1, "eps": (0.0, 0.5),
                                                           **train}})
  w = str(tmp_path / "w")
  assert io.lock_config(w, config()) == {"seed": 0, "train": {"epochs": 1, "eps": [0.0, 0.5]}}
  before = (tmp_path / "w" / "config.json").read_text()
  with pytest.raises(ValueError) as e:
    io.lock_config(w, config(epochs=3, eps=(0.0,), extra=np.int64(2)))
  assert ("different configuration (train.epochs: 1 -> 3; train.eps: [0.0, 0.5] -> [0.0]; "
          "train.extra: '<absent>' -> 2)") in str(e.value)
  assert (tmp_path / "w" / "config.json").read_text() == before
  assert io.lock_config(w, config())  # the same configuration: accepted
  # ``upgrade`` sees the stored configuration (e.g. to fill in fields added since).
  assert io.lock_config(w, config(extra=2),
                        upgrade=lambda d: {**d, "train": {**d["train"], "extra": 2}})
  io.lock_config(w, {"a": 1}, name="other.json")
  assert io.read_json(str(tmp_path / "w" / "other.json")) == {"a": 1}
  (tmp_path / "file").write_text("x")
  with pytest.raises(OSError):
    io.lock_config(str(tmp_path / "file"), config())


def test_cached_computes_once(tmp_path):
  path = str(tmp_path / "stages" / "a.json")
  calls = []
  assert io.cached(path, lambda: calls.append(1) or {"v": (1, 2)}) == {"v": [1, 2]}
  assert io.cached(path, lambda: calls.append(1) or {"v": 0}) == {"v": [1, 2]}
  assert calls == [1]


def test_log_event_appends_to_the_metrics_log(tmp_path):
  io.log_event(str(tmp_path), "start", model="a")
  (rec,) = io.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert rec["event"] == "start" and rec["model"] == "a" and "time" in rec


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


def test_write_table_refuses_a_column_no_row_has(tmp_path):
  rows = [{"model": "a", "acc": 0.9}, {"model": "b"}]
  stem = str(tmp_path / "t")
  with pytest.raises(ValueError, match=r"^columns \['accuracy'\] of the table .*t are in none of "
                                       r"its 2 rows \(row keys: \['acc', 'model'\]\)"):
    io.write_table(stem, rows, ["model", "accuracy"])
  assert not os.listdir(tmp_path)  # nothing written
  # a column some rows lack is fine (empty cells there), as are declared optional columns and a
  # header-only table without rows
  io.write_table(stem, rows, ["model", "acc", "torch_s"], optional=["torch_s"])
  assert (tmp_path / "t.csv").read_text().splitlines() == ["model,acc,torch_s", "a,0.9,",
                                                           "b,,"]
  io.write_table(stem, [], ["model", "acc"])


def test_a_failed_write_names_the_file(tmp_path, monkeypatch):
  """A full disk fails ``write``/``fsync`` with an OSError that names no file: the writers name
  the one they were writing, and the old file stays as it was."""
  import errno
  path = str(tmp_path / "results.json")
  io.write_json(path, {"v": 1})

  def full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(io.os, "fsync", full)
  for write in (lambda: io.write_json(path, {"v": 2}),
                lambda: io.append_jsonl(str(tmp_path / "m.jsonl"), {"step": 1})):
    with pytest.raises(OSError) as e:
      write()
    assert e.value.errno == errno.ENOSPC and e.value.filename is not None
    assert str(tmp_path) in e.value.filename
  assert io.read_json(path) == {"v": 1}
  assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
