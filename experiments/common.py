"""Small pieces shared by the studies: data selection, percentages, timers, bootstrap CIs."""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from experiments.configs import data as data_config
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


def check_names(value: Any, field: str) -> None:
  """Raises ValueError unless ``value`` is a tuple (or list) of names without commas.

  The command line splits comma lists (``experiments.cli.split_comma_lists``); a string, or an
  entry holding a comma, can only come from the Python API, where a tuple is needed.
  """
  if isinstance(value, str):
    raise ValueError(f"{field} must be a tuple of names, got the string {value!r}: pass "
                     f"{tuple(s.strip() for s in value.split(',') if s.strip())!r}")
  for v in value:
    if not isinstance(v, str) or not v.strip():
      raise ValueError(f"{field} entries must be non-empty strings, got {v!r}")
    if "," in v:
      raise ValueError(f"{field} entry {v!r} holds a comma: give each name as its own entry, "
                       f"{tuple(s.strip() for s in v.split(',') if s.strip())!r}")


# The datasets prepared once by experiments.prepare_data: their preset there and title.
PREPARED = {"gtsrb_ic": ("gtsrb", "GTSRB-IC"), "coco_ic": ("coco", "COCO-IC")}


def _cache_fields(d: Any) -> dict:
  """The ``data`` fields that select the prepared cache (with the dataset's default size)."""
  from percadv_jax.data import coco, gtsrb
  if d.dataset == "gtsrb_ic":
    return {"image_size": d.image_size or gtsrb.DEFAULT_IMAGE_SIZE, "segmenter": d.segmenter}
  out = {"image_size": d.image_size or coco.DEFAULT_IMAGE_SIZE, "year": int(d.year),
         "classes": tuple(d.classes), "crop": d.crop, "blackout": d.blackout,
         "min_area": float(d.min_area), "margin": float(d.margin)}
  if not d.classes:
    out["num_classes"] = int(d.num_classes)
  return out


def _flag(value: Any) -> str:
  """A field's value as ``--config`` parses it (a tuple of names as a Python literal: names may
  hold spaces, "dining table")."""
  if isinstance(value, tuple):
    return "(" + ", ".join(f'"{v}"' for v in value) + ("," if len(value) == 1 else "") + ")"
  return str(value)


def prepare_command(d: Any, splits: Any) -> str:
  """The ``experiments.prepare_data`` command that builds the caches of ``splits`` which a
  study with ``data`` fields ``d`` reads: the preset of ``configs/prepare_data.py`` closest to
  ``d``, the overrides of every field that selects the cache, ``RAW`` for the raw folder."""
  import shlex
  from experiments.configs import prepare_data as prep
  want = _cache_fields(d)
  base = PREPARED[d.dataset][0]

  def overrides(preset: str) -> list[str]:
    have = _cache_fields(prep.get_config(preset).data)
    return [f"--config.data.{k}={_flag(v)}" for k, v in want.items() if have.get(k) != v]
  preset = min((base, base + "_paper"), key=lambda p: len(overrides(p)))
  args = ["python", "-m", "experiments.prepare_data",
          f"--config=experiments/configs/prepare_data.py:{preset}", "--config.raw_dir=RAW",
          f"--config.data.data_dir={d.data_dir}", *overrides(preset),
          f"--config.splits={','.join(splits)}"]
  return shlex.join(args)


def check_prepared(d: Any, splits: Any, *, any_variant: bool = False) -> None:
  """Raises ValueError when a cache that ``load_split(d.dataset, split, ...)`` reads is missing
  (GTSRB-IC, MS-COCO-IC), naming the folders and the ``prepare_data`` command that builds them.

  Other datasets, splits the dataset does not have, and caches that exist, pass (their loader
  checks the rest). With ``any_variant`` (a reader that passes no preparation options and so
  loads the split's only cache), a cache of any options passes.
  """
  if d.dataset not in PREPARED:
    return
  import os
  from percadv_jax.data import cache, coco, gtsrb
  if not any_variant:
    check_data_dir(d.dataset, d.data_dir)
  opts = data_config.options(d)
  if d.dataset == "gtsrb_ic":
    seg = opts["segmenter"]
    variant = gtsrb.cache_variant(seg, gtsrb.segmenter_options(seg, None))
    names = [s for s in splits if s in gtsrb.SPLITS]  # the loader refuses other splits
    download = gtsrb.DOWNLOAD
  else:
    variant = coco.cache_variant(coco.settings(**opts))
    names = [coco.SPLITS[s] for s in splits if s in coco.SPLITS]  # "test" is "val"
    download = coco.DOWNLOAD.format(year=opts["year"])
  size = _cache_fields(d)["image_size"]
  missing = []
  for name in dict.fromkeys(names):
    if not d.image_size and cache.cached_sizes(d.data_dir, d.dataset, name, variant):
      continue  # image_size 0: the loader takes the cached size
    if any_variant and cache.cached_variants(d.data_dir, d.dataset, name, d.image_size or None):
      continue
    folder = cache.split_dir(d.data_dir, d.dataset, name, size, variant)
    if not os.path.exists(os.path.join(folder, "meta.json")):
      missing.append((name, folder))
  if missing:
    title = PREPARED[d.dataset][1]
    raise ValueError(
        f"no prepared {title} cache of split {', '.join(n for n, _ in missing)} with these "
        f"data fields (expected {', '.join(f for _, f in missing)}). Download {download}, unzip "
        f"into RAW, then run `{prepare_command(d, [n for n, _ in missing])}`")
