"""GTSRB-IC: the German Traffic Sign Recognition Benchmark with GrabCut foreground masks.

Raw data (the official archives from https://benchmark.ini.rub.de/gtsrb_dataset.html, unzipped
into ``raw_dir``; ``raw_dir`` may be the folder holding ``GTSRB/`` or ``GTSRB/`` itself)::

    GTSRB_Final_Training_Images.zip -> GTSRB/Final_Training/Images/000NN/*.ppm + GT-000NN.csv
    GTSRB_Final_Test_Images.zip     -> GTSRB/Final_Test/Images/*.ppm
    GTSRB_Final_Test_GT.zip         -> GT-final_test.csv (put it in raw_dir or Final_Test/Images)

CSVs are ``;``-separated: ``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId``.
Every image (with the margin around the sign that GTSRB keeps) is resized to ``image_size`` and
segmented by one of two GrabCut segmenters (``segmenter=``, see :mod:`percadv_jax.data.segment`
for both and their measured IoU): ``"roi"`` (default, ``mask_source="grabcut"``) seeded from the
annotated ROI, or ``"centre"`` (``mask_source="grabcut_centre"``), the masks paper's own, seeded
by pixels sampled near the image centre. A non-default segmenter or option set is cached in its
own folder ``<split>_<size>px-<variant>``. Problems are
counted in ``info.skipped``, never fatal: ``missing_file`` (CSV row without its image),
``unlisted_file`` (image without a CSV row), ``unreadable_image`` (undecodable or truncated),
``bad_csv_row`` (wrong field count / non-numbers), ``bad_label`` (ClassId outside 0..42),
``label_mismatch`` (training ClassId differs from its folder), ``size_mismatch`` (Width/Height
differ from the file; the ROI is scaled to the real size), ``bad_roi`` (empty ROI; the central
80% is used), ``grabcut_fallback`` (GrabCut failed; the ROI's inscribed ellipse is the mask).
The files (or ``csv:line`` rows) behind them are named in ``info.extra["skipped_files"]`` (up to
20 per reason) and in a warning when the split is prepared.
"""

from __future__ import annotations

import csv
import functools
import glob
import hashlib
import json
import os
from typing import Any

from percadv_jax import checks
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
  raw.check_dir(raw_dir, "GTSRB raw_dir")
  sub = os.path.join("Final_Training", "Images") if split == "train" else os.path.join(
      "Final_Test", "Images")
  for base in (raw_dir, os.path.join(raw_dir, "GTSRB")):
    if os.path.isdir(os.path.join(base, sub)):
      return os.path.join(base, sub)
  archive = ("GTSRB_Final_Training_Images.zip" if split == "train"
             else "GTSRB_Final_Test_Images.zip")
  raise raw.DataPathError(
      f"expected the GTSRB {split} images at {os.path.join(raw_dir, 'GTSRB', sub)} (or "
      f"{os.path.join(raw_dir, sub)}); download {archive} from {DOWNLOAD} and unzip it into "
      f"{raw_dir}")


def _note(stats: dict[str, int], files: dict[str, list[str]], reason: str, what: str) -> None:
  stats[reason] = stats.get(reason, 0) + 1
  named = files.setdefault(reason, [])
  if len(named) < cache.MAX_NAMED:
    named.append(what)


def _read_csv(path: str, stats: dict[str, int], files: dict[str, list[str]]
              ) -> list[dict[str, Any]]:
  rows = []
  with open(path, newline="", errors="replace") as f:
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
        _note(stats, files, "bad_csv_row", f"{path}:{reader.line_num}")
  return rows


