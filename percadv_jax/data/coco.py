"""MS-COCO-IC: single-label object crops with segmentation masks, from COCO instance annotations.

Raw data (https://cocodataset.org/#download: ``annotations_trainval2017.zip``, ``train2017.zip``,
``val2017.zip``, unzipped into ``raw_dir``)::

    raw_dir/annotations/instances_train2017.json   raw_dir/train2017/*.jpg
    raw_dir/annotations/instances_val2017.json     raw_dir/val2017/*.jpg

Construction (following the masks paper), for every *target* annotation, i.e. non-crowd, with a
segmentation, of a kept category and with ``area >= min_area`` (COCO's mask area in original
pixels; default 1024 = 32x32, COCO's "small" limit, so tiny objects are skipped):

* kept categories: ``person`` is excluded and the ``num_classes`` (default 10) most frequent
  remaining categories, counted over the target annotations of the *train* annotation file
  (of the split's own file if the train file is absent), are kept; label = rank in that list.
* crop: a square of side ``max(w, h) * (1 + 2 * margin)`` (margin 0.1) centred on the box; parts
  outside the image are zero (black).
* one label per crop: pixels of every annotation of *another* category (persons, crowds and
  unkept categories included) are set to 0, except where they are also covered by the label's
  own objects. Annotations of another category without a segmentation are blacked out by their
  box (counted as ``blackout_by_box``).
* mask: union of all annotations of the crop's category (crowd regions of that category
  included), so the crop holds objects of one label only and the mask covers all of them.
* crop and mask are resized to ``image_size`` (default 64; masks by area coverage >= 0.5).

Counted in ``info.skipped``: ``no_segmentation`` (targets without one), ``small`` (below
``min_area``), ``unreadable_image``, ``missing_file``, ``empty_mask`` (the mask vanished after
resizing).
"""

from __future__ import annotations

import contextlib
import hashlib
import io as _io
import json
import os
from typing import Any, Sequence

import cv2
import numpy as np

from percadv_jax.data import cache, raw

NAME = "coco_ic"
DOWNLOAD = ("https://cocodataset.org/#download (annotations_trainval2017.zip, train2017.zip, "
            "val2017.zip)")
DEFAULT_IMAGE_SIZE = 64
SPLITS = {"train": "train", "val": "val", "test": "val"}


def _paths(raw_dir: str, split: str, year: int) -> tuple[str, str]:
  folder = f"{SPLITS[split]}{year}"
  ann = os.path.join(raw_dir, "annotations", f"instances_{folder}.json")
  if not os.path.isfile(ann):
    raise FileNotFoundError(f"expected the COCO annotation file {ann}; download "
                            f"annotations_trainval{year}.zip from {DOWNLOAD} and unzip it into "
                            f"{raw_dir}")
  img_dir = os.path.join(raw_dir, folder)
  if not os.path.isdir(img_dir):
    raise FileNotFoundError(f"expected the COCO images folder {img_dir}; download {folder}.zip "
                            f"from {DOWNLOAD} and unzip it into {raw_dir}")
  return ann, img_dir


def _load_coco(path: str):
  from pycocotools.coco import COCO
  with contextlib.redirect_stdout(_io.StringIO()):
    return COCO(path)


def _has_segmentation(ann: dict[str, Any]) -> bool:
  seg = ann.get("segmentation")
  if not seg:
    return False
  if isinstance(seg, list):
    return any(len(p) >= 6 for p in seg)
  return isinstance(seg, dict) and "counts" in seg and "size" in seg


def _is_target(ann: dict[str, Any], min_area: float) -> bool:
  return not ann.get("iscrowd", 0) and _has_segmentation(ann) and ann.get("area", 0) >= min_area


def top_categories(coco, *, num_classes: int, min_area: float, exclude: Sequence[str]
                   ) -> list[dict[str, Any]]:
  """The ``num_classes`` categories with most target annotations (ties: lower id first)."""
  counts: dict[int, int] = {}
  for ann in coco.dataset.get("annotations", []):
    if _is_target(ann, min_area):
      counts[ann["category_id"]] = counts.get(ann["category_id"], 0) + 1
  cats = [c for c in coco.dataset.get("categories", []) if c["name"] not in set(exclude)]
  cats = sorted(cats, key=lambda c: (-counts.get(c["id"], 0), c["id"]))
  cats = [dict(c, count=counts.get(c["id"], 0)) for c in cats if counts.get(c["id"], 0) > 0]
  return cats[:num_classes]


def _ann_mask(coco, ann: dict[str, Any], h: int, w: int) -> np.ndarray | None:
  if not _has_segmentation(ann):
    return None
  seg = ann["segmentation"]
  if isinstance(seg, list):
    ann = dict(ann, segmentation=[p for p in seg if len(p) >= 6])
  m = coco.annToMask(ann)
  if m.shape != (h, w):  # annotation size disagrees with the file: rescale
    m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
  return m.astype(bool)


