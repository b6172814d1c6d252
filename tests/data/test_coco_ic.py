"""COCO-IC from a COCO instances JSON fixture (polygons, RLE, crowd, overlaps, persons)."""

import json
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from percadv_jax import data
from percadv_jax.data import coco

RED, BLUE, GREEN, YELLOW = (200, 30, 30), (30, 30, 200), (30, 200, 30), (220, 220, 40)
H, W = 120, 160


def _rect_poly(x0, y0, x1, y1):
  return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _rect_mask(x0, y0, x1, y1):
  m = np.zeros((H, W), np.uint8)
  m[y0:y1, x0:x1] = 1
  return m


@pytest.fixture(scope="module")
def coco_raw(tmp_path_factory):
  root = tmp_path_factory.mktemp("coco")
  os.makedirs(root / "annotations")
  os.makedirs(root / "val2017")
  anns, images = [], []
  rects = {}  # ann id -> (x0, y0, x1, y1) painted region

  def add(img_id, ann_id, cat, rect, *, seg="poly", crowd=0, area=None):
    m = _rect_mask(*rect)
    if seg == "poly":
      s = _rect_poly(*rect)
    elif seg == "rle":
      s = mask_utils.encode(np.asfortranarray(m))
      s["counts"] = s["counts"].decode()
    elif seg == "uncompressed":  # crowd style: column-major run lengths
      flat = m.ravel(order="F")
      runs, cur, n = [], 0, 0
      for v in flat:
        if v != cur:
          runs.append(n)
          cur, n = v, 0
        n += 1
      runs.append(n)
      s = {"counts": runs, "size": [H, W]}
    else:
      s = []
    x0, y0, x1, y1 = rect
    anns.append({"id": ann_id, "image_id": img_id, "category_id": cat, "segmentation": s,
                 "area": float(m.sum() if area is None else area), "iscrowd": crowd,
                 "bbox": [x0, y0, x1 - x0, y1 - y0]})
    rects[ann_id] = rect

  def paint(img_id, name, regions):
    img = np.full((H, W, 3), 128, np.uint8)
    for rect, colour in regions:
      x0, y0, x1, y1 = rect
      img[y0:y1, x0:x1] = colour
    params = [cv2.IMWRITE_JPEG_QUALITY, 100] if name.endswith(".jpg") else []
    cv2.imwrite(str(root / "val2017" / name), img[..., ::-1], params)
    images.append({"id": img_id, "file_name": name, "height": H, "width": W})

  # 1 (PNG): a car, a dog beside it and a person above it, both inside the car's crop.
  paint(1, "000001.png", [((20, 30, 70, 90), RED), ((75, 40, 115, 95), BLUE),
                          ((30, 5, 60, 28), GREEN)])
  add(1, 11, 3, (20, 30, 70, 90))
  add(1, 12, 18, (75, 40, 115, 95))
  add(1, 13, 1, (30, 5, 60, 28))
  # 2 (JPEG): a dog as compressed RLE, a crowd of cars (uncompressed RLE) inside its crop,
  # a tiny car and a car without segmentation.
  paint(2, "000002.jpg", [((20, 20, 100, 100), BLUE), ((110, 60, 150, 110), RED),
                          ((5, 5, 15, 15), RED)])
  add(2, 21, 18, (20, 20, 100, 100), seg="rle")
  add(2, 22, 3, (110, 60, 150, 110), seg="uncompressed", crowd=1)
  add(2, 23, 3, (5, 5, 15, 15))
  add(2, 24, 3, (120, 5, 150, 40), seg="none", area=1050)
  # 3 (PNG): only a person and a kite (the kite's class is not among the top 2).
  paint(3, "000003.png", [((10, 10, 90, 110), GREEN), ((100, 20, 150, 80), YELLOW)])
  add(3, 31, 1, (10, 10, 90, 110))
  add(3, 32, 38, (100, 20, 150, 80))
  # 4 (PNG): two cars whose crops hold each other.
  paint(4, "000004.png", [((10, 30, 50, 70), RED), ((55, 35, 95, 75), RED)])
  add(4, 41, 3, (10, 30, 50, 70))
  add(4, 42, 3, (55, 35, 95, 75))
  cats = [{"id": 1, "name": "person", "supercategory": "person"},
          {"id": 3, "name": "car", "supercategory": "vehicle"},
          {"id": 18, "name": "dog", "supercategory": "animal"},
          {"id": 38, "name": "kite", "supercategory": "sports"}]
  with open(root / "annotations" / "instances_val2017.json", "w") as f:
    json.dump({"images": images, "annotations": anns, "categories": cats}, f)
  return str(root), rects


