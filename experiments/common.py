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


def subset_indices(total: int, n: int | None, *, seed: int = 0) -> np.ndarray:
  """The indices ``subset_arrays`` takes: all ``total`` if ``n`` is falsy or >= ``total``, else a
  fixed random choice of ``n`` (``seed``), sorted, so it is the same on every run."""
  if not n or n >= total:
    return np.arange(total)
  return np.sort(np.random.default_rng(seed).choice(total, int(n), replace=False))


def subset_arrays(source: Any, n: int | None, *, seed: int = 0) -> dict:
  """Batch arrays of the ``subset_indices(len(source), n, seed=seed)`` examples of ``source``."""
  return pdata.to_arrays(source, indices=subset_indices(len(source), n, seed=seed))


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


def bootstrap_means(values: Any, *, resamples: int, seed: int) -> np.ndarray:
  """float64 [resamples]: the means of ``resamples`` bootstrap resamples of ``values`` [N].

  Each resample draws N values with replacement; drawn as multinomial counts over the distinct
  values (the same distribution as drawing indices, in memory per resample of the number of
  distinct values: a handful for per-example 0/1 outcomes).
  """
  v = np.asarray(values, np.float64).reshape(-1)
  if v.size == 0:
    return np.full(int(resamples), np.nan)
  levels, counts = np.unique(v, return_counts=True)
  rng = np.random.default_rng(seed)
  chunk = max(1, 4_000_000 // levels.size)
  out = []
  for start in range(0, int(resamples), chunk):
    k = min(chunk, int(resamples) - start)
    out.append(rng.multinomial(v.size, counts / v.size, size=k) @ levels / v.size)
  return np.concatenate(out)


def bootstrap_difference(a: Any, b: Any = None, *, resamples: int, seed: int,
                         level: float = 0.95, paired: bool = True) -> dict:
  """Mean of ``a`` minus mean of ``b`` with a percentile bootstrap confidence interval.

  Args:
    a, b: per-example values [N] (and [M]); ``b=None``: the mean of ``a`` alone.
    paired: ``a[i]`` and ``b[i]`` belong to the same example (two models on one test image): a
      resample draws examples and keeps both values of each (the mean of ``a - b`` over the
      resample), so the interval accounts for the pairs' correlation. ``False``: independent
      samples (two test sets), resampled independently.
    resamples, seed, level: bootstrap resamples, NumPy seed, interval coverage.

  Returns:
    ``{"mean", "lo", "hi", "n"}`` (``n``: examples of ``a``; NaNs when there are none).

  Raises:
    ValueError: paired arrays of different lengths.
  """
  x = np.asarray(a, np.float64).reshape(-1)
  if b is None:
    point, means = x.mean() if x.size else np.nan, bootstrap_means(x, resamples=resamples,
                                                                   seed=seed)
  else:
    y = np.asarray(b, np.float64).reshape(-1)
    if paired:
      if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same length, got {x.size} and {y.size}")
      d = x - y
      point, means = d.mean() if d.size else np.nan, bootstrap_means(d, resamples=resamples,
                                                                     seed=seed)
    else:
      point = (x.mean() - y.mean()) if x.size and y.size else np.nan
      means = (bootstrap_means(x, resamples=resamples, seed=seed)
               - bootstrap_means(y, resamples=resamples, seed=seed + 1))
  if x.size == 0 or not np.isfinite(point):
    return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": int(x.size)}
  q = (1.0 - level) / 2
  return {"mean": float(point), "lo": float(np.quantile(means, q)),
          "hi": float(np.quantile(means, 1 - q)), "n": int(x.size)}


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
