r"""Configuration of the one-time data preparation (``python -m experiments.prepare_data``).

``--config=experiments/configs/prepare_data.py:<preset>``:

- ``gtsrb``: GTSRB-IC at 32 px, ROI-seeded GrabCut masks (``data.segmenter="roi"``);
- ``coco``: MS-COCO-IC 2017 at 64 px, the 10 most frequent classes besides person, one crop per
  label;
- ``gtsrb_paper``: GTSRB-IC as the masks paper: its centre-seeded min-cut/max-flow segmenter
  (``data.segmenter="centre"``), 43 classes, 32 px (ours); ``gtsrb_grabcut``: the same with our
  ROI-seeded GrabCut (mean IoU with the true sign masks 0.858 against the centre-seeded cut's
  0.824 on the GTSRB-format fixture, ``tests/data/test_gtsrb_ic.py::test_segmenters_compared``);
- ``coco_paper``: MS-COCO-IC as the masks paper: COCO-2014, its ten classes, one crop per object
  with that object's mask, other labels blacked out, 64 px (ours), and Table 1 also over the
  100,000 training crops the study trains on (``data.num_train``; see
  ``experiments/configs/attention_masks.py:coco_paper`` for every choice and its effect).

``FIELD_SOURCES[preset]`` labels every leaf field of the paper presets ``("paper" | "inferred" |
"ours", reason)``.

Fields: ``raw_dir`` (the unzipped official archives), ``splits`` (() = train,test for GTSRB;
train,val for COCO), ``shard_size`` (0 = 1000 GTSRB / 500 COCO images per cache shard),
``workers`` (GTSRB: GrabCut processes), ``seed`` (the training subset of ``data.num_train``: the
study's ``seed``, so Table 1 counts the images the study trains on) and ``data``
(``experiments/configs/data.py``: ``dataset``, ``data_dir`` (the cache root), ``image_size``,
``num_train`` (0 = all; else Table 1 adds a column for the random subset of that many training
images the study takes) and the dataset's options). Besides the cache, the run writes Table 1
(per-class counts per split, beside the paper's or the official counts), the foreground-pixel
share, an example figure (image | mask | masked image) and the paper's figure of the dataset
(Figure 2 for GTSRB-IC, Figure 3 for MS-COCO-IC) into ``--workdir`` (default: under
``data.data_dir``).
"""

from __future__ import annotations

import ml_collections

from experiments import configs

from experiments.configs import attention_masks, data


def _base(dataset: str, image_size: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.raw_dir = ""
  c.splits = ()
  c.shard_size = 0
  c.workers = 1
  c.seed = 0
  c.data = data.get(dataset)
  c.data.image_size = image_size
  return c


def gtsrb() -> ml_collections.ConfigDict:
  return _base("gtsrb_ic", 32)


def coco() -> ml_collections.ConfigDict:
  return _base("coco_ic", 64)


def _from_study(study: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The preparation of a study preset's data (the same ``data`` fields, the same seed)."""
  c = _base(study.data.dataset, study.data.image_size)
  c.data = study.data
  c.seed = study.seed
  return c


def gtsrb_paper() -> ml_collections.ConfigDict:
  return _from_study(attention_masks.gtsrb_paper())


def gtsrb_grabcut() -> ml_collections.ConfigDict:
  return _from_study(attention_masks.gtsrb_grabcut())


def coco_paper() -> ml_collections.ConfigDict:
  return _from_study(attention_masks.coco_paper())


def _sources(study_preset: str) -> dict[str, tuple[str, str]]:
  study = attention_masks.FIELD_SOURCES[study_preset]
  return {
      "raw_dir": ("ours", "where the official archives were unzipped on this machine"),
      "splits": ("inferred", "() = both official splits (GTSRB train / test; COCO train / val, "
                             "val being the paper's test set)"),
      "shard_size": ("ours", "cache layout only; no effect on the data"),
      "workers": ("ours", "parallel segmentation only; the same cache bytes"),
      "seed": ("ours", "the study preset's seed, so that Table 1's subset column counts the "
                       "training images the study draws"),
      **{k: v for k, v in study.items() if k.startswith("data.")},
  }


FIELD_SOURCES = {p: _sources(p) for p in ("gtsrb_paper", "gtsrb_grabcut", "coco_paper")}

PRESETS = {"gtsrb": gtsrb, "coco": coco, "gtsrb_paper": gtsrb_paper,
           "gtsrb_grabcut": gtsrb_grabcut, "coco_paper": coco_paper}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The preset named after the ``:`` of ``--config`` (default: ``gtsrb``)."""
  return configs.select(PRESETS, preset, "gtsrb")