@pytest.fixture(scope="module")
def coco_src(coco_raw, tmp_path_factory):
  root, _ = coco_raw
  d = str(tmp_path_factory.mktemp("coco_cache"))
  coco.prepare(raw_dir=root, data_dir=d, split="val", image_size=32, num_classes=2,
               margin=0.3, shard_size=2, progress=False)
  return data.load("coco_ic", split="test", data_dir=d)


def test_counts_labels_and_no_person(coco_src):
  src = coco_src
  assert src.info.class_names == ("car", "dog") and src.info.num_classes == 2
  assert src.info.mask_source == "coco_segmentation"
  assert sorted(str(i) for i in src.ids) == ["1:11", "1:12", "2:21", "4:41", "4:42"]
  by_id = dict(zip((str(i) for i in src.ids), src.labels.tolist()))
  assert by_id == {"1:11": 0, "1:12": 1, "2:21": 1, "4:41": 0, "4:42": 0}
  # The car without segmentation is no target, and is blacked out by its box in the dog crop.
  assert src.info.skipped == {"small": 1, "no_segmentation": 1, "blackout_by_box": 1}
  assert (src.masks.reshape(len(src), -1).sum(1) > 0).all()
  assert src.images.shape == (5, 32, 32, 3)


def test_other_objects_blacked_out(coco_src):
  img = coco_src.images.astype(int)
  r, g, b = img[..., 0], img[..., 1], img[..., 2]
  green = (g > 150) & (r < 100) & (b < 100)
  assert not green.any()  # no person pixels anywhere
  for k, i in enumerate(coco_src.ids):
    blue = (b > 150) & (r < 100) & (g < 100)
    red = (r > 150) & (g < 100) & (b < 100)
    if coco_src.labels[k] == 0:  # car crops: no dog pixels
      assert not blue[k].any(), i
    else:  # dog crops: no car pixels (the crowd of cars is blacked out)
      assert not red[k].any(), i
    # Inside the mask the crop shows its own class's colour.
    m = coco_src.masks[k].astype(bool)
    colour = (red if coco_src.labels[k] == 0 else blue)[k]
    assert colour[m].mean() > 0.8, i


def test_crop_exact_at_full_resolution(coco_raw):
  """At the crop's own size (no resampling) blacked-out pixels are exactly the others' masks."""
  root, rects = coco_raw
  c = coco._load_coco(os.path.join(root, "annotations", "instances_val2017.json"))
  side = int(np.ceil(60 * 1.6))  # car 11 is 50 x 60, margin 0.3
  out, stats, _ = coco.process_image(c, 1, img_dir=os.path.join(root, "val2017"),
                                  cat_to_label={3: 0, 18: 1}, image_size=side, min_area=1024,
                                  margin=0.3)
  car = [o for o in out if o[3] == "1:11"][0]
  image, mask = car[0], car[1]
  x0, y0 = int(round(20 + 25 - side / 2)), int(round(30 + 30 - side / 2))
  for ann_id, value in ((12, 0), (13, 0)):  # dog and person: zero inside the crop
    ax0, ay0, ax1, ay1 = rects[ann_id]
    sub = image[max(ay0 - y0, 0):ay1 - y0, max(ax0 - x0, 0):ax1 - x0]
    assert sub.size and (sub == value).all()
  want = np.zeros((side, side), np.uint8)
  want[30 - y0:90 - y0, 20 - x0:70 - x0] = 1
  np.testing.assert_array_equal(mask, want)
  np.testing.assert_array_equal(image[mask == 1], np.tile(RED, ((mask == 1).sum(), 1)))
  assert x0 < 0 and (image[:, :-x0] == 0).all()  # padding left of the image is black


def test_bad_inputs(tmp_path, coco_raw):
  with pytest.raises(FileNotFoundError, match=r"instances_val2017\.json.*cocodataset\.org"):
    coco.prepare(raw_dir=str(tmp_path), data_dir=str(tmp_path / "d"), split="val")
  os.makedirs(tmp_path / "annotations")
  with open(tmp_path / "annotations" / "instances_val2017.json", "w") as f:
    json.dump({"images": [], "annotations": [], "categories": []}, f)
  with pytest.raises(FileNotFoundError, match=r"val2017.*val2017\.zip"):
    coco.prepare(raw_dir=str(tmp_path), data_dir=str(tmp_path / "d"), split="val")
  os.makedirs(tmp_path / "val2017")
  with pytest.raises(ValueError, match="no category"):
    coco.prepare(raw_dir=str(tmp_path), data_dir=str(tmp_path / "d"), split="val")
  with pytest.raises(FileNotFoundError, match="prepare_data --dataset=coco_ic"):
    data.load("coco_ic", split="train", data_dir=str(tmp_path / "none"))


