"""Crash-safe file output shared by the library and every experiment: atomic writes, JSON lines,
a workdir's configuration lock and finished stages, tables.

A file written here is either absent or complete: each write goes to a temporary file in the same
directory and is renamed over the target (``os.replace`` is atomic on POSIX). The one exception is
a JSON-lines log (``metrics.jsonl``), appended line by line: a crash can tear only its last line,
which readers skip and the next append cuts off. A write that fails (disk full, read-only file
system) raises an ``OSError`` that names the file.

A run owns its workdir: :func:`lock_config` also takes ``<workdir>/.lock`` (an exclusive
``fcntl.flock``) for the rest of the process, so a second run started in the same workdir is
refused instead of interleaving its records with the first one's.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import fcntl
import io
import json
import os
import tempfile
import time
import warnings
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np


def _default(o: Any):
  if isinstance(o, np.generic):
    return o.item()
  if hasattr(o, "tolist"):
    return np.asarray(o).tolist()
  raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
  """Re-raises an ``OSError`` that names no file (``write`` on a full disk) as one naming
  ``path``."""
  try:
    yield
  except OSError as e:
    if e.filename is not None or e.errno is None:
      raise
    raise OSError(e.errno, e.strerror or os.strerror(e.errno), path) from None


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[Any]:
  """Opens a temporary file beside ``path``; renames it over ``path`` on success only.

  Raises:
    OSError: the file cannot be written (``filename`` is ``path`` or its directory).
  """
  directory = os.path.dirname(os.path.abspath(path))
  with _naming(path):
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
  try:
    with _naming(path):
      with os.fdopen(fd, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
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


def json_object(obj: Any, path: str, what: str) -> dict:
  """``obj`` (read from ``path``) when it is a JSON object.

  Raises:
    ValueError: ``"<path> is not <what> (a JSON object expected, got <type>)"``.
  """
  if not isinstance(obj, dict):
    raise ValueError(f"{path} is not {what} (a JSON object expected, got {type(obj).__name__})")
  return obj


def append_jsonl(path: str, record: Mapping[str, Any]) -> None:
  """Appends one JSON line (flushed and fsynced), stamping ``time`` if absent.

  A last line without its newline is an append that a crash interrupted: a torn (unparsable)
  one is cut off first, a complete one gets its newline. So the record starts a line of its own,
  and a torn line is only ever the last line of a file (what :func:`read_jsonl` relies on).
  """
  record = dict(record)
  record.setdefault("time", time.time())
  line = (json.dumps(record, sort_keys=True, default=_default) + "\n").encode("utf-8")
  with _naming(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "ab+") as f:
      start, tail = _unterminated_tail(f)
      if tail:
        if _parse(tail) is None:
          f.truncate(start)
        else:
          line = b"\n" + line
      f.write(line)
      f.flush()
      os.fsync(f.fileno())


def _unterminated_tail(f) -> tuple[int, bytes]:
  """``(offset, text)`` of the open binary file's last line when no newline ends it, else
  ``(size, b"")``."""
  size = f.seek(0, os.SEEK_END)
  pos, text = size, b""
  while pos > 0:
    n = min(4096, pos)
    pos -= n
    f.seek(pos)
    text = f.read(n) + text
    i = text.rfind(b"\n")
    if i >= 0:
      return pos + i + 1, text[i + 1:]
  return 0, text


def _parse(line: bytes) -> dict | None:
  """The JSON object on ``line``, or None when the line is not valid JSON."""
  try:
    rec = json.loads(line.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError):
    return None
  return rec if isinstance(rec, dict) else None


def _lines(path: str) -> tuple[list[tuple[bytes, dict]], int | None]:
  """The ``(line, record)`` pairs of a JSON-lines file, and the number of its torn last line.

  Blank lines are ignored. The last line may be torn (an interrupted append): unparsable, it is
  left out and its number returned (else None).

  Raises:
    ValueError: any other line that is not a JSON object, naming ``path`` and its line number.
  """
  with open(path, "rb") as f:
    lines = [(i + 1, line) for i, line in enumerate(f.read().split(b"\n")) if line.strip()]
  out = []
  for k, (number, line) in enumerate(lines):
    try:
      rec = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
      if k == len(lines) - 1:
        return out, number
      raise ValueError(f"{path}: line {number} is not valid JSON (a damaged record: only a "
                       "crash's last line can be torn; repair or delete that line)") from None
    if not isinstance(rec, dict):
      raise ValueError(f"{path}: line {number} is not a JSON object (a damaged record; repair "
                       "or delete that line)")
    out.append((line, rec))
  return out, None


def read_jsonl(path: str) -> list[dict]:
  """Reads JSON lines (a missing file gives []; blank lines are ignored).

  A torn last line (an append interrupted by a crash: unparsable) is skipped with a warning.

  Raises:
    ValueError: any other line that is not a JSON object, naming ``path`` and its line number.
  """
  if not os.path.exists(path):
    return []
  lines, torn = _lines(path)
  if torn is not None:
    warnings.warn(f"{path}: skipping line {torn}, a record torn by an interrupted write",
                  stacklevel=2)
  return [rec for _, rec in lines]


def drop_records_after(path: str, step: int) -> None:
  """Drops the records of the JSON-lines file ``path`` whose ``step`` is > ``step``, and a torn
  last line (with a warning naming it, as :func:`read_jsonl`).

  A run resumed from a checkpoint at ``step`` calls it: the steps after it run again and write
  their records again. Records without an integer ``step`` are kept, each line as written. The
  file is rewritten atomically, and only when something is dropped.

  Raises:
    ValueError: a line other than the last is not a JSON object (see :func:`read_jsonl`).
  """
  if not os.path.exists(path):
    return
  lines, torn = _lines(path)
  if torn is not None:
    warnings.warn(f"{path}: dropping line {torn}, a record torn by an interrupted write",
                  stacklevel=2)
  keep = [line for line, rec in lines
          if not (isinstance(rec.get("step"), int) and rec["step"] > step)]
  if torn is not None or len(keep) < len(lines):
    with atomic_open(path, "wb") as f:
      f.write(b"".join(line + b"\n" for line in keep))


def log_event(workdir: str, event: str, **fields: Any) -> None:
  """Appends ``{"event": event, **fields}`` to the run's log ``workdir/metrics.jsonl``."""
  append_jsonl(os.path.join(workdir, "metrics.jsonl"), {"event": event, **fields})