def _crop(a: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
  """Square crop with zero padding outside ``a``."""
  h, w = a.shape[:2]
  out = np.zeros((side, side) + a.shape[2:], a.dtype)
  xs, ys = max(0, x0), max(0, y0)
  xe, ye = min(w, x0 + side), min(h, y0 + side)
  if xe > xs and ye > ys:
    out[ys - y0:ye - y0, xs - x0:xe - x0] = a[ys:ye, xs:xe]
  return out


def process_image(coco, image_id: int, *, img_dir: str, cat_to_label: dict[int, int],
                  image_size: int, min_area: float, margin: float
                  ) -> tuple[list, dict[str, int]]:
  """All crops of one COCO image -> ``([(image, mask, label, id)], skipped_counts)``."""
  stats: dict[str, int] = {}

  def count(k, v=1):
    stats[k] = stats.get(k, 0) + v

  meta = coco.imgs[image_id]
  anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
  targets = []
  for a in anns:
    if a["category_id"] not in cat_to_label or a.get("iscrowd", 0):
      continue
    if not _has_segmentation(a):
      count("no_segmentation")
    elif a.get("area", 0) < min_area:
      count("small")
    else:
      targets.append(a)
  if not targets:
    return [], stats
  path = os.path.join(img_dir, meta["file_name"])
  if not os.path.isfile(path):
    return [], {**stats, "missing_file": 1}
  img = raw.read_rgb(path)
  if img is None:
    return [], {**stats, "unreadable_image": 1}
  h, w = img.shape[:2]
  masks = {a["id"]: _ann_mask(coco, a, h, w) for a in anns}
  out = []
  for t in sorted(targets, key=lambda a: a["id"]):
    cat = t["category_id"]
    label_mask = np.zeros((h, w), bool)
    other = np.zeros((h, w), bool)
    for a in anns:
      m = masks[a["id"]]
      if a["category_id"] == cat:
        if m is not None:
          label_mask |= m
      elif m is not None:
        other |= m
      else:  # another category without segmentation: black out its box
        bx, by, bw, bh = a["bbox"]
        other[int(by):int(np.ceil(by + bh)), int(bx):int(np.ceil(bx + bw))] = True
        count("blackout_by_box")
    bx, by, bw, bh = t["bbox"]
    side = max(1, int(np.ceil(max(bw, bh) * (1 + 2 * margin))))
    x0 = int(round(bx + bw / 2 - side / 2))
    y0 = int(round(by + bh / 2 - side / 2))
    image = img.copy()
    image[other & ~label_mask] = 0
    crop = _crop(image, x0, y0, side)
    mcrop = _crop(label_mask.astype(np.uint8), x0, y0, side)
    small = raw.resize_square(crop, image_size)
    msmall = raw.resize_mask(mcrop, image_size)
    if not msmall.any():
      count("empty_mask")
      continue
    out.append((small, msmall, cat_to_label[cat], f"{image_id}:{t['id']}"))
  return out, stats


def prepare(*, raw_dir: str, data_dir: str, split: str, image_size: int = DEFAULT_IMAGE_SIZE,
            num_classes: int = 10, min_area: float = 1024.0, margin: float = 0.1,
            exclude: Sequence[str] = ("person",), year: int = 2017, shard_size: int = 500,
            on_shard=None, progress: bool = True) -> str:
  """Crops, masks and caches one split (resumable; see :mod:`percadv_jax.data.cache`)."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} for coco_ic; choose one of {sorted(SPLITS)}")
  split = SPLITS[split]
  ann_path, img_dir = _paths(raw_dir, split, year)
  coco = _load_coco(ann_path)
  train_ann = os.path.join(raw_dir, "annotations", f"instances_train{year}.json")
  ref = coco if ann_path == train_ann or not os.path.isfile(train_ann) else _load_coco(train_ann)
  cats = top_categories(ref, num_classes=num_classes, min_area=min_area, exclude=exclude)
  if not cats:
    raise ValueError(f"{ann_path}: no category has annotations with a segmentation and "
                     f"area >= {min_area} outside {list(exclude)}")
  cat_to_label = {c["id"]: i for i, c in enumerate(cats)}
  image_ids = sorted({a["image_id"] for a in coco.dataset.get("annotations", [])
                      if a["category_id"] in cat_to_label and not a.get("iscrowd", 0)})
  out_dir = cache.split_dir(data_dir, NAME, split, image_size)
  settings = {"num_classes": num_classes, "min_area": min_area, "margin": margin,
              "exclude": list(exclude), "year": year}

  def info(skipped, n):
    return {"name": NAME, "split": split, "num_classes": len(cats),
            "class_names": [c["name"] for c in cats], "mask_source": "coco_segmentation",
            "has_masks": True,
            "source": f"MS-COCO {ann_path} + {img_dir}",
            "extra": {**settings, "category_ids": [c["id"] for c in cats],
                      "train_counts": [c["count"] for c in cats],
                      "class_list_from": os.path.basename(
                          ann_path if ref is coco else train_ann)}}

  def process(image_id):
    return process_image(coco, image_id, img_dir=img_dir, cat_to_label=cat_to_label,
                         image_size=image_size, min_area=min_area, margin=margin)

  params = {"dataset": NAME, "split": split, "image_size": int(image_size), **settings,
            "category_ids": [c["id"] for c in cats],
            "images_sha1": hashlib.sha1(json.dumps(image_ids).encode()).hexdigest()}
  return cache.prepare(out_dir, image_ids, process, params=params, image_size=image_size,
                       shard_size=shard_size, info=info, on_shard=on_shard, progress=progress)


def load(*, split: str, data_dir: str | None = None, image_size: int | None = None,
         raw_dir: str | None = None, verify: bool = False, **prepare_kw):
  """Loads prepared COCO-IC; prepares it first when ``raw_dir`` is given (resumes/reuses)."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} for coco_ic; choose one of {sorted(SPLITS)}")
  split = "val" if split == "test" else split
  return cache.load_or_prepare(dataset=NAME, title="COCO-IC", download=DOWNLOAD, split=split,
                               data_dir=data_dir, image_size=image_size,
                               default_size=DEFAULT_IMAGE_SIZE, raw_dir=raw_dir,
                               prepare_split=prepare, verify=verify, **prepare_kw)