# ------------------------------------------------------------------ the masks paper's options

from tests.data.coco_fixture import COCO_IDS, write_coco  # noqa: E402


@pytest.fixture(scope="module")
def paper_raw(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("coco2014"))
  return root, write_coco(root, year=2014, per_class=(3, 2))


@pytest.fixture(scope="module")
def paper_cache(paper_raw, tmp_path_factory):
  root, _ = paper_raw
  d = str(tmp_path_factory.mktemp("coco2014_cache"))
  for split in ("train", "test"):
    coco.prepare(raw_dir=root, data_dir=d, split=split, image_size=32, year=2014,
                 classes=coco.PAPER_CLASSES, crop="object", progress=False)
  return d


def test_paper_classes_year_2014_object_crops(paper_raw, paper_cache):
  _, truth = paper_raw
  for split, want in (("train", truth["train"]), ("test", truth["val"])):
    src = data.load("coco_ic", split=split, data_dir=paper_cache, year=2014,
                    classes=coco.PAPER_CLASSES, crop="object")
    assert src.info.class_names == coco.PAPER_CLASSES and src.info.num_classes == 10
    assert src.info.extra["year"] == 2014 and src.info.extra["crop"] == "object"
    assert src.info.extra["category_ids"] == [COCO_IDS[c] for c in coco.PAPER_CLASSES]
    assert "2014" in src.info.source
    got = {str(i): int(l) for i, l in zip(src.ids, src.labels)}
    assert got == {f"{t['image_id']}:{t['ann_id']}": coco.PAPER_CLASSES.index(t["category"])
                   for t in want}
    # One object below min_area in every image (10 classes x 3 train / 2 val images).
    assert src.info.skipped == {"small": 10 * (3 if split == "train" else 2)}
  # Table 1 of the prepared fixture: 3 + (1 second instance) train and 2 val per class.
  train = data.load("coco_ic", split="train", data_dir=paper_cache, year=2014,
                    classes=coco.PAPER_CLASSES, crop="object")
  assert np.bincount(train.labels, minlength=10).tolist() == [4] * 10


def test_object_vs_label_crop_masks_at_full_resolution(coco_raw):
  """Image 4: two cars whose crops hold each other. ``object``: the mask is the cropped car
  only; ``label``: both cars. ``blackout`` decides whether the other car stays visible."""
  root, rects = coco_raw
  c = coco._load_coco(os.path.join(root, "annotations", "instances_val2017.json"))
  side = int(np.ceil(40 * 1.6))  # car 41 is 40 x 40, margin 0.3
  x0, y0 = int(round(30 - side / 2)), int(round(50 - side / 2))

  def crop_of(crop, blackout):
    out, _, _ = coco.process_image(c, 4, img_dir=os.path.join(root, "val2017"),
                                   cat_to_label={3: 0, 18: 1}, image_size=side, min_area=1024,
                                   margin=0.3, crop=crop, blackout=blackout)
    return [o for o in out if o[3] == "4:41"][0]

  def region(ann_id):
    ax0, ay0, ax1, ay1 = rects[ann_id]
    m = np.zeros((side, side), bool)
    m[max(ay0 - y0, 0):ay1 - y0, max(ax0 - x0, 0):ax1 - x0] = True
    return m

  own, other = region(41), region(42)
  assert other.any()  # car 42 reaches into car 41's crop
  img, mask = crop_of("object", "other_labels")[:2]
  np.testing.assert_array_equal(mask, own.astype(np.uint8))
  assert (img[other] == RED).all()  # the same-label car stays visible, outside the mask
  img, mask = crop_of("label", "other_labels")[:2]
  np.testing.assert_array_equal(mask, (own | other).astype(np.uint8))
  img, mask = crop_of("object", "other_objects")[:2]
  np.testing.assert_array_equal(mask, own.astype(np.uint8))
  assert (img[other] == 0).all() and (img[own] == RED).all()
  # "none" keeps the person visible in car 11's crop (image 1); "other_labels" blacks it out.
  out, _, _ = coco.process_image(c, 1, img_dir=os.path.join(root, "val2017"),
                                 cat_to_label={3: 0}, image_size=64, min_area=1024, margin=0.3,
                                 crop="object", blackout="none")
  g = out[0][0].astype(int)
  assert ((g[..., 1] > 150) & (g[..., 0] < 100)).any()


