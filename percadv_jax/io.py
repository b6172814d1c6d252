"""Crash-safe file output shared by every experiment: atomic writes, JSON lines, tables.

A file written here is either absent or complete: each write goes to a temporary file in the same
directory and is renamed over the target (``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import tempfile
import time
import warnings
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np


def _default(o: Any):
  if isinstance(o, np.generic):
    return o.item()
  if hasattr(o, "tolist"):
    return np.asarray(o).tolist()
  raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[Any]:
  """Opens a temporary file beside ``path``; renames it over ``path`` on success only."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                             suffix=".tmp")
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  """Atomically writes ``obj`` as indented JSON (NumPy scalars/arrays become lists)."""
  with atomic_open(path) as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=_default)
    f.write("\n")


def read_json(path: str) -> Any:
  """Reads a JSON file.

  Raises:
    ValueError: the file is not valid JSON (truncated, corrupt, not UTF-8), naming ``path`` and
      where parsing failed. A missing file raises ``FileNotFoundError`` as usual.
  """
  with open(path, "rb") as f:
    raw = f.read()
  try:
    return json.loads(raw.decode("utf-8"))
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: corrupt JSON file (not UTF-8 text at byte {e.start})") from None
  except json.JSONDecodeError as e:
    what = "truncated" if e.pos >= len(raw.rstrip()) else "corrupt"
    raise ValueError(f"{path}: {what} JSON file ({e.msg} at line {e.lineno} column {e.colno}); "
                     "delete it to have it rewritten") from None


def append_jsonl(path: str, record: Mapping[str, Any]) -> None:
  """Appends one JSON line (flushed and fsynced), stamping ``time`` if absent.

  If the file does not end in a newline (a line torn by a crash mid-write), the record starts
  on a fresh line, so the torn line never swallows it.
  """
  record = dict(record)
  record.setdefault("time", time.time())
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  line = json.dumps(record, sort_keys=True, default=_default) + "\n"
  with open(path, "ab+") as f:
    f.seek(0, os.SEEK_END)
    if f.tell() > 0:
      f.seek(-1, os.SEEK_END)
      if f.read(1) != b"\n":
        line = "\n" + line
      f.seek(0, os.SEEK_END)
    f.write(line.encode("utf-8"))
    f.flush()
    os.fsync(f.fileno())


def read_jsonl(path: str) -> list[dict]:
  """Reads JSON lines (a missing file gives []).

  A torn *last* line (a crash mid-write: unparsable and not ending in a newline) is skipped with
  a warning; so is a torn line that a later append followed with a fresh line (see
  ``append_jsonl``). Blank lines are ignored.

  Raises:
    ValueError: any other line that is not a JSON object, naming ``path`` and its line number.
  """
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    raw = f.read()
  lines = raw.split(b"\n")
  out = []
  for i, line in enumerate(lines):
    text = line.strip()
    if not text:
      continue
    last = i == len(lines) - 1  # no newline after it: the write never finished
    try:
      rec = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
      if last or _is_torn_prefix(text):
        warnings.warn(f"{path}: skipping line {i + 1}, a record torn by an interrupted write",
                      stacklevel=2)
        continue
      raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
    if not isinstance(rec, dict):
      raise ValueError(f"{path}: line {i + 1} is not a JSON object")
    out.append(rec)
  return out


_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")


def _is_torn_prefix(text: bytes) -> bool:
  """True when ``text`` is an unfinished JSON object: a proper prefix of a valid one.

  That is what an interrupted append leaves; a line with garbage in it (extra data, zeroed
  bytes, a bad token) is not. The prefix is completed (close an open string, finish a number or
  literal, add a missing value, close the open brackets) and parsed.
  """
  s = text.decode("utf-8", errors="replace").rstrip()
  if not s.startswith("{"):
    return False
  stack, in_string, escape = [], False, False
  for c in s:
    if in_string:
      if escape:
        escape = False
      elif c == "\\":
        escape = True
      elif c == '"':
        in_string = False
    elif c == '"':
      in_string = True
    elif c in "{[":
      stack.append(c)
    elif c in "}]":
      if not stack or "{[".index(stack[-1]) != "}]".index(c):
        return False
      stack.pop()
      if not stack:
        return False  # a complete object followed by more text
  base = s
  if in_string:
    base = (base[:-1] if escape else base) + '"'
  base = base.rstrip()
  if base.endswith(","):
    base = base[:-1]
  if base[-1] in ".-+eE" and not in_string:
    base += "0"
  word = re.search(r"-?[A-Za-z]+$", base) if not in_string else None
  if word:
    full = [w for w in _LITERALS if w.startswith(word.group())]
    if not full:
      return False
    base = base[:word.start()] + full[0]
  closers = "".join("}" if c == "{" else "]" for c in reversed(stack))
  for middle in ("", ": null", " null"):
    try:
      json.loads(base + middle + closers)
      return True
    except json.JSONDecodeError:
      continue
  return False


def _fmt(v: Any, digits: int) -> str:
  if isinstance(v, (float, np.floating)):
    return f"{float(v):.{digits}f}"
  return str(v)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                   digits: int = 4) -> str:
  """Renders dict rows as a GitHub Markdown table (floats with ``digits`` decimals)."""
  if not rows:
    return ""
  columns = list(columns or rows[0].keys())
  lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
  for r in rows:
    lines.append("| " + " | ".join(_fmt(r.get(c, ""), digits) for c in columns) + " |")
  return "\n".join(lines) + "\n"


def write_table(path_stem: str, rows: Sequence[Mapping[str, Any]],
                columns: Sequence[str] | None = None, digits: int = 4) -> str:
  """Atomically writes ``path_stem``.md and ``path_stem``.csv; returns the Markdown text."""
  columns = list(columns or (rows[0].keys() if rows else []))
  md = markdown_table(rows, columns, digits)
  with atomic_open(path_stem + ".md") as f:
    f.write(md)
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
  w.writeheader()
  for r in rows:
    w.writerow({c: r.get(c, "") for c in columns})
  with atomic_open(path_stem + ".csv") as f:
    f.write(buf.getvalue())
  return md


def save_figure(fig, path: str, dpi: int = 120) -> None:
  """Atomically saves a matplotlib figure as PNG and closes it."""
  import matplotlib.pyplot as plt
  with atomic_open(path, "wb") as f:
    fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
  plt.close(fig)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", **kw):
  """A tqdm progress bar (rate and ETA) on stderr; quiet when PERCADV_QUIET=1."""
  from tqdm.auto import tqdm
  disable = os.environ.get("PERCADV_QUIET", "0") == "1"
  return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True,
              **kw)
