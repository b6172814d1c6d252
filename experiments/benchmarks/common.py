"""What every benchmark shares: timing, name lists, the workdir lock and the results file."""

from __future__ import annotations

import os
import re
import statistics
import time
from typing import Any, Callable, Iterable

from percadv_jax import checks, io

# Fields of every preset that choose where the figures go, not what is measured: a workdir's
# lock (config.json) leaves them out, so a run may be re-recorded elsewhere.
OUTPUT_FIELDS = ("record", "results_file", "summarise_only")


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
  """Times ``fn`` (its result is waited for with ``jax.block_until_ready``).

  Returns:
    ``(first, median)``: the first call's seconds (compilation included) and the median seconds
    of ``max(1, repeats)`` further calls.
  """
  import jax
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(max(1, repeats)):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times)


def names(config: Any, field: str, choices: Iterable[str], *, allow_empty: bool = False) -> tuple:
  """Checks the name list ``config[field]`` (changing nothing) and returns it as a tuple.

  The command line splits ``--config.models=a,b`` into ``("a", "b")``
  (``experiments.cli.split_comma_lists``); a string or a comma entry is refused.

  Raises:
    ValueError: a string or an entry with a comma, an unknown name (the message names the
      field and lists the choices), or an empty list unless ``allow_empty``.
  """
  from experiments import common as studies_common
  value = config[field]
  studies_common.check_names(value, field)
  value = tuple(value)
  if not value and not allow_empty:
    raise ValueError(f"{field} is empty: choose some of {', '.join(choices)}")
  for v in value:
    checks.check_choice(v, f"{field} entry", tuple(choices))
  return value


def positive_ints(config: Any, fields: Iterable[str], *, allow_zero: bool = False) -> None:
  """Raises ValueError naming the first of ``fields`` that is not an integer >= 1 (>= 0)."""
  for f in fields:
    checks.check_int(config[f], f, minimum=0 if allow_zero else 1)


def check_output(config: Any) -> None:
  """Checks the fields every preset has: ``benchmark``, ``record``, ``results_file``, ``tag``."""
  checks.check_bool(config.record, "record")
  if not isinstance(config.results_file, str):
    raise ValueError(f"results_file must be a path (\"\" = docs/benchmarks.md), got "
                     f"{config.results_file!r}")
  if config.record and config.results_file:
    parent = os.path.dirname(os.path.abspath(config.results_file))
    if not os.path.isdir(parent):
      raise ValueError(f"results_file {config.results_file}: no such directory {parent}")
  if not isinstance(config.tag, str) or not re.fullmatch(r"[A-Za-z0-9_]*", config.tag):
    raise ValueError(f"tag must be a section-name suffix of letters, digits and '_' (e.g. "
                     f"'_variants'), got {config.tag!r}")


def lock(workdir: str, config: Any) -> dict:
  """Creates ``workdir`` and locks it to ``config`` (``config.json``, the output fields left
  out); a workdir of another configuration raises ValueError naming the differing fields."""
  d = {k: v for k, v in io.config_dict(config).items() if k not in OUTPUT_FIELDS}
  return io.lock_config(workdir, d)


def record(config: Any, section: str, markdown: str, *, tagged: bool = True) -> str | None:
  """Writes ``markdown`` as section ``section + config.tag`` (``section`` when not ``tagged``)
  of the results file when ``config.record`` (``config.results_file``, or docs/benchmarks.md
  when empty).

  Returns:
    The path written, or None when nothing was recorded.
  """
  if not config.record:
    return None
  from experiments.benchmarks import results
  return results.update(section + (config.tag if tagged else ""), markdown,
                        path=config.results_file or results.RESULTS_FILE)