def list_items(raw_dir: str, split: str, *, files: dict[str, list[str]] | None = None
               ) -> tuple[list[dict[str, Any]], dict[str, int], str]:
  """The raw inputs of a split in a fixed order, counts of rows/files left out, provenance.

  ``files``, when given, receives ``{reason: [path or "csv:line", ...]}`` naming what was left
  out (at most ``cache.MAX_NAMED`` per reason).
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} for gtsrb_ic; choose one of {list(SPLITS)}")
  root = _root(raw_dir, split)
  stats: dict[str, int] = {}
  files = {} if files is None else files
  items: list[dict[str, Any]] = []

  def add(rows, folder, folder_label):
    listed = set()
    for r in rows:
      listed.add(r["file"])
      path = os.path.join(folder, r["file"])
      if not 0 <= r["label"] < NUM_CLASSES:
        _note(stats, files, "bad_label", path)
        continue
      if folder_label is not None and r["label"] != folder_label:
        _note(stats, files, "label_mismatch", path)
        continue
      if not os.path.isfile(path):
        _note(stats, files, "missing_file", path)
        continue
      items.append({**r, "path": path, "id": os.path.relpath(path, root)})
    for p in sorted(glob.glob(os.path.join(folder, "*.ppm"))):
      if os.path.basename(p) not in listed:
        _note(stats, files, "unlisted_file", p)

  if split == "train":
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                     and d.isdigit())
    if not classes:
      raise raw.DataPathError(f"no class folders 000NN under {root}; download "
                              f"GTSRB_Final_Training_Images.zip from {DOWNLOAD}")
    for d in classes:
      folder = os.path.join(root, d)
      gt = os.path.join(folder, f"GT-{d}.csv")
      if not os.path.isfile(gt):
        raise raw.DataPathError(f"expected the annotation file {gt} (part of "
                                f"GTSRB_Final_Training_Images.zip from {DOWNLOAD})")
      add(_read_csv(gt, stats, files), folder, int(d))
    source = root
  else:
    base = os.path.dirname(os.path.dirname(root))
    candidates = [os.path.join(root, "GT-final_test.csv"),
                  os.path.join(os.path.dirname(root), "GT-final_test.csv"),
                  os.path.join(base, "GT-final_test.csv"),
                  os.path.join(raw_dir, "GT-final_test.csv")]
    gt = next((c for c in candidates if os.path.isfile(c)), None)
    if gt is None:
      raise raw.DataPathError(
          f"expected the test labels GT-final_test.csv at {candidates[-1]} or "
          f"{candidates[0]}; download GTSRB_Final_Test_GT.zip from {DOWNLOAD} (the "
          "GT-final_test.test.csv inside the image archive has no ClassId)")
    add(_read_csv(gt, stats, files), root, None)
    source = f"{root} + {gt}"
  return items, stats, source


def process_item(item: dict[str, Any], *, image_size: int, grabcut: dict[str, Any],
                 segmenter: str = "roi") -> tuple[list, dict[str, int], dict[str, list[str]]]:
  """One raw image -> ``([(image, mask, label, id)], skipped_counts, skipped_files)``.

  ``image`` is uint8 [S,S,3] and ``mask`` uint8 [S,S] with ``S = image_size``; ``grabcut``
  holds the options of ``segmenter`` (``"roi"`` or ``"centre"``).
  """
  stats: dict[str, int] = {}
  img = raw.read_rgb(item["path"])
  if img is None:
    return [], {"unreadable_image": 1}, {"unreadable_image": [item["path"]]}
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
  if segmenter == "centre":
    mask, ok = segment.centre_grabcut_mask(img, out_size=image_size, **grabcut)
  else:
    mask, ok = segment.grabcut_mask(img, roi, out_size=image_size, **grabcut)
  if not ok:
    stats["grabcut_fallback"] = 1
  image = raw.resize_square(img, image_size)
  return [(image, mask, int(item["label"]), item["id"])], stats, {}


def _process_any(item, *, image_size: int, grabcut: dict[str, Any], segmenter: str = "roi"):
  if isinstance(item, tuple):  # the leading ("listing", counts, files) pseudo-item
    return [], dict(item[1]), dict(item[2]) if len(item) > 2 else {}
  return process_item(item, image_size=image_size, grabcut=grabcut, segmenter=segmenter)


GRABCUT_DEFAULTS = {"work_size": 128, "iterations": 5, "border": 0.06, "centre": 0.3, "seed": 0}
CENTRE_DEFAULTS = {"work_size": 128, "iterations": 5, "border": 0.06, "num_seeds": 300,
                   "spread": 0.12, "prior": 0.9, "seed": 0}
SEGMENTER_DEFAULTS = {"roi": GRABCUT_DEFAULTS, "centre": CENTRE_DEFAULTS}
DEFAULT_SEGMENTER = "roi"  # the better one on the fixture (see percadv_jax.data.segment)
MASK_SOURCES = {"roi": "grabcut", "centre": "grabcut_centre"}


def segmenter_options(segmenter: str = DEFAULT_SEGMENTER, grabcut: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
  """The full, checked options of ``segmenter`` (its defaults updated by ``grabcut``)."""
  if segmenter not in SEGMENTER_DEFAULTS:
    raise ValueError(f"unknown segmenter {segmenter!r}; choose one of "
                     f"{sorted(SEGMENTER_DEFAULTS)}")
  defaults = SEGMENTER_DEFAULTS[segmenter]
  if grabcut is not None and not isinstance(grabcut, dict):
    raise ValueError(f"grabcut must be a dict of segmenter options, got {grabcut!r}")
  unknown = sorted(set(grabcut or {}) - set(defaults))
  if unknown:
    raise ValueError(f"unknown options {unknown} for the {segmenter!r} segmenter; it takes "
                     f"{sorted(defaults)}")
  gc = {**defaults, **(grabcut or {})}
  gc["work_size"] = checks.check_int(gc["work_size"], "work_size", minimum=8)
  gc["iterations"] = checks.check_int(gc["iterations"], "iterations", minimum=1)
  gc["seed"] = checks.check_int(gc["seed"], "seed", minimum=0)
  gc["border"] = checks.check_float(gc["border"], "border", minimum=0.0, maximum=0.45)
  if segmenter == "roi":
    gc["centre"] = checks.check_float(gc["centre"], "centre", minimum=0.0, maximum=1.0,
                                      min_inclusive=False)
  else:
    gc["num_seeds"] = checks.check_int(gc["num_seeds"], "num_seeds", minimum=1)
    gc["spread"] = checks.check_float(gc["spread"], "spread", minimum=0.0, maximum=1.0,
                                      min_inclusive=False)
    gc["prior"] = checks.check_float(gc["prior"], "prior", minimum=0.0, maximum=1.0)
  return gc


def cache_variant(segmenter: str, options: dict[str, Any]) -> str:
  """Cache-folder suffix: ``""`` for the default segmenter with its default options."""
  if segmenter == DEFAULT_SEGMENTER and options == SEGMENTER_DEFAULTS[segmenter]:
    return ""
  digest = hashlib.sha1(json.dumps([segmenter, options], sort_keys=True).encode()
                        ).hexdigest()[:8]
  return f"{segmenter}-{digest}"


def prepare(*, raw_dir: str, data_dir: str, split: str, image_size: int = DEFAULT_IMAGE_SIZE,
            segmenter: str = DEFAULT_SEGMENTER, grabcut: dict[str, Any] | None = None,
            shard_size: int = 1000, on_shard=None, progress: bool = True,
            workers: int = 1) -> str:
  """Segments and caches one split (resumable; see :mod:`percadv_jax.data.cache`).

  Args:
    raw_dir: folder holding the unzipped archives (see the module docstring).
    data_dir: cache root.
    split: ``"train"`` or ``"test"``.
    image_size: side of the cached images (>= 8).
    segmenter: ``"roi"`` (default) or ``"centre"`` (see :mod:`percadv_jax.data.segment`).
    grabcut: options of the segmenter overriding :data:`SEGMENTER_DEFAULTS` ``[segmenter]``.
    shard_size: images per cache shard.
    on_shard: called as ``on_shard(k, num_shards)`` after each shard.
    progress: show a progress bar.
    workers: processes running GrabCut in parallel (same cache bytes).

  Returns:
    the split's cache folder.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} for gtsrb_ic; choose one of {list(SPLITS)}")
  image_size = raw.check_image_size(image_size, allow_none=False)
  shard_size = checks.check_int(shard_size, "shard_size", minimum=1)
  workers = checks.check_int(workers, "workers", minimum=1)
  gc = segmenter_options(segmenter, grabcut)
  data_dir = raw.check_dir(data_dir, "data_dir", must_exist=False)
  list_files: dict[str, list[str]] = {}
  items, list_stats, source = list_items(raw_dir, split, files=list_files)
  out_dir = cache.split_dir(data_dir, NAME, split, image_size, cache_variant(segmenter, gc))
  how = ("OpenCV GrabCut seeded from the ROI" if segmenter == "roi" else
         "OpenCV GrabCut seeded by pixels sampled near the image centre")

  def info(skipped, n):
    return {"name": NAME, "split": split, "num_classes": NUM_CLASSES,
            "class_names": list(CLASS_NAMES), "mask_source": MASK_SOURCES[segmenter],
            "has_masks": True, "source": f"GTSRB ({source}); masks by {how}",
            "extra": {"grabcut": gc, "segmenter": segmenter, "listing": list_stats}}

  # Listing problems (missing files, bad rows) are counted once, as a leading pseudo-item.
  params = {"dataset": NAME, "split": split, "image_size": int(image_size), "grabcut": gc,
            "items_sha1": hashlib.sha1(json.dumps(
                [[it["id"], it["label"], list(it["roi"]), it["width"], it["height"]]
                 for it in items]).encode()).hexdigest(),
            "listing": list_stats}
  if segmenter != "roi":
    params["segmenter"] = segmenter
  return cache.prepare(out_dir, [("listing", list_stats, list_files)] + items,
                       functools.partial(_process_any, image_size=image_size, grabcut=gc,
                                         segmenter=segmenter),
                       params=params, image_size=image_size, shard_size=shard_size, info=info,
                       on_shard=on_shard, progress=progress, workers=workers)


