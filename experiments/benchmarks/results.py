"""The one results file of the benchmarks: ``docs/benchmarks.md``.

Each benchmark owns one or more sections of that file, delimited by HTML comments, and replaces
them with the figures of its latest run (``update``); the other sections are kept. History is in
the version control log, not in the file.
"""

from __future__ import annotations

import datetime
import os
import platform
import re

from percadv_jax import io

RESULTS_FILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs",
    "benchmarks.md")
HEADER = ("# Benchmark results\n\n"
          "Latest figures of each benchmark (`python -m experiments.benchmark "
          "--config=experiments/configs/benchmark.py:<preset>`), written by the benchmarks "
          "themselves; see BUILD.md for how to run them. Speed is reported as ratios measured in "
          "one run with the contenders interleaved, since the absolute times of a shared machine "
          "drift.\n")


def machine() -> str:
  """A one-line description of where the figures were measured."""
  import jax
  return (f"{platform.machine()}, {os.cpu_count()} CPUs, {jax.default_backend()} "
          f"({jax.devices()[0].device_kind}), jax {jax.__version__}, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '') or '(none)'}")


def update(name: str, markdown: str, *, path: str = RESULTS_FILE) -> str:
  """Replaces section ``name`` of the results file with ``markdown`` (adds it if missing).

  Args:
    name: the section's id (``"benchmark_<benchmark><tag>"``, e.g. ``"benchmark_attacks"``).
    markdown: the section's body (a heading is added: the name, the date and the machine).
    path: the results file (created with a header when missing).

  Returns:
    The path written.
  """
  begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
  stamp = datetime.date.today().isoformat()
  body = f"{begin}\n## {name}\n\nMeasured {stamp} on {machine()}.\n\n{markdown.strip()}\n{end}"
  text = open(path).read() if os.path.exists(path) else HEADER
  pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
  text = pattern.sub(lambda _: body, text) if pattern.search(text) else (
      text.rstrip("\n") + "\n\n" + body)
  with io.atomic_open(path) as f:
    f.write(text.rstrip("\n") + "\n")
  return path
