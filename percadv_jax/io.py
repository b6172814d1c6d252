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
import tempfile
import time
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
  with open(path) as f:
    return json.load(f)


def append_jsonl(path: str, record: Mapping[str, Any]) -> None:
  """Appends one JSON line (flushed and fsynced), stamping ``time`` if absent."""
  record = dict(record)
  record.setdefault("time", time.time())
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "a") as f:
    f.write(json.dumps(record, sort_keys=True, default=_default) + "\n")
    f.flush()
    os.fsync(f.fileno())


def read_jsonl(path: str) -> list[dict]:
  """Reads JSON lines, ignoring a torn last line left by a crash."""
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return out


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
