r"""Prepares GTSRB-IC / MS-COCO-IC once into the on-disk cache and writes the datasets' artefacts.

  python -m experiments.prepare_data --config=experiments/configs/prepare_data.py:gtsrb_paper \
      --config.raw_dir=RAW --config.data.data_dir=DATA --config.workers=2
  python -m experiments.prepare_data --config=experiments/configs/prepare_data.py:coco_paper \
      --config.raw_dir=RAW --config.data.data_dir=DATA

A run killed half-way and started again with the same command keeps the finished shards and
produces the same cache as an uninterrupted run. Afterwards the studies read the cache with the
same ``data`` fields. Besides the cache it writes ``table1.md/.csv`` (per-class counts per split),
``foreground_share.md/.csv`` and ``examples_<dataset>.png`` into ``--workdir`` (default: the
cache root).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from experiments import cli
from experiments.configs import data as data_config


def validate(config: Any) -> None:
  from percadv_jax import checks
  d = config.data
  checks.check_choice(d.dataset, "data.dataset", ("gtsrb_ic", "coco_ic"))
  if not config.raw_dir:
    raise ValueError("raw_dir is required: the folder holding the unzipped official archives")
  if not os.path.isdir(config.raw_dir):
    raise ValueError(f"raw_dir {config.raw_dir} does not exist or is not a directory")
  if not d.data_dir:
    raise ValueError("data.data_dir is required: the cache root to write")
  for f in ("shard_size", "image_size"):
    checks.check_positive(config[f] if f in config else d[f], f, allow_zero=True)
  checks.check_positive(config.workers, "workers")


def run(config: Any, workdir: str | None) -> dict:
  """Prepares every split; writes the artefacts; returns ``{"caches", "artefacts"}``."""
  from percadv_jax.data import cache, coco, gtsrb, report
  validate(config)
  d = config.data
  is_gtsrb = d.dataset == "gtsrb_ic"
  splits = tuple(config.splits) or (("train", "test") if is_gtsrb else ("train", "val"))
  kw = dict(raw_dir=config.raw_dir, data_dir=d.data_dir,
            image_size=d.image_size or (gtsrb.DEFAULT_IMAGE_SIZE if is_gtsrb
                                        else coco.DEFAULT_IMAGE_SIZE),
            shard_size=config.shard_size or (1000 if is_gtsrb else 500),
            **data_config.options(d))
  if is_gtsrb:
    kw["workers"] = config.workers
  caches, sources = {}, {}
  for split in splits:
    caches[split] = (gtsrb if is_gtsrb else coco).prepare(split=split, **kw)
    sources[split] = src = cache.load_cached(caches[split])
    print(f"{d.dataset}/{split}: {len(src)} examples, {src.info.num_classes} classes, "
          f"skipped {dict(src.info.skipped)} -> {caches[split]}", file=sys.stderr)
  out_dir = workdir or os.path.join(d.data_dir, "reports", os.path.basename(caches[splits[0]]))
  artefacts = report.write_dataset_artefacts(sources, out_dir)
  return {"caches": caches, "artefacts": artefacts["files"]}


def _report(out: dict, workdir: str | None) -> None:
  for name, path in out["artefacts"].items():
    print(f"{name}: {path}")


if __name__ == "__main__":
  cli.define_flags("prepare_data", default_preset="gtsrb")
  cli.main(run, validate=validate, report=_report, needs_workdir=False)
