r"""Prepares GTSRB-IC / MS-COCO-IC once into the on-disk cache and writes the datasets' artefacts.

  python -m experiments.prepare_data --config=experiments/configs/prepare_data.py:gtsrb_paper \
      --config.raw_dir=RAW --config.data.data_dir=DATA --config.workers=2
  python -m experiments.prepare_data --config=experiments/configs/prepare_data.py:coco_paper \
      --config.raw_dir=RAW --config.data.data_dir=DATA

A run killed half-way and started again with the same command keeps the finished shards and
produces the same cache as an uninterrupted run. Afterwards the studies read the cache with the
same ``data`` fields. Besides the cache it writes into ``--workdir`` (default:
``<data_dir>/reports/<cache name>``):

- ``table1.md/.csv``: images per class and split; with ``data.num_train`` a column for the random
  training subset the study draws (``seed``); beside them the reference counts and our count
  minus theirs: the masks paper's Table 1 for MS-COCO-IC of its ten classes (per class; its test
  column is our ``val``), GTSRB's official totals for GTSRB-IC (39,209 / 12,630; ``experiments/
  papers.py``);
- ``foreground_share.md/.csv`` and ``examples_<dataset>.png`` (image | mask | masked image);
- the paper's figure of the dataset: ``figure2_gtsrb_ic.png`` (image | computed mask | masked
  image) or ``figure3_coco_ic.png`` (original image with the object's box and the crop square |
  cropped image | final image), from the last split.
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
  checks.check_positive(d.num_train, "data.num_train", allow_zero=True)
  checks.check_positive(config.seed, "seed", allow_zero=True)


def run(config: Any, workdir: str | None) -> dict:
  """Prepares every split; writes the artefacts; returns ``{"caches", "artefacts"}``."""
  from experiments import common
  from percadv_jax.data import cache, coco, figures, gtsrb, report
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
  subsets = {}
  if d.num_train and "train" in sources and d.num_train < len(sources["train"]):
    subsets["train"] = common.subset_indices(len(sources["train"]), d.num_train, seed=config.seed)
  artefacts = report.write_dataset_artefacts(sources, out_dir, subsets=subsets,
                                             reference=table1_reference(d.dataset, sources))
  files = dict(artefacts["files"])
  last = sources[splits[-1]]
  if is_gtsrb:
    files["figure2"] = figures.figure2(last, os.path.join(out_dir, "figure2_gtsrb_ic.png")
                                       )["path"]
  else:
    files["figure3"] = figures.figure3(last, os.path.join(out_dir, "figure3_coco_ic.png"),
                                       raw_dir=config.raw_dir)["path"]
  return {"caches": caches, "artefacts": files}


def table1_reference(dataset: str, sources: dict) -> dict:
  """Table 1's reference columns (``percadv_jax.data.stats.table1``): the masks paper's counts of
  MS-COCO-IC per class name when the classes are its ten (its test split is our ``val``),
  GTSRB's official totals."""
  from experiments import papers
  if dataset == "gtsrb_ic":
    return {s: {"name": f"official {s}", "per_class": {}, "total": papers.GTSRB_OFFICIAL[s]}
            for s in ("train", "test") if s in sources}
  if set(next(iter(sources.values())).info.class_names) != set(papers.TABLE1_COCO):
    return {}  # another class list than the paper's: nothing to set beside it
  return {ours: {"name": f"paper {theirs}", "total": papers.TABLE1_COCO_TOTAL[k],
                 "per_class": {c: n[k] for c, n in papers.TABLE1_COCO.items()}}
          for k, (ours, theirs) in enumerate((("train", "train"), ("val", "test")))
          if ours in sources}


def _report(out: dict, workdir: str | None) -> None:
  for name, path in out["artefacts"].items():
    print(f"{name}: {path}")


if __name__ == "__main__":
  cli.define_flags("prepare_data", default_preset="gtsrb")
  cli.main(run, validate=validate, report=_report, needs_workdir=False)
