"""A study's workdir: its configuration lock, its finished stages and its event log.

``prepare(workdir, config)`` writes ``config.json`` the first time and afterwards refuses a
different configuration, naming the fields that differ (so a resumed run never mixes settings, and
a refused run changes nothing). ``cached(path, compute)`` keeps each finished stage in a JSON
file, so a killed run restarted with the same command redoes only the unfinished stages.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

from percadv_jax import io


def to_dict(config: Any) -> dict:
  """A ``ConfigDict`` (or dict / dataclass) as a JSON-normalised dict (tuples become lists)."""
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  elif hasattr(config, "__dataclass_fields__"):
    import dataclasses
    config = dataclasses.asdict(config)
  return json.loads(json.dumps(config, sort_keys=True, default=str))


def diff(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
  """``["train.epochs: 10 -> 3", ...]``: the fields (dotted paths) whose values differ."""
  out = []
  for k in sorted(set(old) | set(new)):
    a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
    if isinstance(a, Mapping) and isinstance(b, Mapping):
      out += diff(a, b, f"{prefix}{k}.")
    elif a != b:
      out.append(f"{prefix}{k}: {a!r} -> {b!r}")
  return out


def prepare(workdir: str, config: Any, *, name: str = "config.json") -> dict:
  """Creates ``workdir`` and locks it to ``config`` (``config.json``); returns the dict.

  Raises:
    ValueError: ``workdir`` holds a run of another configuration (the message names the
      differing fields); nothing is written then.
    OSError: ``workdir`` is a file or cannot be written.
  """
  d = to_dict(config)
  path = os.path.join(workdir, name)
  if os.path.exists(path):
    changes = diff(io.read_json(path), d)
    if changes:
      shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6
                                       else "")
      raise ValueError(f"{workdir} holds a run with a different configuration ({shown}); pass "
                       "the same config to resume it, or use another --workdir")
    return d
  os.makedirs(workdir, exist_ok=True)
  if not os.access(workdir, os.W_OK):
    raise PermissionError(13, "not writable", workdir)
  io.write_json(path, d)
  return d


def cached(path: str, compute: Callable[[], Any]) -> Any:
  """The JSON at ``path`` if a previous run finished this stage, else ``compute()`` saved there.

  A stage file that cannot be read (a crash cannot tear it: writes are atomic, but a disk or a
  user can) raises a ValueError naming it.
  """
  if os.path.exists(path):
    return io.read_json(path)
  value = compute()
  io.write_json(path, value)
  return io.read_json(path)


def log(workdir: str, event: str, **fields: Any) -> None:
  """Appends ``{"event": event, ...}`` to ``workdir/metrics.jsonl``."""
  io.append_jsonl(os.path.join(workdir, "metrics.jsonl"), {"event": event, **fields})
