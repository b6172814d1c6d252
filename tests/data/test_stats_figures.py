"""Table 1 class counts, foreground-pixel shares and example figures, checked exactly."""

import cv2
import numpy as np
import pytest

from percadv_jax import io as pio
from percadv_jax.data import figures, stats
from percadv_jax.data.source import ArraySource, DatasetInfo


def _toy(split, labels, fg_pixels, size=10, names=("stop", "yield", "priority")):
  """Source with solid-colour images per class and masks of exactly ``fg_pixels`` ones."""
  n = len(labels)
  images = np.zeros((n, size, size, 3), np.uint8)
  masks = np.zeros((n, size, size), np.uint8)
  for i, (y, k) in enumerate(zip(labels, fg_pixels)):
    images[i] = ((200, 20, 20), (20, 200, 20), (20, 20, 200))[y]
    masks[i].reshape(-1)[:k] = 1
  info = DatasetInfo(name="toy", split=split, num_classes=len(names), class_names=names,
                     image_size=size, num_examples=n, has_masks=True, mask_source="rendered",
                     source="test")
  return ArraySource(images, masks, np.asarray(labels), info)


class _Iterated:
  """The same source without labels/masks arrays (the path TFDS and folders take)."""

  def __init__(self, src):
    self.src, self.info = src, src.info

  def __len__(self):
    return len(self.src)

  def __getitem__(self, i):
    return self.src[i]


def test_class_counts_table1():
  train = _toy("train", [0, 0, 1, 0], [10, 20, 30, 40])
  test = _toy("test", [1, 1], [50, 100])
  rows = stats.class_counts({"train": train, "test": _Iterated(test)})
  assert rows == [
      {"label": 0, "class": "stop", "train": 3, "test": 0, "total": 3},
      {"label": 1, "class": "yield", "train": 1, "test": 2, "total": 3},
      {"label": 2, "class": "priority", "train": 0, "test": 0, "total": 0},
      {"label": "", "class": "total", "train": 4, "test": 2, "total": 6}]
  other = _toy("test", [0], [1], names=("a", "b", "c"))
  with pytest.raises(ValueError, match="one class list"):
    stats.class_counts({"train": train, "test": other})
  with pytest.raises(ValueError, match="non-empty mapping"):
    stats.class_counts({})


def test_foreground_share():
  train = _toy("train", [0, 0, 1, 0], [10, 20, 30, 40])  # shares 0.1 .. 0.4 of 100 pixels
  f = np.array([0.1, 0.2, 0.3, 0.4])
  for src in (train, _Iterated(train)):
    got = stats.foreground_share(src, per_class=True)
    assert got["examples"] == 4 and got["dataset"] == "toy" and got["has_masks"]
    np.testing.assert_allclose([got["mean"], got["std"], got["min"], got["median"], got["max"]],
                               [f.mean(), f.std(), 0.1, 0.25, 0.4])
    pc = got["per_class"]
    np.testing.assert_allclose(pc[0]["mean"], np.mean([0.1, 0.2, 0.4]))
    assert pc[1]["examples"] == 1 and pc[2]["mean"] is None
  test = _toy("test", [1, 1], [50, 100])
  rows = stats.foreground_share_rows({"train": train, "test": test})
  assert [r["split"] for r in rows] == ["train", "test", "all"]
  np.testing.assert_allclose(rows[2]["mean"], np.mean([0.1, 0.2, 0.3, 0.4, 0.5, 1.0]))
  assert rows[2]["examples"] == 6 and rows[2]["max"] == 1.0
  with pytest.raises(ValueError, match="empty"):
    stats.foreground_share(_toy("x", [], []))


def test_example_figure(tmp_path):
  src = _toy("test", [0, 1, 1, 1, 0, 2], [50, 60, 70, 80, 90, 100])
  chosen = figures.choose_examples(src, per_class=2, seed=0)
  assert [c for c, _ in chosen] == [0, 1, 2]
  assert chosen[0][1] == [0, 4] and len(chosen[1][1]) == 2 and chosen[2][1] == [5]
  assert all(src.labels[i] == c for c, idx in chosen for i in idx)
  assert figures.choose_examples(src, per_class=2, seed=0) == chosen  # deterministic
  assert [c for c, _ in figures.choose_examples(src, max_classes=2)] == [0, 1]
  assert [c for c, _ in figures.choose_examples(src, classes=[2, 0])] == [2, 0]
  panels = figures.example_panels(src, chosen)
  for (c, idx), row in zip(chosen, panels):
    for i, (image, mask, masked) in zip(idx, row):
      np.testing.assert_array_equal(image, src.images[i])
      np.testing.assert_array_equal(mask, src.masks[i] * 255)
      np.testing.assert_array_equal(masked, src.images[i] * src.masks[i][..., None])
  path = str(tmp_path / "fig" / "examples.png")
  out = figures.example_figure(src, path, per_class=2)
  assert out["path"] == path and out["examples"] == chosen and "figure" not in out
  png = cv2.imread(path)[..., ::-1].astype(int)
  assert png.shape[0] > 100 and png.shape[1] > 200
  # Each class's colour is drawn (red, green and blue panels).
  for colour in ((200, 20, 20), (20, 200, 20), (20, 20, 200)):
    assert (np.abs(png - colour).sum(-1) < 30).sum() > 50, colour
  fig = figures.example_figure(src, None, per_class=1)["figure"]
  assert len(fig.axes) == 3 * 3
  pio.save_figure(fig, str(tmp_path / "again.png"))
  with pytest.raises(ValueError, match="per_class must be an integer >= 1"):
    figures.example_figure(src, path, per_class=0)
  with pytest.raises(ValueError, match=r"class label must be an integer in \[0, 2\]"):
    figures.choose_examples(src, classes=[3])


