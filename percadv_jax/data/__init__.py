"""Datasets with foreground masks, behind one entry point, and batching.

    from percadv_jax import data
    src = data.load("synthetic_signs", split="train")          # default, no download
    src[0]  # {"image": uint8 [H,W,3], "mask": uint8 [H,W] in {0,1}, "label": int}
    src.info.num_classes, src.info.class_names, src.info.image_size
    for batch in data.batches(src, batch_size=128, seed=0):
      batch["image"]  # float32 [B,H,W,3] in [0,1]; batch["mask"] float32 [B,H,W,1]; "label" int32

The data order (``batches``, ``percadv_jax.train.fit``) is ``batch_indices(n, batch_size, seed,
step)``: NumPy permutations drawn from an integer seed, one per epoch.

Names: see :data:`DATASETS` (``load`` with an unknown name lists them). Descriptive statistics
(Table 1 class counts, foreground-pixel share) are in :mod:`percadv_jax.data.stats`, example
figures (image | mask | masked image) in :mod:`percadv_jax.data.figures`.
"""

from __future__ import annotations

import importlib
from typing import Any

from percadv_jax.data.raw import DataPathError
from percadv_jax.data.source import (ArraySource, DatasetInfo, IndexOutOfRangeError,
                                     batch_indices, batches, to_arrays)

# name -> (module, function); modules are imported on first use.
DATASETS: dict[str, tuple[str, str]] = {
    "synthetic_signs": ("percadv_jax.data.synthetic", "load"),
    "gtsrb_ic": ("percadv_jax.data.gtsrb", "load"),
    "coco_ic": ("percadv_jax.data.coco", "load"),
    "image_folder": ("percadv_jax.data.folder", "load_image_folder"),
    "oxford_iiit_pet": ("percadv_jax.data.folder", "load_oxford_iiit_pet"),
    "imagenet2012": ("percadv_jax.data.folder", "load_imagenet2012"),
    "tfds": ("percadv_jax.data.folder", "load_tfds"),
}


def known_datasets() -> list[str]:
  """The names ``load`` accepts, sorted."""
  return sorted(DATASETS)


def load(name: str, *, split: str, data_dir: str | None = None, image_size: int | None = None,
         **kwargs: Any):
  """Returns a random-access source of dataset ``name``.

  Args:
    name: one of :func:`known_datasets`.
    split: the split (``"train"``/``"test"``; TFDS sources accept TFDS split strings).
    data_dir: where prepared data lives (cache / raw files); see BUILD.md, "Data", per dataset.
    image_size: square image side; ``None`` = the dataset's default (or its cached size).
    **kwargs: dataset-specific options: ``num_examples``, ``seed``, ``num_classes`` for
      ``synthetic_signs``; ``raw_dir`` (prepare from raw files if not cached) for ``gtsrb_ic``
      and ``coco_ic``; ``segmenter``, ``grabcut`` for ``gtsrb_ic``; ``year``, ``classes``,
      ``num_classes``, ``crop``, ``blackout``, ``min_area``, ``margin`` for ``coco_ic`` (they
      select the cache; see ``percadv_jax.data.coco``); ``root``, ``labels_file``, ``resize``
      for ``image_folder``; ``resize`` (and ``boundary`` for ``oxford_iiit_pet``) for the TFDS
      datasets; ``tfds_name``, ``image_key``, ``label_key`` for ``tfds``.

  Returns:
    a source: ``len(src)``, ``src[i] -> {"image", "mask", "label"}``, ``src.info``.
  """
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(known_datasets())}")
  from percadv_jax.data import raw
  image_size = raw.check_image_size(image_size)
  if data_dir is not None:
    raw.check_dir(data_dir, "data_dir", must_exist=False)
  module, fn = DATASETS[name]
  loader = getattr(importlib.import_module(module), fn)
  return loader(split=split, data_dir=data_dir, image_size=image_size, **kwargs)


__all__ = ["ArraySource", "DATASETS", "DataPathError", "DatasetInfo", "IndexOutOfRangeError",
           "batch_indices", "batches", "known_datasets", "load", "to_arrays"]
