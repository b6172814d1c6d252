"""Plumbing shared by the experiment binaries: workdirs, cached stages, data, flag checks.

A binary is ``flags -> config (a frozen dataclass) -> run(config, workdir)``. ``run`` writes
``config.json`` first (a workdir holding a different configuration is refused, so a resumed run
never mixes settings) and keeps each finished stage in a JSON file, so a killed run restarted with
the same flags redoes only the unfinished stages.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from percadv_jax import data as pdata
from percadv_jax import io

DATASETS = ("synthetic_signs", "gtsrb_ic", "coco_ic")


def config_dict(config: Any) -> dict:
  """A dataclass config as a JSON-normalised dict (tuples become lists)."""
  return json.loads(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str))


def _diff(a: Mapping, b: Mapping) -> str:
  keys = sorted(set(a) | set(b))
  return ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k))


def prepare_workdir(workdir: str, config: Any, *, name: str = "config.json") -> dict:
  """Creates ``workdir`` and writes ``config.json``; refuses a workdir of another config.

  Raises:
    ValueError: ``workdir`` already holds a run with a different configuration.
  """
  os.makedirs(workdir, exist_ok=True)
  d = config_dict(config)
  path = os.path.join(workdir, name)
  if os.path.exists(path):
    old = io.read_json(path)
    if old != d:
      raise ValueError(f"{workdir} holds a run with a different configuration ({_diff(old, d)});"
                       " pass the same flags to resume it, or use another --workdir")
  else:
    io.write_json(path, d)
  return d


def cached(path: str, compute: Callable[[], Any]) -> Any:
  """The JSON at ``path`` if a previous run finished this stage, else ``compute()`` saved there."""
  if os.path.exists(path):
    return io.read_json(path)
  value = compute()
  io.write_json(path, value)
  return io.read_json(path)


def log(workdir: str, event: str, **fields: Any) -> None:
  """Appends ``{"event": event, ...}`` to ``workdir/metrics.jsonl``."""
  io.append_jsonl(os.path.join(workdir, "metrics.jsonl"), {"event": event, **fields})


def load_split(dataset: str, split: str, *, data_dir: str | None, image_size: int | None,
               num_examples: int | None = None, seed: int = 0, num_classes: int | None = None):
  """A data source; ``num_examples``/``seed``/``num_classes`` reach only synthetic_signs.

  For the other datasets ``num_examples`` keeps the first examples of the split (see
  ``subset``).
  """
  kw: dict[str, Any] = {}
  if dataset == "synthetic_signs":
    if num_examples:
      kw["num_examples"] = int(num_examples)
    kw["seed"] = int(seed)
    if num_classes:
      kw["num_classes"] = int(num_classes)
  return pdata.load(dataset, split=split, data_dir=data_dir, image_size=image_size, **kw)


def subset_arrays(source: Any, n: int | None, *, seed: int = 0) -> dict:
  """Batch arrays of ``n`` examples of ``source`` (all if ``n`` is falsy or >= len).

  The subset is a fixed random choice (``seed``), sorted, so it is the same on every run.
  """
  total = len(source)
  if not n or n >= total:
    idx = np.arange(total)
  else:
    idx = np.sort(np.random.default_rng(seed).choice(total, int(n), replace=False))
  return pdata.to_arrays(source, idx)


def pct(x: float) -> float:
  """A fraction in [0, 1] as a percentage rounded to 2 decimals (the tables' unit)."""
  return round(100.0 * float(x), 2)


class Timer:
  """``with Timer() as t: ...``; ``t.seconds`` afterwards."""

  def __enter__(self):
    self.start = time.perf_counter()
    self.seconds = 0.0
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self.start
    return False


def relpath(path: str, start: str) -> str:
  return os.path.relpath(path, start)


def parse_fraction(s: Any) -> float:
  """``"8/255"`` -> 0.0313..., ``"0.03"`` -> 0.03 (numbers pass through).

  Raises:
    ValueError: not a number or a fraction of numbers.
  """
  if isinstance(s, (int, float)):
    return float(s)
  text = str(s).strip()
  if "/" in text:
    num, den = text.split("/", 1)
    value = float(num) / float(den)
  else:
    value = float(text)
  if not np.isfinite(value):
    raise ValueError(f"not a finite number: {s!r}")
  return value


def bootstrap_mean(values: Any, *, resamples: int, seed: int, level: float = 0.95) -> dict:
  """Mean of ``values`` [N] with a percentile bootstrap confidence interval (NaNs dropped).

  Returns:
    ``{"mean", "lo", "hi", "n"}`` (floats; NaN when no finite value is left).
  """
  v = np.asarray(values, np.float64).reshape(-1)
  v = v[np.isfinite(v)]
  if v.size == 0:
    return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, v.size, size=(int(resamples), v.size))
  means = v[idx].mean(axis=1)
  a = (1.0 - level) / 2
  return {"mean": float(v.mean()), "lo": float(np.quantile(means, a)),
          "hi": float(np.quantile(means, 1 - a)), "n": int(v.size)}


def fmt_ci(s: Mapping[str, float], digits: int = 3) -> str:
  """``"0.123 [0.101, 0.140]"`` from a ``bootstrap_mean`` dict."""
  return f"{s['mean']:.{digits}f} [{s['lo']:.{digits}f}, {s['hi']:.{digits}f}]"


def run_from_flags(argv: Sequence[str], *, config_from_flags: Callable[[Any], Any],
                   validate: Callable[[Any], None], run: Callable[[Any, str], Any]) -> Any:
  """The body of a study binary's ``main``: flags -> validated config -> ``run(config, workdir)``.

  Stray arguments and invalid configurations become absl ``UsageError``s (a one-line message and
  the usage text, no traceback). Returns ``run``'s result.
  """
  from absl import app, flags, logging
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = config_from_flags(flags.FLAGS)
  try:
    validate(config)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  return run(config, flags.FLAGS.workdir)
