"""GTSRB-IC: the German Traffic Sign Recognition Benchmark with GrabCut foreground masks.

Raw data (the official archives from https://benchmark.ini.rub.de/gtsrb_dataset.html, unzipped
into ``raw_dir``; ``raw_dir`` may be the folder holding ``GTSRB/`` or ``GTSRB/`` itself)::

    GTSRB_Final_Training_Images.zip -> GTSRB/Final_Training/Images/000NN/*.ppm + GT-000NN.csv
    GTSRB_Final_Test_Images.zip     -> GTSRB/Final_Test/Images/*.ppm
    GTSRB_Final_Test_GT.zip         -> GT-final_test.csv (put it in raw_dir or Final_Test/Images)

CSVs are ``;``-separated: ``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId``.
Every image (with the margin around the sign that GTSRB keeps) is resized to ``image_size`` and
segmented by :func:`percadv_jax.data.segment.grabcut_mask` seeded from its ROI. Problems are
counted in ``info.skipped``, never fatal: ``missing_file`` (CSV row without its image),
``unlisted_file`` (image without a CSV row), ``unreadable_image`` (undecodable or truncated),
``bad_csv_row`` (wrong field count / non-numbers), ``bad_label`` (ClassId outside 0..42),
``label_mismatch`` (training ClassId differs from its folder), ``size_mismatch`` (Width/Height
differ from the file; the ROI is scaled to the real size), ``bad_roi`` (empty ROI; the central
80% is used), ``grabcut_fallback`` (GrabCut failed; the ROI's inscribed ellipse is the mask).
"""

from __future__ import annotations

import csv
import functools
import glob
import hashlib
import json
import os
from typing import Any


from percadv_jax.data import cache, raw, segment

NAME = "gtsrb_ic"
DOWNLOAD = ("https://benchmark.ini.rub.de/gtsrb_dataset.html (archives "
            "GTSRB_Final_Training_Images.zip, GTSRB_Final_Test_Images.zip, "
            "GTSRB_Final_Test_GT.zip)")
NUM_CLASSES = 43
DEFAULT_IMAGE_SIZE = 32
CLASS_NAMES = (
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)",
    "Speed limit (60km/h)", "Speed limit (70km/h)", "Speed limit (80km/h)",
    "End of speed limit (80km/h)", "Speed limit (100km/h)", "Speed limit (120km/h)",
    "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 metric tons prohibited", "No entry", "General caution",
    "Dangerous curve to the left", "Dangerous curve to the right", "Double curve",
    "Bumpy road", "Slippery road", "Road narrows on the right", "Road work",
    "Traffic signals", "Pedestrians", "Children crossing", "Bicycles crossing",
    "Beware of ice/snow", "Wild animals crossing", "End of all speed and passing limits",
    "Turn right ahead", "Turn left ahead", "Ahead only", "Go straight or right",
    "Go straight or left", "Keep right", "Keep left", "Roundabout mandatory",
    "End of no passing", "End of no passing by vehicles over 3.5 metric tons")
