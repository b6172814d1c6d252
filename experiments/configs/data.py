r"""The ``data`` part of the study and preparation configs (one schema for all binaries).

- ``dataset``: "synthetic_signs" (built in, exact masks), "gtsrb_ic", "coco_ic" (prepared once
  with ``python -m experiments.prepare_data``), or for the perceptual study "image_folder",
  "oxford_iiit_pet", "imagenet2012" (TFDS-prepared, read without TensorFlow).
- ``data_dir``: prepared data / cache root ("" = the synthetic data in memory).
- ``image_size`` (0 = the dataset's), ``num_train`` / ``num_test`` (0 = the whole split).
- Synthetic signs: ``num_classes`` (2-43; the masks study reads it, 43 gives a GTSRB-size
  stand-in).
- GTSRB-IC: ``segmenter`` ("roi": GrabCut seeded from the annotated box, the default, measured
  best on the fixtures; "centre": the paper's centre-seeded colour-model graph cut).
- MS-COCO-IC: ``year`` (2014: the paper's counts; 2017), ``classes`` (COCO category names; () =
  the ``num_classes`` most frequent; the paper's ten: ``percadv_jax.data.coco.PAPER_CLASSES``),
  ``crop`` ("object": one crop per annotated object with that object's mask, as the paper;
  "label": one crop per label with the union of its instances), ``blackout``, ``min_area``,
  ``margin``.
"""

from __future__ import annotations

import ml_collections


def get(dataset: str = "synthetic_signs") -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      dataset=dataset, data_dir="", image_size=0, num_train=0, num_test=0,
      segmenter="roi",
      year=2017, classes=(), num_classes=10, crop="label", blackout="other_labels",
      min_area=1024.0, margin=0.1))


def options(d: ml_collections.ConfigDict) -> dict:
  """The dataset-specific keyword arguments of ``percadv_jax.data.load`` / ``prepare``."""
  if d.dataset == "gtsrb_ic":
    return {"segmenter": d.segmenter}
  if d.dataset == "coco_ic":
    out = {"year": int(d.year), "crop": d.crop, "blackout": d.blackout,
           "min_area": float(d.min_area), "margin": float(d.margin)}
    if d.classes:
      out["classes"] = tuple(d.classes)
    else:
      out["num_classes"] = int(d.num_classes)
    return out
  return {}
