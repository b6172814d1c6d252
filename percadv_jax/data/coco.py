"""MS-COCO-IC: single-label object crops with segmentation masks, from COCO instance annotations.

Raw data (https://cocodataset.org/#download, unzipped into ``raw_dir``; ``year`` 2017 or 2014)::

    raw_dir/annotations/instances_train2017.json   raw_dir/train2017/*.jpg
    raw_dir/annotations/instances_val2017.json     raw_dir/val2017/*.jpg
    raw_dir/annotations/instances_train2014.json   raw_dir/train2014/*.jpg   (year=2014)
    raw_dir/annotations/instances_val2014.json     raw_dir/val2014/*.jpg

(``annotations_trainval2017.zip``, ``train2017.zip``, ``val2017.zip``; for 2014
``annotations_trainval2014.zip``, ``train2014.zip``, ``val2014.zip``.) The ``test`` split reads
the ``val`` files. The masks paper's counts (100,000 train / 51,271 test crops) fit COCO-2014.

Construction (following the masks paper), for every *target* annotation, i.e. non-crowd, with a
segmentation, of a kept category and with ``area >= min_area`` (COCO's mask area in original
pixels; default 1024 = 32x32, COCO's "small" limit, so tiny objects are skipped):

* kept categories, by ``classes``: a fixed list of COCO category names (label = position in the
  list; :data:`PAPER_CLASSES` is the masks paper's Table 1), or ``None`` (the default): ``person``
  (``exclude``) is left out and the ``num_classes`` (default 10) most frequent remaining
  categories, counted over the target annotations of the *train* annotation file (of the split's
  own file if the train file is absent), are kept; label = rank in that list.
* crop: one per target, a square of side ``max(w, h) * (1 + 2 * margin)`` (margin 0.1) centred on
  the box; parts outside the image are zero (black).
* mask, by ``crop``: ``"label"`` (default) = union of all annotations of the crop's category
  (crowd regions of that category included), so the mask covers every object of the label;
  ``"object"`` = the target annotation only (the paper: "the mask corresponding to an image
  contains annotations for one object only").
* blackout, by ``blackout``: ``"other_labels"`` (default) sets the pixels of every annotation of
  *another* category (persons, crowds and unkept categories included) to 0, except where the
  crop's mask covers them, so each crop holds objects of one label only; ``"other_objects"`` also
  blacks out the other instances of the same category (only the crop's own object(s) remain);
  ``"none"`` blacks out nothing. Annotations without a segmentation are blacked out by their box
  (counted as ``blackout_by_box``).
* crop and mask are resized to ``image_size`` (default 64; masks by area coverage >= 0.5).

Counted in ``info.skipped``: ``no_segmentation`` (targets without one), ``small`` (below
``min_area``), ``unreadable_image``, ``missing_file``, ``empty_mask`` (the mask vanished after
resizing), ``unknown_image`` (annotations of an image id the file does not list); the files behind
``missing_file`` / ``unreadable_image`` are named in ``info.extra["skipped_files"]`` and in a
warning when the split is prepared.

Options other than the defaults (``year=2017, classes=None, num_classes=10, crop="label",
blackout="other_labels", min_area=1024, margin=0.1, exclude=("person",)``) are cached in their
own folder ``<split>_<size>px-<variant>`` (:func:`cache_variant`), so caches prepared with
different options never overwrite each other; the default options keep ``<split>_<size>px``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io as _io
import json
import os
from typing import Any, Sequence

import cv2
import numpy as np

from percadv_jax import checks
from percadv_jax.data import cache, raw

NAME = "coco_ic"
DOWNLOAD = ("https://cocodataset.org/#download (annotations_trainval{year}.zip, train{year}.zip, "
            "val{year}.zip)")
DEFAULT_IMAGE_SIZE = 64
SPLITS = {"train": "train", "val": "val", "test": "val"}
YEARS = (2014, 2017)
CROPS = ("label", "object")
BLACKOUTS = ("other_labels", "other_objects", "none")
# The masks paper's ten MS-COCO-IC classes (its Table 1), in that order (label = position).
PAPER_CLASSES = ("chair", "car", "book", "bottle", "dining table", "umbrella", "boat",
                 "motorcycle", "sheep", "cow")
DEFAULT_SETTINGS = {"year": 2017, "classes": None, "num_classes": 10, "crop": "label",
                    "blackout": "other_labels", "min_area": 1024.0, "margin": 0.1,
                    "exclude": ["person"]}


def _download(year: int) -> str:
  return DOWNLOAD.format(year=year)


def settings(*, year: int = 2017, classes: Sequence[str] | None = None,
             num_classes: int | None = None, crop: str = "label",
             blackout: str = "other_labels", min_area: float = 1024.0, margin: float = 0.1,
             exclude: Sequence[str] = ("person",)) -> dict[str, Any]:
  """Validated, normalised preparation options (JSON-ready); ``ValueError`` on bad ones."""
  if isinstance(year, bool) or year not in YEARS:
    raise ValueError(f"year must be one of {list(YEARS)}, got {year!r}")
  if crop not in CROPS:
    raise ValueError(f"crop must be one of {list(CROPS)}, got {crop!r}")
  if blackout not in BLACKOUTS:
    raise ValueError(f"blackout must be one of {list(BLACKOUTS)}, got {blackout!r}")
  if isinstance(exclude, str):
    raise ValueError(f"exclude must be a list of category names, got the string {exclude!r}")
  exclude = [str(e) for e in exclude]
  if classes is not None:
    if isinstance(classes, str):
      raise ValueError(f"classes must be a list of COCO category names, got the string "
                       f"{classes!r}")
    classes = [str(c) for c in classes]
    if not classes:
      raise ValueError("classes must name at least one COCO category")
    dup = sorted({c for c in classes if classes.count(c) > 1})
    if dup:
      raise ValueError(f"classes lists {dup} more than once")
    if num_classes is not None and checks.check_int(num_classes, "num_classes") != len(classes):
      raise ValueError(f"num_classes={num_classes} disagrees with the {len(classes)} classes "
                       "given; pass one of them")
    num_classes = len(classes)
  else:
    num_classes = checks.check_int(10 if num_classes is None else num_classes, "num_classes",
                                   minimum=1)
  return {"year": int(year), "classes": classes, "num_classes": int(num_classes), "crop": crop,
          "blackout": blackout,
          "min_area": checks.check_float(min_area, "min_area", minimum=0.0),
          "margin": checks.check_float(margin, "margin", minimum=0.0, maximum=10.0),
          "exclude": exclude}


def cache_variant(opts: dict[str, Any]) -> str:
  """The cache-folder suffix of normalised options (``""`` for :data:`DEFAULT_SETTINGS`)."""
  if opts == DEFAULT_SETTINGS:
    return ""
  if opts["classes"] is None:
    cls = f"top{opts['num_classes']}"
  elif tuple(opts["classes"]) == PAPER_CLASSES:
    cls = "paper10"
  else:
    cls = f"{len(opts['classes'])}cls"
  digest = hashlib.sha1(json.dumps(opts, sort_keys=True).encode()).hexdigest()[:8]
  return f"{opts['year']}-{opts['crop']}-{cls}-{digest}"


def _paths(raw_dir: str, split: str, year: int) -> tuple[str, str]:
  raw.check_dir(raw_dir, "COCO raw_dir")
  folder = f"{SPLITS[split]}{year}"
  ann = os.path.join(raw_dir, "annotations", f"instances_{folder}.json")
  if not os.path.isfile(ann):
    raise raw.DataPathError(
        f"expected the COCO annotation file {ann}; download annotations_trainval{year}.zip "
        f"from {_download(year)} and unzip it into {raw_dir}")
  img_dir = os.path.join(raw_dir, folder)
  if not os.path.isdir(img_dir):
    raise raw.DataPathError(f"expected the COCO images folder {img_dir}; download {folder}.zip "
                            f"from {_download(year)} and unzip it into {raw_dir}")
  return ann, img_dir


def _load_coco(path: str):
  """A ``pycocotools`` COCO index of an instances JSON; ``ValueError`` naming ``path`` if the
  file is not valid JSON or not a COCO instances file."""
  from pycocotools.coco import COCO
  try:
    with open(path, "rb") as f:
      dataset = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"COCO annotation file {path} is not valid JSON ({e}); download it again"
                     ) from None
  if not isinstance(dataset, dict):
    raise ValueError(f"COCO annotation file {path} holds a JSON {type(dataset).__name__}, "
                     "expected an object with images, annotations and categories")
  for key in ("images", "annotations", "categories"):
    if not isinstance(dataset.get(key), list):
      raise ValueError(f"COCO annotation file {path} has no {key!r} list; is it an instances_*."
                       "json file?")
  try:
    for a in dataset["annotations"]:
      a["id"], a["image_id"], a["category_id"]  # noqa: B018 (presence check)
    for im in dataset["images"]:
      im["id"], im["file_name"]  # noqa: B018
    for c in dataset["categories"]:
      c["id"], c["name"]  # noqa: B018
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(_io.StringIO()):
      coco.createIndex()
  except (KeyError, TypeError) as e:
    raise ValueError(f"COCO annotation file {path} is malformed: an entry lacks or mistypes "
                     f"{e}") from None
  return coco


def _has_segmentation(ann: dict[str, Any]) -> bool:
  seg = ann.get("segmentation")
  if not seg:
    return False
  if isinstance(seg, list):
    return any(len(p) >= 6 for p in seg)
  return isinstance(seg, dict) and "counts" in seg and "size" in seg


def _is_target(ann: dict[str, Any], min_area: float) -> bool:
  return not ann.get("iscrowd", 0) and _has_segmentation(ann) and ann.get("area", 0) >= min_area


def _target_counts(coco, min_area: float) -> dict[int, int]:
  counts: dict[int, int] = {}
  for ann in coco.dataset.get("annotations", []):
    if _is_target(ann, min_area):
      counts[ann["category_id"]] = counts.get(ann["category_id"], 0) + 1
  return counts


def top_categories(coco, *, num_classes: int, min_area: float, exclude: Sequence[str]
                   ) -> list[dict[str, Any]]:
  """The ``num_classes`` categories with most target annotations (ties: lower id first)."""
  counts = _target_counts(coco, min_area)
  cats = [c for c in coco.dataset.get("categories", []) if c["name"] not in set(exclude)]
  cats = sorted(cats, key=lambda c: (-counts.get(c["id"], 0), c["id"]))
  cats = [dict(c, count=counts.get(c["id"], 0)) for c in cats if counts.get(c["id"], 0) > 0]
  return cats[:num_classes]


def named_categories(coco, names: Sequence[str], *, min_area: float, path: str = "the file"
                     ) -> list[dict[str, Any]]:
  """The categories called ``names``, in that order (with their target counts).

  Raises:
    ValueError: a name is not a category of the annotation file (the message lists them).
  """
  by_name = {c["name"]: c for c in coco.dataset.get("categories", [])}
  unknown = [n for n in names if n not in by_name]
  if unknown:
    raise ValueError(f"{path}: unknown COCO categories {unknown}; it has "
                     f"{sorted(by_name)}")
  counts = _target_counts(coco, min_area)
  return [dict(by_name[n], count=counts.get(by_name[n]["id"], 0)) for n in names]


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


def crop_square(bbox: Sequence[float], margin: float) -> tuple[int, int, int]:
  """``(x0, y0, side)``: the square crop of a COCO box ``(x, y, w, h)``, centred on it, of side
  ``max(w, h) * (1 + 2 * margin)`` (parts outside the image are zero-padded by the crop)."""
  bx, by, bw, bh = bbox
  side = max(1, int(np.ceil(max(bw, bh) * (1 + 2 * margin))))
  return int(round(bx + bw / 2 - side / 2)), int(round(by + bh / 2 - side / 2)), side


def process_image(coco, image_id: int, *, img_dir: str, cat_to_label: dict[int, int],
                  image_size: int, min_area: float, margin: float, crop: str = "label",
                  blackout: str = "other_labels"
                  ) -> tuple[list, dict[str, int], dict[str, list[str]]]:
  """All crops of one COCO image.

  Returns:
    ``([(image uint8 [S,S,3], mask uint8 [S,S], label, id)], skipped_counts, skipped_files)``
    with ``S = image_size`` and ``id = "<image_id>:<annotation_id>"``.
  """
  if crop not in CROPS:
    raise ValueError(f"crop must be one of {list(CROPS)}, got {crop!r}")
  if blackout not in BLACKOUTS:
    raise ValueError(f"blackout must be one of {list(BLACKOUTS)}, got {blackout!r}")
  stats: dict[str, int] = {}

  def count(k, v=1):
    stats[k] = stats.get(k, 0) + v

  if image_id not in coco.imgs:
    return [], {"unknown_image": 1}, {}
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
    return [], stats, {}
  path = os.path.join(img_dir, meta["file_name"])
  if not os.path.isfile(path):
    return [], {**stats, "missing_file": 1}, {"missing_file": [path]}
  img = raw.read_rgb(path)
  if img is None:
    return [], {**stats, "unreadable_image": 1}, {"unreadable_image": [path]}
  h, w = img.shape[:2]
  masks = {a["id"]: _ann_mask(coco, a, h, w) for a in anns}
  out = []
  for t in sorted(targets, key=lambda a: a["id"]):
    cat = t["category_id"]
    if crop == "object":
      own = masks[t["id"]].copy()
      own_ids = {t["id"]}
    else:
      own = np.zeros((h, w), bool)
      own_ids = {a["id"] for a in anns if a["category_id"] == cat}
      for a in anns:
        if a["id"] in own_ids and masks[a["id"]] is not None:
          own |= masks[a["id"]]
    other = np.zeros((h, w), bool)
    if blackout != "none":
      for a in anns:
        if a["id"] in own_ids:
          continue
        if a["category_id"] == cat and blackout == "other_labels":
          continue  # same label: stays visible
        m = masks[a["id"]]
        if m is not None:
          other |= m
        else:  # no segmentation: black out its box
          bx, by, bw, bh = a["bbox"]
          other[int(by):int(np.ceil(by + bh)), int(bx):int(np.ceil(bx + bw))] = True
          count("blackout_by_box")
    x0, y0, side = crop_square(t["bbox"], margin)
    image = img.copy()
    image[other & ~own] = 0
    ccrop = _crop(image, x0, y0, side)
    mcrop = _crop(own.astype(np.uint8), x0, y0, side)
    small = raw.resize_square(ccrop, image_size)
    msmall = raw.resize_mask(mcrop, image_size)
    if not msmall.any():
      count("empty_mask")
      continue
    out.append((small, msmall, cat_to_label[cat], f"{image_id}:{t['id']}"))
  return out, stats, {}


def _process(image_id, *, coco, **kw):
  return process_image(coco, image_id, **kw)


def prepare(*, raw_dir: str, data_dir: str, split: str, image_size: int = DEFAULT_IMAGE_SIZE,
            year: int = 2017, classes: Sequence[str] | None = None,
            num_classes: int | None = None, crop: str = "label",
            blackout: str = "other_labels", min_area: float = 1024.0, margin: float = 0.1,
            exclude: Sequence[str] = ("person",), shard_size: int = 500,
            on_shard=None, progress: bool = True) -> str:
  """Crops, masks and caches one split (resumable; see :mod:`percadv_jax.data.cache`).

  Args:
    raw_dir: folder holding ``annotations/`` and the image folders (see the module docstring).
    data_dir: cache root.
    split: ``"train"``, ``"val"`` or ``"test"`` (= ``"val"``).
    image_size: side of the cached square crops (>= 8).
    year: 2017 (default) or 2014: which COCO release's files are read.
    classes: COCO category names to keep, in label order (e.g. :data:`PAPER_CLASSES`); ``None``
      keeps the ``num_classes`` most frequent train categories outside ``exclude``.
    num_classes: with ``classes=None``, how many categories (default 10); with ``classes``,
      ``None`` or ``len(classes)``.
    crop: ``"label"`` (mask = all objects of the label) or ``"object"`` (mask = the cropped
      object only).
    blackout: ``"other_labels"``, ``"other_objects"`` or ``"none"`` (see the module docstring).
    min_area: smallest object area (original pixels) that becomes a crop.
    margin: crop margin around the box, as a fraction of its longer side, per side.
    exclude: category names never kept by the top-k choice.
    shard_size: images per cache shard.
    on_shard: called as ``on_shard(k, num_shards)`` after each shard.
    progress: show a progress bar.

  Returns:
    the split's cache folder.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} for coco_ic; choose one of {sorted(SPLITS)}")
  image_size = raw.check_image_size(image_size, allow_none=False)
  shard_size = checks.check_int(shard_size, "shard_size", minimum=1)
  opts = settings(year=year, classes=classes, num_classes=num_classes, crop=crop,
                  blackout=blackout, min_area=min_area, margin=margin, exclude=exclude)
  data_dir = raw.check_dir(data_dir, "data_dir", must_exist=False)
  split = SPLITS[split]
  year = opts["year"]
  ann_path, img_dir = _paths(raw_dir, split, year)
  coco = _load_coco(ann_path)
  train_ann = os.path.join(raw_dir, "annotations", f"instances_train{year}.json")
  ref = coco if ann_path == train_ann or not os.path.isfile(train_ann) else _load_coco(train_ann)
  if opts["classes"] is not None:
    cats = named_categories(coco, opts["classes"], min_area=opts["min_area"], path=ann_path)
    if ref is not coco:  # counts of the train file, as for top-k
      by_id = {c["id"]: c["count"] for c in named_categories(
          ref, opts["classes"], min_area=opts["min_area"], path=train_ann)}
      cats = [dict(c, count=by_id[c["id"]]) for c in cats]
  else:
    cats = top_categories(ref, num_classes=opts["num_classes"], min_area=opts["min_area"],
                          exclude=opts["exclude"])
  if not cats:
    raise ValueError(f"{ann_path}: no category has annotations with a segmentation and "
                     f"area >= {opts['min_area']} outside {opts['exclude']}")
  cat_to_label = {c["id"]: i for i, c in enumerate(cats)}
  image_ids = sorted({a["image_id"] for a in coco.dataset.get("annotations", [])
                      if a["category_id"] in cat_to_label and not a.get("iscrowd", 0)})
  out_dir = cache.split_dir(data_dir, NAME, split, image_size, cache_variant(opts))
  legacy = {k: opts[k] for k in ("num_classes", "min_area", "margin", "exclude", "year")}

  def info(skipped, n):
    return {"name": NAME, "split": split, "num_classes": len(cats),
            "class_names": [c["name"] for c in cats], "mask_source": "coco_segmentation",
            "has_masks": True,
            "source": f"MS-COCO {ann_path} + {img_dir}",
            "extra": {**opts, "category_ids": [c["id"] for c in cats],
                      "train_counts": [c["count"] for c in cats],
                      "class_list_from": ("classes" if opts["classes"] is not None else
                                          os.path.basename(ann_path if ref is coco
                                                           else train_ann))}}

  process = functools.partial(
      _process, coco=coco, img_dir=img_dir, cat_to_label=cat_to_label, image_size=image_size,
      min_area=opts["min_area"], margin=opts["margin"], crop=opts["crop"],
      blackout=opts["blackout"])
  # The default options keep the parameters (and so the caches) of earlier versions.
  extra_params = {} if opts == DEFAULT_SETTINGS else {
      k: opts[k] for k in ("classes", "crop", "blackout")}
  params = {"dataset": NAME, "split": split, "image_size": int(image_size), **legacy,
            **extra_params, "category_ids": [c["id"] for c in cats],
            "images_sha1": hashlib.sha1(json.dumps(image_ids).encode()).hexdigest()}
  return cache.prepare(out_dir, image_ids, process, params=params, image_size=image_size,
                       shard_size=shard_size, info=info, on_shard=on_shard, progress=progress)