def load(*, split: str, data_dir: str | None = None, image_size: int | None = None,
         raw_dir: str | None = None, verify: bool = False, segmenter: str | None = None,
         grabcut: dict[str, Any] | None = None, **prepare_kw):
  """Loads prepared GTSRB-IC; prepares it first when ``raw_dir`` is given and no cache exists.

  ``image_size=None`` picks the only cached size (or 32 when preparing). ``segmenter`` /
  ``grabcut`` select the cache of those options; when neither is given and there is no
  ``raw_dir``, the split's only cache is loaded whatever its segmenter (several: an error lists
  them). Other keywords (``shard_size``, ``workers``, ``progress``) go to :func:`prepare`.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} for gtsrb_ic; choose one of {list(SPLITS)}")
  image_size = raw.check_image_size(image_size)
  if segmenter is None and grabcut is None and raw_dir is None:
    only = cache.load_only_cache(dataset=NAME, title="GTSRB-IC", split=split, data_dir=data_dir,
                                 image_size=image_size, verify=verify)
    if only is not None:
      return only
  segmenter = DEFAULT_SEGMENTER if segmenter is None else segmenter
  gc = segmenter_options(segmenter, grabcut)
  return cache.load_or_prepare(dataset=NAME, title="GTSRB-IC", download=DOWNLOAD, split=split,
                               data_dir=data_dir, image_size=image_size,
                               default_size=DEFAULT_IMAGE_SIZE, raw_dir=raw_dir,
                               prepare_split=prepare, verify=verify,
                               variant=cache_variant(segmenter, gc), segmenter=segmenter,
                               grabcut=grabcut, **prepare_kw)