_FIELDS = ["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]
SPLITS = ("train", "test")


def _root(raw_dir: str, split: str) -> str:
  sub = os.path.join("Final_Training", "Images") if split == "train" else os.path.join(
      "Final_Test", "Images")
  for base in (raw_dir, os.path.join(raw_dir, "GTSRB")):
    if os.path.isdir(os.path.join(base, sub)):
      return os.path.join(base, sub)
  if not os.path.isdir(raw_dir):
    raise FileNotFoundError(f"GTSRB raw_dir {raw_dir} does not exist; download {DOWNLOAD} "
                            "and unzip them there")
  archive = ("GTSRB_Final_Training_Images.zip" if split == "train"
             else "GTSRB_Final_Test_Images.zip")
  raise FileNotFoundError(
      f"expected the GTSRB {split} images at {os.path.join(raw_dir, 'GTSRB', sub)} (or "
      f"{os.path.join(raw_dir, sub)}); download {archive} from {DOWNLOAD} and unzip it into "
      f"{raw_dir}")


def _read_csv(path: str, stats: dict[str, int]) -> list[dict[str, Any]]:
  rows = []
  with open(path, newline="") as f:
    reader = csv.reader(f, delimiter=";")
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:8]] != _FIELDS:
      raise ValueError(f"{path}: expected a ';'-separated header {';'.join(_FIELDS)}, got "
                       f"{header!r}")
    for row in reader:
      if not row or all(not c.strip() for c in row):
        continue
      try:
        if len(row) < 8:
          raise ValueError
        rows.append({"file": row[0].strip(), "width": int(row[1]), "height": int(row[2]),
                     "roi": tuple(int(v) for v in row[3:7]), "label": int(row[7])})
      except ValueError:
        stats["bad_csv_row"] = stats.get("bad_csv_row", 0) + 1
  return rows