_OPTION_NAMES = ("year", "classes", "num_classes", "crop", "blackout", "min_area", "margin",
                 "exclude")


def load(*, split: str, data_dir: str | None = None, image_size: int | None = None,
         raw_dir: str | None = None, verify: bool = False, **options):
  """Loads prepared COCO-IC; prepares it first when ``raw_dir`` is given (resumes/reuses).

  Args:
    split: ``"train"``, ``"val"`` or ``"test"`` (= ``"val"``).
    data_dir: cache root (default ``$PERCADV_DATA_DIR`` or ``~/.cache/percadv_jax``).
    image_size: crop side; ``None`` = the only cached size (64 when preparing).
    raw_dir: prepare (or resume) from the raw files first.
    verify: check every shard's SHA-256.
    **options: :func:`prepare`'s options (``year``, ``classes``, ``num_classes``, ``crop``,
      ``blackout``, ``min_area``, ``margin``, ``exclude``, ``shard_size``, ``progress``). They
      select the cache folder. Without any of them (and without ``raw_dir``) the split's only
      cache is loaded whatever its options; with several the error lists them.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} for coco_ic; choose one of {sorted(SPLITS)}")
  unknown = sorted(set(options) - set(_OPTION_NAMES) - {"shard_size", "progress", "on_shard"})
  if unknown:
    raise ValueError(f"unknown coco_ic options {unknown}; known: "
                     f"{sorted(_OPTION_NAMES + ('shard_size', 'progress', 'on_shard'))}")
  split = SPLITS[split]
  image_size = raw.check_image_size(image_size)
  chosen = {k: options[k] for k in _OPTION_NAMES if k in options}
  opts = settings(**chosen)
  variant = cache_variant(opts)
  if not chosen and raw_dir is None:
    only = cache.load_only_cache(dataset=NAME, title="COCO-IC", split=split, data_dir=data_dir,
                                 image_size=image_size, verify=verify)
    if only is not None:
      return only
  return cache.load_or_prepare(dataset=NAME, title="COCO-IC", download=_download(opts["year"]),
                               split=split, data_dir=data_dir, image_size=image_size,
                               default_size=DEFAULT_IMAGE_SIZE, raw_dir=raw_dir,
                               prepare_split=prepare, verify=verify, variant=variant,
                               **opts, **{
                                   k: options[k] for k in ("shard_size", "progress", "on_shard")
                                   if k in options})