def config_dict(config: Any) -> dict:
  """``config`` as the JSON-normalised dict that :func:`lock_config` writes and compares.

  ``config`` is a mapping, a dataclass or anything with ``to_dict`` (an ``ml_collections``
  ``ConfigDict``). Tuples become lists, NumPy scalars and arrays numbers and lists, and any
  other value JSON cannot hold its ``str``.
  """
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  elif dataclasses.is_dataclass(config):
    config = dataclasses.asdict(config)
  return json.loads(json.dumps(config, sort_keys=True, default=_default_or_str))


def _default_or_str(o: Any):
  try:
    return _default(o)
  except TypeError:
    return str(o)


def _differences(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
  """``["train.epochs: 10 -> 3", ...]``: the fields (dotted paths) whose values differ."""
  out = []
  for k in sorted(set(old) | set(new)):
    a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
    if isinstance(a, Mapping) and isinstance(b, Mapping):
      out += _differences(a, b, f"{prefix}{k}.")
    elif a != b:
      out.append(f"{prefix}{k}: {a!r} -> {b!r}")
  return out


_HELD: dict[str, int] = {}  # real path of a workdir -> the open descriptor of its .lock


def hold_workdir(workdir: str) -> None:
  """Makes this process the only run in ``workdir`` until it exits.

  Takes an exclusive, non-blocking ``fcntl.flock`` on ``<workdir>/.lock`` (created if missing;
  it holds the owner's pid) and keeps it open: the kernel releases it when the process ends,
  however it ends. Calling it again in the same process is a no-op.

  Raises:
    ValueError: another process holds the lock (a run in progress in ``workdir``).
    OSError: ``workdir`` or its ``.lock`` cannot be created or opened.
  """
  key = os.path.realpath(workdir)
  if key in _HELD:
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, ".lock")
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    os.close(fd)
    if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
      who = f"process {owner}" if owner.isdigit() else "another process"
      raise ValueError(f"{workdir} is in use by another run ({who} holds {path}); wait for it "
                       "to finish, or use another workdir") from None
    raise OSError(e.errno, e.strerror, path) from None
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
  _HELD[key] = fd


