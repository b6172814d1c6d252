r"""The input pipeline alone, beside the training step: is the loader or the model the limit?

    python -m experiments.benchmark --config=experiments/configs/benchmark.py:loader \
        --workdir=/tmp/bench_loader
    python -m experiments.benchmark --config=experiments/configs/benchmark.py:loader_memory \
        --workdir=/tmp/bench_loader_memory

For every side in ``sizes`` a cache of ``num_examples`` synthetic images (uniform noise, a
random rectangle as mask, 10 classes; written by the real cache writer
``percadv_jax.data.cache.prepare`` into ``<workdir>/cache``, kept for a re-run unless
``delete_cache``) is opened with ``load_cached`` (a ``CachedSource``: rows read from disk), and
the stages in ``stages`` run:

- ``loader``: images/s of ``percadv_jax.data.batches`` (shuffled, ``batch_size`` per batch,
  uint8 rows read and converted to float32 batches) over ``batches`` batches, gathered in the
  caller's thread (``prefetch=0``: the loader's own rate, one core). Whether the reads hit the
  page cache depends on the cache's size and the machine's free memory (both reported).
- ``train``: images/s of one natural training step (``percadv_jax.train.jit_train_step``) of
  the small VGG-19 at ``width`` on one device, median of ``repeats`` after a warm-up; the table
  names the slower of the two (``limit``).
- ``memory``: ``percadv_jax.train.fit`` for ``memory_steps`` steps of ``memory_batch_size`` on
  the largest size's cache (the real loop: batches prefetched two steps ahead), and the peak
  resident memory of the process meanwhile (``VmHWM`` of ``/proc/self/status``, reset through
  ``/proc/self/clear_refs`` just before; ``ru_maxrss`` of the whole run beside it).

Writes into the workdir: ``config.json``, ``results.json``, ``benchmark_loader.md`` / ``.csv``;
with ``record`` the ``benchmark_loader<tag>`` section of the results file.
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from typing import Any

import numpy as np

from experiments.benchmarks import common
from percadv_jax import checks, io

STAGES = ("loader", "train", "memory")
NUM_CLASSES = 10


def validate(config: Any) -> None:
  """Checks the configuration before any work; raises ValueError naming the field."""
  common.check_output(config)
  common.positive_ints(config, ("num_examples", "shard_size", "batch_size", "batches",
                                "repeats", "memory_steps", "memory_batch_size"))
  common.positive_ints(config, ("seed",), allow_zero=True)
  checks.check_float(config.width, "width", minimum=0, min_inclusive=False)
  checks.check_bool(config.delete_cache, "delete_cache")
  common.names(config, "stages", STAGES)
  sizes = tuple(config.sizes)
  if not sizes:
    raise ValueError("sizes is empty: give image sides, e.g. (32, 64, 224)")
  for s in sizes:
    checks.check_int(s, "sizes entry", minimum=32)  # the small VGG-19's smallest input
  if config.batch_size > config.num_examples or config.memory_batch_size > config.num_examples:
    raise ValueError(f"batch_size={config.batch_size} and memory_batch_size="
                     f"{config.memory_batch_size} must not exceed num_examples="
                     f"{config.num_examples}")


class _Synthetic:
  """``cache.prepare``'s ``process``: example ``i`` of ``seed``, at side ``size`` (picklable)."""

  def __init__(self, size: int, seed: int):
    self.size, self.seed = size, seed

  def __call__(self, i: int) -> tuple[list, dict]:
    rng = np.random.default_rng([self.seed, i])
    s = self.size
    image = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
    mask = np.zeros((s, s), np.uint8)
    y0, x0 = rng.integers(0, s // 2, 2)
    mask[y0:y0 + s // 2, x0:x0 + s // 2] = 1
    return [(image, mask, int(i % NUM_CLASSES), str(i))], {}


def _info(skipped: dict, n: int) -> dict:
  return {"name": "loader_benchmark", "split": "train", "num_classes": NUM_CLASSES,
          "class_names": [str(k) for k in range(NUM_CLASSES)], "mask_source": "rectangle",
          "source": "synthetic noise (experiments.benchmarks.loader)", "extra": {}}


def write_cache(root: str, size: int, num_examples: int, shard_size: int, seed: int) -> str:
  """Prepares (or finds) the benchmark's cache of side ``size``; returns its folder."""
  from percadv_jax.data import cache
  out = cache.split_dir(root, "loader_benchmark", "train", size)
  return cache.prepare(out, list(range(num_examples)), _Synthetic(size, seed),
                       params={"seed": seed, "synthetic": "noise+rectangle"}, image_size=size,
                       shard_size=shard_size, info=_info, progress=True)


def _disk_bytes(folder: str) -> int:
  return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))


def _free_memory_bytes() -> int | None:
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def _reset_peak() -> bool:
  """Resets this process's ``VmHWM`` (Linux ``clear_refs``); whether it could."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _peak_bytes() -> int | None:
  """``VmHWM`` of ``/proc/self/status`` in bytes (None off Linux)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def loader_rate(src: Any, batch_size: int, batches: int, seed: int) -> float:
  """Images/s of ``data.batches`` over ``batches`` shuffled batches, in the caller's thread."""
  from percadv_jax import data
  it = data.batches(src, batch_size=batch_size, seed=seed, epochs=None, prefetch=0)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch_size / (time.perf_counter() - t0)