def test_write_dataset_artefacts(tmp_path):
  from percadv_jax.data import report
  train = _toy("train", [0, 0, 1, 0], [10, 20, 30, 40])
  test = _toy("test", [1, 2], [50, 100])
  out = report.write_dataset_artefacts({"train": train, "test": test}, str(tmp_path / "d"))
  md = open(out["files"]["table1"]).read()
  assert md.splitlines()[0] == "| label | class | train | test | total |"
  assert "| 1 | yield | 1 | 1 | 2 |" in md and "|  | total | 4 | 2 | 6 |" in md
  csv_text = open(str(tmp_path / "d" / "foreground_share.csv")).read().splitlines()
  assert csv_text[0] == "dataset,split,examples,mean,std,min,median,max,mask_source"
  assert csv_text[2].startswith("toy,test,2,0.75,0.25,0.5,0.75,1.0,rendered")
  assert out["files"]["figure"].endswith("examples_toy.png")
  assert cv2.imread(out["files"]["figure"]) is not None
  with pytest.raises(ValueError, match="figure_split 'val'"):
    report.write_dataset_artefacts({"train": train}, str(tmp_path / "e"), figure_split="val")


def test_table1_subsets_and_reference():
  train = _toy("train", [0, 0, 1, 0, 2], [1] * 5)
  test = _toy("test", [1, 1], [1, 1])
  rows, columns = stats.table1(
      {"train": train, "test": test}, subsets={"train": [0, 2, 4]},
      reference={"train": {"name": "paper train", "per_class": {"stop": 10, "yield": 1},
                           "total": 20},
                 "test": {"name": "official test", "per_class": {}, "total": 5}})
  assert columns == ["label", "class", "train", "test", "total", "train (3 drawn)",
                     "paper train", "train (3 drawn) - paper train", "official test",
                     "test - official test"]
  # Drawn: examples 0 (stop), 2 (yield), 4 (priority).
  assert [r["train (3 drawn)"] for r in rows] == [1, 1, 1, 3]
  assert [r["paper train"] for r in rows] == [10, 1, "", 20]
  assert [r["train (3 drawn) - paper train"] for r in rows] == [-9, 0, "", -17]
  assert [r["official test"] for r in rows] == ["", "", "", 5]
  assert [r["test - official test"] for r in rows] == ["", "", "", -3]
  with pytest.raises(ValueError, match="not among"):
    stats.table1({"train": train}, reference={"val": {"name": "x", "total": 1}})
  with pytest.raises(ValueError, match="outside"):
    stats.table1({"train": train}, subsets={"train": [5]})


def _png_shape(path):
  png = cv2.imread(path)
  assert png is not None, path
  return png.shape


def test_figure2_panels_and_png(tmp_path):
  src = _toy("test", [0, 1, 2, 1], [30, 40, 50, 60])
  panels = figures.figure2_panels(src, [0, 3])
  for i, (image, mask, masked) in zip([0, 3], panels):
    np.testing.assert_array_equal(image, src.images[i])
    assert set(np.unique(mask)) == {0, 255}  # the computed mask, not the image
    np.testing.assert_array_equal(masked, image * (mask[..., None] > 0))
    assert (masked == 0).all(-1).sum() == image.shape[0] * image.shape[1] - mask.sum() // 255
  out = figures.figure2(src, str(tmp_path / "f2.png"), examples=3)
  assert src.labels[out["examples"]].tolist() == [0, 1, 2]  # one of each of the first classes
  h, w, c = _png_shape(out["path"])
  assert c == 3 and w > h > 100  # three panels side by side, three rows


def test_figure3_panels_and_png(tmp_path):
  from percadv_jax.data import cache, coco
  from tests.data.coco_fixture import H, W, write_coco
  raw = str(tmp_path / "raw")
  truth = write_coco(raw, year=2014, splits=("val",), per_class=1)
  src = cache.load_cached(coco.prepare(
      raw_dir=raw, data_dir=str(tmp_path / "c"), split="val", year=2014,
      classes=coco.PAPER_CLASSES, crop="object", image_size=32, progress=False))
  panels = figures.figure3_panels(src, [0, 1], raw_dir=raw)
  boxes = {t["ann_id"]: t["bbox"] for t in truth["val"]}
  for i, (original, crop, final) in zip([0, 1], panels):
    assert original.shape == (H, W, 3) and crop.shape == final.shape == (32, 32, 3)
    np.testing.assert_array_equal(crop, src.images[i])  # the dataset's image
    np.testing.assert_array_equal(final, crop * src.masks[i][..., None])
    assert (final == 0).all(-1).sum() > (crop == 0).all(-1).sum()  # the background is gone
    # The box and the crop square are drawn on the original, in BOX_COLOUR.
    x, y, w, h = boxes[int(str(src.ids[i]).split(":")[1])]
    x0, y0, side = coco.crop_square((x, y, w, h), 0.1)
    assert tuple(original[y, x + w // 2]) == figures.BOX_COLOUR
    assert tuple(original[max(0, y0), x0 + side // 2]) == figures.BOX_COLOUR
    assert not (original == figures.BOX_COLOUR).all(-1)[y + h // 2, x + w // 2]  # inside: not
  out = figures.figure3(src, str(tmp_path / "f3.png"), raw_dir=raw, examples=2)
  assert len(out["examples"]) == 2
  h, w, c = _png_shape(out["path"])
  assert c == 3 and w > 300 and h > 150
  with pytest.raises(ValueError, match="MS-COCO-IC"):
    figures.figure3_panels(_toy("test", [0], [1]), [0], raw_dir=raw)