def lock_config(workdir: str, config: Any, *, name: str = "config.json",
                upgrade: Callable[[dict], Any] | None = None, hold: bool = True) -> dict:
  """Locks ``workdir`` to ``config``: writes ``workdir/name`` the first time, checks it after.

  So a resumed run never mixes settings: a workdir that holds another configuration is refused,
  naming the fields that differ, and nothing is written then. An accepted workdir is also held
  (:func:`hold_workdir`): a second process running in it is refused.

  Args:
    workdir: the run's directory (created when missing).
    config: the configuration, normalised by :func:`config_dict`.
    name: the lock file inside ``workdir``.
    upgrade: applied to the stored configuration before the comparison (e.g. to give the fields
      added since it was written their defaults); None compares it as stored.
    hold: hold the workdir (False for the other processes of one multi-process run, which
      share the workdir with process 0).

  Returns:
    ``config_dict(config)``.

  Raises:
    ValueError: ``workdir`` holds a run of another configuration (the message names the
      differing fields), its ``name`` is not a JSON object, or another process runs in it.
    OSError: ``workdir`` is a file or cannot be written.
  """
  d = config_dict(config)
  path = os.path.join(workdir, name)
  if os.path.exists(path):
    stored = read_json(path)
    if not isinstance(stored, dict):
      raise ValueError(f"{path}: not a configuration (a JSON object expected, got "
                       f"{type(stored).__name__} {json.dumps(stored)[:60]}); delete it only if "
                       f"{workdir} holds nothing you need, or use another workdir")
    changes = _differences(config_dict(upgrade(stored) if upgrade else stored), d)
    if changes:
      shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6
                                       else "")
      raise ValueError(f"{workdir} holds a run with a different configuration ({shown}); pass "
                       "the same configuration to resume it, or use another workdir")
    if hold:
      hold_workdir(workdir)
    return d
  os.makedirs(workdir, exist_ok=True)
  if not os.access(workdir, os.W_OK):
    raise PermissionError(13, "not writable", workdir)
  if hold:
    hold_workdir(workdir)
  write_json(path, d)
  return d


def cached(path: str, compute: Callable[[], Any]) -> Any:
  """The JSON at ``path`` if a previous run finished this stage, else ``compute()`` saved there.

  Each finished stage of a run kept in a JSON file lets a killed run, restarted with the same
  command, redo only the unfinished stages. A stage file that cannot be read (a crash cannot
  tear it: writes are atomic, but a disk or a user can) raises a ValueError naming it.
  """
  if os.path.exists(path):
    return read_json(path)
  value = compute()
  write_json(path, value)
  return read_json(path)


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
                columns: Sequence[str] | None = None, digits: int = 4, *,
                optional: Sequence[str] = ()) -> str:
  """Atomically writes ``path_stem``.md and ``path_stem``.csv; returns the Markdown text.

  Args:
    path_stem: the files' path without the extension.
    rows: dict rows; a row without a column's key gets an empty cell there.
    columns: the columns in order (default: the first row's keys).
    digits: decimals of floats in the Markdown table (the CSV keeps full precision).
    optional: columns that may be missing from every row (e.g. a measurement not taken in this
      run); any other column must be a key of at least one row.

  Raises:
    ValueError: when there are rows and a column (not in ``optional``) is a key of none of them,
      which would write an empty column (usually a misspelt name); nothing is written then.
  """
  columns = list(columns or (rows[0].keys() if rows else []))
  if rows:
    present = set().union(*(r.keys() for r in rows))
    missing = [c for c in columns if c not in present and c not in set(optional)]
    if missing:
      raise ValueError(f"columns {missing} of the table {path_stem} are in none of its "
                       f"{len(rows)} rows (row keys: {sorted(map(str, present))}); check the "
                       "names, or pass optional=[...] for columns that may be empty")
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
