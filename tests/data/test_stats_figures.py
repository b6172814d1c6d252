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