def list_items(raw_dir: str, split: str) -> tuple[list[dict[str, Any]], dict[str, int], str]:
  """The raw inputs of a split in a fixed order, counts of rows/files left out, provenance."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} for gtsrb_ic; choose one of {list(SPLITS)}")
  root = _root(raw_dir, split)
  stats: dict[str, int] = {}
  items: list[dict[str, Any]] = []

  def add(rows, folder, folder_label):
    listed = set()
    for r in rows:
      listed.add(r["file"])
      path = os.path.join(folder, r["file"])
      if not 0 <= r["label"] < NUM_CLASSES:
        stats["bad_label"] = stats.get("bad_label", 0) + 1
        continue
      if folder_label is not None and r["label"] != folder_label:
        stats["label_mismatch"] = stats.get("label_mismatch", 0) + 1
        continue
      if not os.path.isfile(path):
        stats["missing_file"] = stats.get("missing_file", 0) + 1
        continue
      items.append({**r, "path": path, "id": os.path.relpath(path, root)})
    for p in sorted(glob.glob(os.path.join(folder, "*.ppm"))):
      if os.path.basename(p) not in listed:
        stats["unlisted_file"] = stats.get("unlisted_file", 0) + 1

  if split == "train":
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                     and d.isdigit())
    if not classes:
      raise FileNotFoundError(f"no class folders 000NN under {root}; download "
                              f"GTSRB_Final_Training_Images.zip from {DOWNLOAD}")
    for d in classes:
      folder = os.path.join(root, d)
      gt = os.path.join(folder, f"GT-{d}.csv")
      if not os.path.isfile(gt):
        raise FileNotFoundError(f"expected the annotation file {gt} (part of "
                                f"GTSRB_Final_Training_Images.zip from {DOWNLOAD})")
      add(_read_csv(gt, stats), folder, int(d))
    source = root
  else:
    base = os.path.dirname(os.path.dirname(root))
    candidates = [os.path.join(root, "GT-final_test.csv"),
                  os.path.join(os.path.dirname(root), "GT-final_test.csv"),
                  os.path.join(base, "GT-final_test.csv"),
                  os.path.join(raw_dir, "GT-final_test.csv")]
    gt = next((c for c in candidates if os.path.isfile(c)), None)
    if gt is None:
      raise FileNotFoundError(
          f"expected the test labels GT-final_test.csv at {candidates[-1]} or "
          f"{candidates[0]}; download GTSRB_Final_Test_GT.zip from {DOWNLOAD} (the "
          "GT-final_test.test.csv inside the image archive has no ClassId)")
    add(_read_csv(gt, stats), root, None)
    source = f"{root} + {gt}"
  return items, stats, source


def process_item(item: dict[str, Any], *, image_size: int, grabcut: dict[str, Any]
                 ) -> tuple[list, dict[str, int]]:
  """One raw image -> ``([(image, mask, label, id)], skipped_counts)``."""
  stats: dict[str, int] = {}
  img = raw.read_rgb(item["path"])
  if img is None:
    return [], {"unreadable_image": 1}
  h, w = img.shape[:2]
  x1, y1, x2, y2 = item["roi"]
  if (item["width"], item["height"]) != (w, h):
    stats["size_mismatch"] = 1
    sx, sy = w / max(item["width"], 1), h / max(item["height"], 1)
    x1, x2, y1, y2 = x1 * sx, x2 * sx, y1 * sy, y2 * sy
  x1, x2 = max(0, x1), min(w - 1, x2)
  y1, y2 = max(0, y1), min(h - 1, y2)
  roi = (x1, y1, x2, y2)
  if x2 <= x1 or y2 <= y1:
    stats["bad_roi"] = 1
    roi = None
  mask, ok = segment.grabcut_mask(img, roi, out_size=image_size, **grabcut)
  if not ok:
    stats["grabcut_fallback"] = 1
  image = raw.resize_square(img, image_size)
  return [(image, mask, int(item["label"]), item["id"])], stats


def _process_any(item, *, image_size: int, grabcut: dict[str, Any]):
  if isinstance(item, tuple):  # the leading ("listing", counts) pseudo-item
    return [], dict(item[1])
  return process_item(item, image_size=image_size, grabcut=grabcut)


GRABCUT_DEFAULTS = {"work_size": 128, "iterations": 5, "border": 0.06, "centre": 0.3, "seed": 0}


def prepare(*, raw_dir: str, data_dir: str, split: str, image_size: int = DEFAULT_IMAGE_SIZE,
            shard_size: int = 1000, grabcut: dict[str, Any] | None = None,
            on_shard=None, progress: bool = True, workers: int = 1) -> str:
  """Segments and caches one split (resumable; see :mod:`percadv_jax.data.cache`).

  ``workers > 1`` runs GrabCut in that many processes (same cache bytes).
  """
  gc = {**GRABCUT_DEFAULTS, **(grabcut or {})}
  items, list_stats, source = list_items(raw_dir, split)
  out_dir = cache.split_dir(data_dir, NAME, split, image_size)

  def info(skipped, n):
    return {"name": NAME, "split": split, "num_classes": NUM_CLASSES,
            "class_names": list(CLASS_NAMES), "mask_source": "grabcut", "has_masks": True,
            "source": f"GTSRB ({source}); masks by OpenCV GrabCut seeded from the ROI",
            "extra": {"grabcut": gc, "listing": list_stats}}

  # Listing problems (missing files, bad rows) are counted once, as a leading pseudo-item.
  params = {"dataset": NAME, "split": split, "image_size": int(image_size), "grabcut": gc,
            "items_sha1": hashlib.sha1(json.dumps(
                [[it["id"], it["label"], list(it["roi"]), it["width"], it["height"]]
                 for it in items]).encode()).hexdigest(),
            "listing": list_stats}
  return cache.prepare(out_dir, [("listing", list_stats)] + items,
                       functools.partial(_process_any, image_size=image_size, grabcut=gc),
                       params=params, image_size=image_size, shard_size=shard_size, info=info,
                       on_shard=on_shard, progress=progress, workers=workers)


def load(*, split: str, data_dir: str | None = None, image_size: int | None = None,
         raw_dir: str | None = None, verify: bool = False, **prepare_kw):
  """Loads prepared GTSRB-IC; prepares it first when ``raw_dir`` is given and no cache exists.

  ``image_size=None`` picks the only cached size (or 32 when preparing).
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} for gtsrb_ic; choose one of {list(SPLITS)}")
  return cache.load_or_prepare(dataset=NAME, title="GTSRB-IC", download=DOWNLOAD, split=split,
                               data_dir=data_dir, image_size=image_size,
                               default_size=DEFAULT_IMAGE_SIZE, raw_dir=raw_dir,
                               prepare_split=prepare, verify=verify, **prepare_kw)