def test_option_caches_never_share_a_folder(coco_raw, paper_raw, tmp_path):
  root, _ = coco_raw
  d = str(tmp_path / "c")
  kw = dict(raw_dir=root, data_dir=d, split="val", image_size=32, margin=0.3, progress=False)
  a = coco.prepare(num_classes=2, **kw)
  b = coco.prepare(num_classes=2, crop="object", **kw)
  c = coco.prepare(num_classes=2, crop="object", blackout="other_objects", **kw)
  e = coco.prepare(classes=["dog", "car"], **kw)
  assert len({a, b, c, e}) == 4 and all(os.path.exists(os.path.join(p, "meta.json"))
                                        for p in (a, b, c, e))
  assert os.path.basename(b).startswith("val_32px-2017-object-top2-")
  assert os.path.basename(e).startswith("val_32px-2017-label-2cls-")
  # The default options keep the folder (and cache) of earlier versions.
  f = coco.prepare(raw_dir=root, data_dir=d, split="val", image_size=32, progress=False)
  assert os.path.basename(f) == "val_32px"
  src = data.load("coco_ic", split="val", data_dir=d, classes=["dog", "car"], margin=0.3)
  assert src.info.class_names == ("dog", "car")
  with pytest.raises(ValueError, match="several caches"):
    data.load("coco_ic", split="val", data_dir=d)
  with pytest.raises(ValueError, match=r"no prepared COCO-IC cache at .*val_32px-2014-"):
    data.load("coco_ic", split="val", data_dir=d, year=2014, image_size=32)


@pytest.mark.parametrize("kw, match", [
    ({"year": 2015}, r"year must be one of \[2014, 2017\]"),
    ({"classes": ["car", "unicorn"]}, r"unknown COCO categories \['unicorn'\]"),
    ({"classes": "car"}, "got the string 'car'"),
    ({"classes": ["car", "car"]}, "more than once"),
    ({"classes": ["car"], "num_classes": 3}, "disagrees"),
    ({"crop": "box"}, "crop must be one of"),
    ({"blackout": "all"}, "blackout must be one of"),
    ({"image_size": -5}, "image_size must be an integer >= 8"),
    ({"image_size": 64.0}, "image_size must be an integer"),
    ({"num_classes": 0}, "num_classes must be an integer >= 1"),
    ({"min_area": -1.0}, "min_area must be >= 0"),
    ({"margin": float("nan")}, "margin must be a finite number"),
    ({"shard_size": 0}, "shard_size must be an integer >= 1"),
])
def test_bad_option_values(coco_raw, tmp_path, kw, match):
  root, _ = coco_raw
  with pytest.raises(ValueError, match=match):
    coco.prepare(**{"raw_dir": root, "data_dir": str(tmp_path), "split": "val",
                    "progress": False, **kw})


def test_corrupt_json_and_bad_paths(tmp_path):
  os.makedirs(tmp_path / "annotations")
  os.makedirs(tmp_path / "val2017")
  path = tmp_path / "annotations" / "instances_val2017.json"
  path.write_text('{"images": [], "annotations": [{"id": 1, "image_')  # truncated
  with pytest.raises(ValueError, match=f"{path} is not valid JSON"):
    coco.prepare(raw_dir=str(tmp_path), data_dir=str(tmp_path / "d"), split="val")
  path.write_text("[1, 2]")
  with pytest.raises(ValueError, match=f"{path} holds a JSON list"):
    coco.prepare(raw_dir=str(tmp_path), data_dir=str(tmp_path / "d"), split="val")
  path.write_text('{"images": [], "annotations": [{"image_id": 1}], "categories": []}')
  with pytest.raises(ValueError, match=f"{path} is malformed"):
    coco.prepare(raw_dir=str(tmp_path), data_dir=str(tmp_path / "d"), split="val")
  for raw_dir, match in ((tmp_path / "nope", "raw_dir .*nope does not exist"),
                         (path, "raw_dir .*instances_val2017.json is a file")):
    with pytest.raises(ValueError, match=match) as e:
      coco.prepare(raw_dir=str(raw_dir), data_dir=str(tmp_path / "d"), split="val")
    assert "\n" not in str(e.value)
