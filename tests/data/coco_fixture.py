"""Writes a small COCO tree in the official layout: ``annotations/instances_<split><year>.json``
(polygon segmentations, real COCO category ids) and ``<split><year>/*.jpg``."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np

# Real COCO ids of the masks paper's ten classes, plus person (always excluded) and a kite.
COCO_IDS = {"person": 1, "car": 3, "motorcycle": 4, "boat": 9, "sheep": 20, "cow": 21,
            "umbrella": 28, "kite": 38, "bottle": 44, "chair": 62, "dining table": 67,
            "book": 84}
SUPER = {"person": "person", "car": "vehicle", "motorcycle": "vehicle", "boat": "vehicle",
         "sheep": "animal", "cow": "animal", "umbrella": "accessory", "kite": "sports",
         "bottle": "kitchen", "chair": "furniture", "dining table": "furniture",
         "book": "indoor"}
H, W = 120, 160


def _colour(k: int) -> tuple[int, int, int]:
  rng = np.random.default_rng(1000 + k)
  return tuple(int(v) for v in rng.integers(60, 256, 3))


def _octagon(x0: int, y0: int, w: int, h: int) -> list[float]:
  """An axis-aligned octagon inside the box, as a COCO polygon (integer vertices)."""
  cx, cy = x0 + w / 2, y0 + h / 2
  pts = []
  for a in np.linspace(0, 2 * np.pi, 8, endpoint=False) + np.pi / 8:
    pts += [float(round(cx + 0.5 * w * np.cos(a) / np.cos(np.pi / 8))),
            float(round(cy + 0.5 * h * np.sin(a) / np.cos(np.pi / 8)))]
  xs, ys = np.clip(pts[0::2], x0, x0 + w), np.clip(pts[1::2], y0, y0 + h)
  return [float(v) for xy in zip(xs, ys) for v in xy]


def write_coco(root: str, *, year: int = 2014, splits=("train", "val"),
               classes=("chair", "car", "book", "bottle", "dining table", "umbrella", "boat",
                        "motorcycle", "sheep", "cow"),
               per_class=(3, 2), seed: int = 0) -> dict:
  """Writes the tree; every image holds one or two objects of one class (a second instance of
  the same class in every third image), a person and a small object below ``min_area``.

  Args:
    root: where to write (``root/annotations``, ``root/<split><year>``).
    year: 2014 or 2017 (file names only).
    splits: split names (``"train"``, ``"val"``).
    classes: category names (from :data:`COCO_IDS`) that get images.
    per_class: images per class, per split (an int or one per split).
    seed: NumPy seed of positions and sizes.

  Returns:
    ``{split: [{"image_id", "ann_id", "category", "bbox", "area", "second"}]}``: the targets
    (area >= 1024, not person, not crowd); ``second`` is whether another instance of the same
    class is in the image.
  """
  rng = np.random.default_rng(seed)
  per = dict(zip(splits, per_class if isinstance(per_class, (tuple, list))
                 else [per_class] * len(splits)))
  os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
  cats = [{"id": i, "name": n, "supercategory": SUPER[n]} for n, i in sorted(
      COCO_IDS.items(), key=lambda t: t[1])]
  truth: dict = {}
  img_id, ann_id = 1, 1
  for split in splits:
    folder = f"{split}{year}"
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    images, anns, targets = [], [], []
    for name in classes:
      for k in range(per[split]):
        img = rng.integers(90, 150, (H, W, 3)).astype(np.uint8)
        objects = []
        w, h = int(rng.integers(40, 60)), int(rng.integers(40, 60))
        # Disjoint regions: the target left of x=106 and below y=24, the second instance and
        # the person right of x=110, the small object in the top-left corner.
        objects.append((name, int(rng.integers(24, 107 - w)), int(rng.integers(24, H - 1 - h)),
                        w, h))
        second = k % 3 == 2
        if second:
          objects.append((name, 110, 10, 44, 40))
        objects.append(("person", 110, 70, 40, 45))
        objects.append((name, 2, 2, 20, 20))  # small: below min_area 1024
        for obj_name, x0, y0, w, h in objects:
          poly = _octagon(x0, y0, w, h)
          m = np.zeros((H, W), np.uint8)
          cv2.fillPoly(m, [np.round(np.asarray(poly).reshape(-1, 2)).astype(np.int32)], 1)
          img[m.astype(bool)] = _colour(COCO_IDS[obj_name])
          area = float(m.sum())
          anns.append({"id": ann_id, "image_id": img_id, "category_id": COCO_IDS[obj_name],
                       "segmentation": [poly], "area": area, "iscrowd": 0,
                       "bbox": [float(x0), float(y0), float(w), float(h)]})
          if obj_name != "person" and area >= 1024:
            targets.append({"image_id": img_id, "ann_id": ann_id, "category": obj_name,
                            "bbox": (x0, y0, w, h), "area": area, "second": second})
          ann_id += 1
        file_name = f"COCO_{folder}_{img_id:012d}.jpg"
        cv2.imwrite(os.path.join(root, folder, file_name), img[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"id": img_id, "file_name": file_name, "height": H, "width": W})
        img_id += 1
    with open(os.path.join(root, "annotations", f"instances_{folder}.json"), "w") as f:
      json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    truth[split] = targets
  return truth
