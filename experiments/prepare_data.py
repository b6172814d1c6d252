r"""Prepares GTSRB-IC / COCO-IC once into the on-disk cache (resumable, with a progress bar).

    python -m experiments.prepare_data --dataset=gtsrb_ic --raw_dir=/data/GTSRB_raw \
        --data_dir=/data/percadv --image_size=32
    python -m experiments.prepare_data --dataset=coco_ic --raw_dir=/data/coco \
        --data_dir=/data/percadv --image_size=64 --splits=train,val

A run killed half-way and started again with the same flags keeps the finished shards and
produces the same cache as an uninterrupted run (see percadv_jax/data/cache.py). Afterwards
``percadv_jax.data.load(name, split=..., data_dir=...)`` reads the cache without raw files.
"""

from __future__ import annotations

import dataclasses
import sys

from absl import app, flags

from percadv_jax.data import cache, coco, gtsrb

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", None, ["gtsrb_ic", "coco_ic"], "dataset to prepare")
flags.DEFINE_string("raw_dir", None, "folder holding the unzipped official archives")
flags.DEFINE_string("data_dir", None, "cache root (default $PERCADV_DATA_DIR or "
                    "~/.cache/percadv_jax)")
flags.DEFINE_integer("image_size", None, "output side in pixels (default 32 GTSRB, 64 COCO)")
flags.DEFINE_list("splits", None, "splits (default train,test for GTSRB; train,val for COCO)")
flags.DEFINE_integer("shard_size", None, "raw inputs per cache shard (default 1000 GTSRB, "
                     "500 COCO images)")
flags.DEFINE_integer("workers", 1, "GTSRB-IC: processes running GrabCut in parallel")
flags.DEFINE_integer("num_classes", 10, "COCO-IC: most frequent categories kept")
flags.DEFINE_float("min_area", 1024.0, "COCO-IC: minimum object area in original pixels")
flags.DEFINE_float("margin", 0.1, "COCO-IC: crop margin around the box (fraction per side)")


@dataclasses.dataclass(frozen=True)
class Config:
  dataset: str
  raw_dir: str
  data_dir: str
  image_size: int
  splits: tuple[str, ...]
  shard_size: int
  num_classes: int = 10
  min_area: float = 1024.0
  margin: float = 0.1
  workers: int = 1


def run(config: Config) -> dict[str, str]:
  """Prepares every split of ``config``; returns split -> cache directory."""
  out = {}
  for split in config.splits:
    if config.dataset == "gtsrb_ic":
      out[split] = gtsrb.prepare(raw_dir=config.raw_dir, data_dir=config.data_dir, split=split,
                                 image_size=config.image_size, shard_size=config.shard_size,
                                 workers=config.workers)
    else:
      out[split] = coco.prepare(raw_dir=config.raw_dir, data_dir=config.data_dir, split=split,
                                image_size=config.image_size, shard_size=config.shard_size,
                                num_classes=config.num_classes, min_area=config.min_area,
                                margin=config.margin)
    src = cache.load_cached(out[split])
    print(f"{config.dataset}/{split}: {len(src)} examples, {src.info.num_classes} classes, "
          f"skipped {dict(src.info.skipped)} -> {out[split]}", file=sys.stderr)
  return out


def main(argv):
  del argv
  from percadv_jax.data import raw
  if FLAGS.dataset is None or FLAGS.raw_dir is None:
    raise app.UsageError("--dataset and --raw_dir are required")
  is_gtsrb = FLAGS.dataset == "gtsrb_ic"
  config = Config(
      dataset=FLAGS.dataset, raw_dir=FLAGS.raw_dir,
      data_dir=FLAGS.data_dir or raw.default_data_dir(),
      image_size=FLAGS.image_size or (gtsrb.DEFAULT_IMAGE_SIZE if is_gtsrb
                                      else coco.DEFAULT_IMAGE_SIZE),
      splits=tuple(FLAGS.splits or (("train", "test") if is_gtsrb else ("train", "val"))),
      shard_size=FLAGS.shard_size or (1000 if is_gtsrb else 500),
      num_classes=FLAGS.num_classes, min_area=FLAGS.min_area, margin=FLAGS.margin,
      workers=FLAGS.workers)
  run(config)


if __name__ == "__main__":
  app.run(main)