def train_rate(src: Any, c: Any, size: int) -> tuple[float, float]:
  """``(images/s, first call s)`` of one natural training step of the small VGG-19."""
  import jax

  from percadv_jax import data, train
  cfg = train.TrainConfig(model_kwargs={"variant": "small", "width": c.width},
                          batch_size=c.batch_size, steps=1, seed=c.seed)
  state = jax.device_put(train.build(cfg, num_classes=NUM_CLASSES, image_shape=(size, size, 3),
                                     total=1000), jax.devices()[0])
  batch = data.to_arrays(src, indices=data.batch_indices(len(src), c.batch_size, c.seed, 0))
  batch = jax.device_put(batch, jax.devices()[0])
  step = train.jit_train_step()
  first, t = common.median_time(lambda: step(state, batch)[0].params, c.repeats)
  return c.batch_size / t, first


def memory_run(src: Any, c: Any, workdir: str) -> dict:
  """Trains ``memory_steps`` steps on ``src`` with ``train.fit``; the peak resident memory."""
  from percadv_jax import train
  cfg = train.TrainConfig(model_kwargs={"variant": "small", "width": c.width},
                          batch_size=c.memory_batch_size, steps=c.memory_steps,
                          checkpoint_every=c.memory_steps, log_every=max(1, c.memory_steps // 4),
                          seed=c.seed)
  run_dir = os.path.join(workdir, "memory_run")
  shutil.rmtree(run_dir, ignore_errors=True)
  reset = _reset_peak()
  t0 = time.perf_counter()
  train.fit(cfg, run_dir, src)  # ArrayData reads a split over 2 GB batch by batch
  seconds = time.perf_counter() - t0
  peak = _peak_bytes()
  return {"memory_steps": c.memory_steps, "memory_batch_size": c.memory_batch_size,
          "fit_seconds": seconds,
          "peak_rss_gb": None if peak is None else peak / 2**30,
          "peak_scope": "fit only (VmHWM reset before)" if reset else "whole process",
          "ru_maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30}


def run(config: Any, workdir: str) -> list[dict]:
  """Writes the caches and times the stages; returns the table rows (one per size)."""
  from percadv_jax.data import cache
  validate(config)
  c = config
  common.lock(workdir, c)
  root = os.path.join(workdir, "cache")
  rows: list[dict] = []
  sizes = sorted(int(s) for s in c.sizes)
  for size in sizes:
    t0 = time.perf_counter()
    folder = write_cache(root, size, c.num_examples, c.shard_size, c.seed)
    row: dict = {"image_size": size, "examples": c.num_examples,
                 "cache_gb": _disk_bytes(folder) / 2**30,
                 "prepare_s": time.perf_counter() - t0}
    src = cache.load_cached(folder)
    if "loader" in c.stages:
      row["loader_images_per_sec"] = loader_rate(src, c.batch_size, c.batches, c.seed)
    if "train" in c.stages:
      row["train_images_per_sec"], row["train_first_s"] = train_rate(src, c, size)
    if "loader" in c.stages and "train" in c.stages:
      row["limit"] = ("loader" if row["loader_images_per_sec"] < row["train_images_per_sec"]
                      else "model")
    if "memory" in c.stages and size == sizes[-1]:
      row.update(memory_run(src, c, workdir))
    src.close()
    if c.delete_cache:
      shutil.rmtree(folder)
    rows.append(row)
    print(row, flush=True)
  free = _free_memory_bytes()
  meta = {"free_memory_gb": None if free is None else free / 2**30, "cpus": os.cpu_count(),
          "batch_size": c.batch_size, "batches": c.batches, "width": c.width}
  io.write_json(os.path.join(workdir, "results.json"), {"meta": meta, "rows": rows})
  cols = ["image_size", "examples", "cache_gb", "loader_images_per_sec", "train_images_per_sec",
          "limit", "peak_rss_gb", "peak_scope", "ru_maxrss_gb", "memory_steps",
          "memory_batch_size", "fit_seconds", "prepare_s"]
  md = io.write_table(os.path.join(workdir, "benchmark_loader"), rows, cols, optional=cols[3:])
  print(md)
  common.record(c, "benchmark_loader", (
      f"Loader: `data.batches` over a `CachedSource` (rows read from the shards), batch "
      f"{c.batch_size}, {c.batches} shuffled batches, one thread; train: one natural step of "
      f"the small VGG-19 (width {c.width}), batch {c.batch_size}, one device; `limit` names the "
      f"slower. Synthetic noise images written by `cache.prepare`; memory available at the end "
      f"{meta['free_memory_gb'] and round(meta['free_memory_gb'], 1)} GB (a cache larger than "
      f"that is read from disk). Peak memory: VmHWM of the process over `train.fit` "
      f"(`memory_steps` steps of `memory_batch_size`, batches prefetched two ahead).\n\n{md}"))
  return rows
