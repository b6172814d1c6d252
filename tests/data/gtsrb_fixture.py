"""Writes a tiny GTSRB tree in the official layout (PPM images, ';' CSVs with ROI columns)."""

import os

import cv2
import numpy as np

from percadv_jax.data import synthetic

HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"


def _sign(i, split, size, label, frame=True):
  """A synthetic sign of class ``label``; with ``frame``, cropped like GTSRB: the sign's box plus
  a 10% margin (at least 5 px) on every side, so the sign sits in the middle."""
  ex = synthetic.render_example(label + 43 * i, seed=5, split=split, image_size=size,
                                num_classes=43)
  img, mask = ex["image"], ex["mask"]
  ys, xs = np.nonzero(mask)
  x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
  if frame:
    mx = max(5, int(round(0.1 * (x2 - x1 + 1))))
    my = max(5, int(round(0.1 * (y2 - y1 + 1))))
    X1, Y1 = max(0, x1 - mx), max(0, y1 - my)
    X2, Y2 = min(size, x2 + mx + 1), min(size, y2 + my + 1)
    img, mask = img[Y1:Y2, X1:X2], mask[Y1:Y2, X1:X2]
    x1, x2, y1, y2 = x1 - X1, x2 - X1, y1 - Y1, y2 - Y1
  return np.ascontiguousarray(img), np.ascontiguousarray(mask), (x1, y1, x2, y2)


def write_gtsrb(root, *, classes=(0, 1, 2), per_class=4, num_test=6, defects=True, frame=True,
                min_size=40):
  """Writes ``root/GTSRB/Final_Training/Images/000NN/*.ppm + GT-000NN.csv``,
  ``root/GTSRB/Final_Test/Images/*.ppm`` and ``root/GT-final_test.csv``.

  Args:
    root: where to write.
    classes: class ids with training folders (e.g. ``range(43)``); test labels cycle over them.
    per_class: training images per class (rendered at ``min_size + 8 k`` px, then framed).
    num_test: test images.
    defects: in the first class, add a CSV row without file, a malformed row, a truncated PPM,
      a row whose ClassId differs from its folder and an image without a row.
    frame: crop every sign like GTSRB (box + 10% / >= 5 px margin); else the whole render.
    min_size: side of the smallest render.

  Returns:
    ``{"train": [(relpath, label, mask)], "test": [(name, label, mask)], "roi": {relpath or
    name: (x1, y1, x2, y2)}}`` of the well-formed images (masks at the files' own size).
  """
  truth = {"train": [], "test": [], "roi": {}}
  train = os.path.join(root, "GTSRB", "Final_Training", "Images")
  for c in classes:
    folder = os.path.join(train, f"{c:05d}")
    os.makedirs(folder)
    lines = [HEADER]
    for k in range(per_class):
      img, mask, roi = _sign(k, "train", min_size + 8 * k, c, frame)
      name = f"00000_{k:05d}.ppm"
      cv2.imwrite(os.path.join(folder, name), img[..., ::-1])
      h, w = mask.shape
      lines.append(f"{name};{w};{h};{roi[0]};{roi[1]};{roi[2]};{roi[3]};{c}\n")
      rel = os.path.join(f"{c:05d}", name)
      truth["train"].append((rel, c, mask))
      truth["roi"][rel] = roi
    if defects and c == classes[0]:
      lines.append(f"missing_00000.ppm;40;40;5;5;34;34;{c}\n")        # row without file
      lines.append("broken_row;40;40\n")                               # malformed row
      img, _, _ = _sign(99, "train", 40, c, frame)
      cv2.imwrite(os.path.join(folder, "trunc.ppm"), img[..., ::-1])
      with open(os.path.join(folder, "trunc.ppm"), "r+b") as f:        # truncated image
        f.truncate(os.path.getsize(os.path.join(folder, "trunc.ppm")) // 2)
      h, w = img.shape[:2]
      lines.append(f"trunc.ppm;{w};{h};5;5;{w - 6};{h - 6};{c}\n")
      cv2.imwrite(os.path.join(folder, "wrong.ppm"), img[..., ::-1])
      lines.append(f"wrong.ppm;{w};{h};5;5;{w - 6};{h - 6};{(c + 1) % 43}\n")  # label != folder
      cv2.imwrite(os.path.join(folder, "unlisted.ppm"), img[..., ::-1])  # no CSV row
    with open(os.path.join(folder, f"GT-{c:05d}.csv"), "w") as f:
      f.writelines(lines)
  test = os.path.join(root, "GTSRB", "Final_Test", "Images")
  os.makedirs(test)
  lines = [HEADER]
  classes = list(classes)
  for k in range(num_test):
    label = classes[k % len(classes)]
    img, mask, roi = _sign(100 + k, "test", min_size + 4 + 4 * (k % 8), label, frame)
    name = f"{k:05d}.ppm"
    cv2.imwrite(os.path.join(test, name), img[..., ::-1])
    h, w = mask.shape
    lines.append(f"{name};{w};{h};{roi[0]};{roi[1]};{roi[2]};{roi[3]};{label}\n")
    truth["test"].append((name, label, mask))
    truth["roi"][name] = roi
  with open(os.path.join(root, "GT-final_test.csv"), "w") as f:  # from GTSRB_Final_Test_GT.zip
    f.writelines(lines)
  return truth
