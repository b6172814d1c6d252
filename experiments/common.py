"""Small pieces shared by the studies: data selection, percentages, timers, bootstrap CIs."""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from percadv_jax import data as pdata

DATASETS = ("synthetic_signs", "gtsrb_ic", "coco_ic")


def load_split(dataset: str, split: str, *, data_dir: str | None, image_size: int | None,
               num_examples: int | None = None, seed: int = 0, num_classes: int | None = None,
               **options: Any):
  """A data source; ``num_examples``/``seed``/``num_classes`` reach only synthetic_signs,
  ``options`` (``configs.data.options``) the prepared datasets.

  For the other datasets ``num_examples`` is applied by ``subset_arrays``.
  """
  kw: dict[str, Any] = dict(options)
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
  return pdata.to_arrays(source, indices=idx)


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


def check_data_dir(dataset: str, data_dir: str) -> None:
  """Raises ValueError unless ``data_dir`` is an existing directory (prepared data)."""
  import os
  if not data_dir:
    raise ValueError(f"data.data_dir is required for {dataset} (the directory written by "
                     "python -m experiments.prepare_data)")
  if not os.path.isdir(data_dir):
    raise ValueError(f"data.data_dir {data_dir} does not exist or is not a directory")
