"""Writes a tiny GTSRB tree in the official layout (PPM images, ';' CSVs with ROI columns)."""

import os

import cv2
import numpy as np

from percadv_jax.data import synthetic

HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"


def _sign(i, split, size, label):
  ex = synthetic.render_example(i, seed=5, split=split, image_size=size, num_classes=43)
  ys, xs = np.nonzero(ex["mask"])
  return ex["image"], ex["mask"], (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def write_gtsrb(root, *, classes=(0, 1, 2), per_class=4, num_test=6, defects=True):
  """Returns {"train": [(relpath, label, mask)], "test": [...]} of the well-formed images."""
  truth = {"train": [], "test": []}
  train = os.path.join(root, "GTSRB", "Final_Training", "Images")
  for c in classes:
    folder = os.path.join(train, f"{c:05d}")
    os.makedirs(folder)
    lines = [HEADER]
    for k in range(per_class):
      size = 40 + 8 * k
      img, mask, (x1, y1, x2, y2) = _sign(c * 10 + k, "train", size, c)
      name = f"00000_{k:05d}.ppm"
      cv2.imwrite(os.path.join(folder, name), img[..., ::-1])
      lines.append(f"{name};{size};{size};{x1};{y1};{x2};{y2};{c}\n")
      truth["train"].append((os.path.join(f"{c:05d}", name), c, mask))
    if defects and c == classes[0]:
      lines.append(f"missing_00000.ppm;40;40;5;5;34;34;{c}\n")        # row without file
      lines.append("broken_row;40;40\n")                               # malformed row
      img, _, _ = _sign(99, "train", 40, c)
      cv2.imwrite(os.path.join(folder, "trunc.ppm"), img[..., ::-1])
      with open(os.path.join(folder, "trunc.ppm"), "r+b") as f:        # truncated image
        f.truncate(os.path.getsize(os.path.join(folder, "trunc.ppm")) // 2)
      lines.append(f"trunc.ppm;40;40;5;5;34;34;{c}\n")
      cv2.imwrite(os.path.join(folder, "wrong.ppm"), img[..., ::-1])
      lines.append(f"wrong.ppm;40;40;5;5;34;34;{(c + 1) % 43}\n")     # label != folder
      cv2.imwrite(os.path.join(folder, "unlisted.ppm"), img[..., ::-1])  # no CSV row
    with open(os.path.join(folder, f"GT-{c:05d}.csv"), "w") as f:
      f.writelines(lines)
  test = os.path.join(root, "GTSRB", "Final_Test", "Images")
  os.makedirs(test)
  lines = [HEADER]
  for k in range(num_test):
    label = classes[k % len(classes)]
    size = 44 + 4 * k
    img, mask, (x1, y1, x2, y2) = _sign(k, "test", size, label)
    name = f"{k:05d}.ppm"
    cv2.imwrite(os.path.join(test, name), img[..., ::-1])
    lines.append(f"{name};{size};{size};{x1};{y1};{x2};{y2};{label}\n")
    truth["test"].append((name, label, mask))
  with open(os.path.join(root, "GT-final_test.csv"), "w") as f:  # from GTSRB_Final_Test_GT.zip
    f.writelines(lines)
  return truth
