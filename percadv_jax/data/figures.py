"""Example figures of a dataset with foreground masks, and the masks paper's Figures 2 and 3.

:func:`example_figure`: one row per class, ``per_class`` examples side by side, each as three
panels: the image, its mask (white = foreground) and the masked image (background set to black).

The paper's figures, one example (of its own class) per row:

* :func:`figure2` (GTSRB-IC): image | computed mask | masked image;
* :func:`figure3` (MS-COCO-IC): the original COCO photograph with the object's box (thin) and the
  square crop (thick) drawn | the cropped image (the dataset's image: the crop, other labels'
  objects blacked out, resized) | the final image (the crop times the object's mask).

    from percadv_jax.data import figures
    figures.example_figure(test, f"{workdir}/examples_gtsrb_ic.png", per_class=2, max_classes=8)
    figures.figure2(gtsrb_test, f"{workdir}/figure2_gtsrb_ic.png")
    figures.figure3(coco_val, f"{workdir}/figure3_coco_ic.png", raw_dir=RAW)
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from percadv_jax import checks
from percadv_jax.data import raw
from percadv_jax.data.stats import source_labels

PANELS = ("image", "mask", "masked image")


def choose_examples(src: Any, *, per_class: int = 2, max_classes: int | None = 8,
                    classes: Sequence[int] | None = None, seed: int = 0
                    ) -> list[tuple[int, list[int]]]:
  """Which examples to show: ``[(label, [index, ...]), ...]`` in label order.

  Args:
    src: a source.
    per_class: examples per class (fewer when a class has fewer).
    max_classes: at most this many classes (the first ones with examples, in label order);
      ``None`` = all. Ignored when ``classes`` is given.
    classes: the labels to show, in that order.
    seed: NumPy seed of the choice within each class (sorted indices).
  """
  per_class = checks.check_int(per_class, "per_class", minimum=1)
  max_classes = checks.check_int(max_classes, "max_classes", minimum=1, allow_none=True)
  labels = source_labels(src)
  n_cls = src.info.num_classes
  if classes is not None:
    wanted = [checks.check_int(c, "class label", minimum=0, maximum=n_cls - 1) for c in classes]
  else:
    wanted = [c for c in range(n_cls) if (labels == c).any()]
    if max_classes is not None:
      wanted = wanted[:max_classes]
  rng = np.random.default_rng(seed)
  out = []
  for c in wanted:
    idx = np.nonzero(labels == c)[0]
    if idx.size == 0:
      continue
    pick = np.sort(rng.choice(idx, size=min(per_class, idx.size), replace=False))
    out.append((int(c), [int(i) for i in pick]))
  if not out:
    raise ValueError(f"{src.info.name} {src.info.split}: no examples of the chosen classes")
  return out


def example_panels(src: Any, chosen: Sequence[tuple[int, Sequence[int]]]
                   ) -> list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
  """The pixels of :func:`example_figure`: per class, per example ``(image uint8 [H,W,3], mask
  uint8 [H,W] in {0,255}, masked uint8 [H,W,3])``, masked = image where mask, else 0."""
  rows = []
  for _, indices in chosen:
    row = []
    for i in indices:
      ex = src[int(i)]
      image = np.asarray(ex["image"], np.uint8)
      mask = np.asarray(ex["mask"]).astype(bool)
      row.append((image, mask.astype(np.uint8) * 255, image * mask[..., None]))
    rows.append(row)
  return rows


def example_figure(src: Any, path: str | None = None, *, per_class: int = 2,
                   max_classes: int | None = 8, classes: Sequence[int] | None = None,
                   seed: int = 0, title: str | None = None, panel_inches: float = 1.0,
                   dpi: int = 120) -> dict[str, Any]:
  """Draws (and saves as PNG via ``percadv_jax.io.save_figure``) image | mask | masked image.

  Args:
    src: a source with masks (all-ones masks are drawn as they are).
    path: where to write the PNG; ``None`` = return the figure unsaved.
    per_class, max_classes, classes, seed: which examples (see :func:`choose_examples`).
    title: figure title (default ``"<dataset> <split>: image | mask | masked image"``).
    panel_inches: side of one panel in inches.
    dpi: PNG resolution.

  Returns:
    ``{"path": path or None, "examples": [(label, [index, ...]), ...], "figure": the matplotlib
    Figure when ``path`` is None (closed and omitted once saved)}``.
  """
  from matplotlib.figure import Figure

  from percadv_jax import io as pio
  checks.check_float(panel_inches, "panel_inches", minimum=0.0, min_inclusive=False)
  chosen = choose_examples(src, per_class=per_class, max_classes=max_classes, classes=classes,
                           seed=seed)
  panels = example_panels(src, chosen)
  n_rows = len(panels)
  n_cols = 3 * max(len(r) for r in panels)
  fig = Figure(figsize=(panel_inches * n_cols + 1.6, panel_inches * n_rows + 0.6))
  axes = fig.subplots(n_rows, n_cols, squeeze=False)
  names = src.info.class_names
  for r, ((label, indices), row) in enumerate(zip(chosen, panels)):
    for k in range(n_cols):
      ax = axes[r][k]
      ax.set_xticks([])
      ax.set_yticks([])
      e, p = divmod(k, 3)
      if e >= len(row):
        ax.axis("off")
        continue
      arr = row[e][p]
      ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255,
                interpolation="nearest")
      if r == 0:
        ax.set_title(PANELS[p], fontsize=7)
      if k == 0:
        ax.set_ylabel(f"{label}: {names[label]}"[:40], fontsize=7, rotation=0, ha="right",
                      va="center")
  fig.suptitle(title or f"{src.info.name} {src.info.split}: image | mask | masked image",
               fontsize=9)
  out: dict[str, Any] = {"path": path, "examples": chosen}
  if path is None:
    out["figure"] = fig
  else:
    pio.save_figure(fig, path, dpi=dpi)
  return out


FIGURE2_PANELS = ("image", "computed mask", "masked image")
FIGURE3_PANELS = ("original image", "cropped image", "final image")
BOX_COLOUR = (255, 255, 0)  # the object's box and the crop square in Figure 3 (yellow)


def figure2_panels(src: Any, indices: Sequence[int]
                   ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Figure 2's pixels, per example ``(image uint8 [H,W,3], mask uint8 [H,W] in {0,255}, masked
  uint8 [H,W,3])`` (masked = image where the mask is 1, else 0)."""
  return example_panels(src, [(0, indices)])[0]


def _coco_paths(src: Any, raw_dir: str) -> tuple[str, str]:
  """``src``'s annotation file and images folder under ``raw_dir``."""
  from percadv_jax.data import coco
  extra = src.info.extra
  if src.info.name != coco.NAME or "year" not in extra:
    raise ValueError(f"Figure 3 draws prepared MS-COCO-IC crops, got {src.info.name}")
  if getattr(src, "ids", None) is None or len(src.ids) != len(src):
    raise ValueError("Figure 3 needs the cache's ids (<image id>:<annotation id>)")
  return coco._paths(raw_dir, src.info.split, int(extra["year"]))


def figure3_panels(src: Any, indices: Sequence[int], *, raw_dir: str, index: Any = None
                   ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Figure 3's pixels, per example ``(original uint8 [h,w,3] with the box and the crop square
  drawn in BOX_COLOUR, cropped image uint8 [S,S,3] = the dataset's image, final image uint8
  [S,S,3] = cropped image times the mask)``.

  Args:
    src: a prepared MS-COCO-IC source (its ``ids`` are ``"<image id>:<annotation id>"``).
    indices: the examples.
    raw_dir: the raw COCO folder the source was prepared from.
    index: a pycocotools index of the split's annotation file (read from ``raw_dir`` if None).

  Raises:
    ValueError: not a prepared MS-COCO-IC source; an id not in the annotation file.
    percadv_jax.data.DataPathError: the raw files are missing.
  """
  import cv2

  from percadv_jax.data import coco
  ann_path, img_dir = _coco_paths(src, raw_dir)
  index = coco._load_coco(ann_path) if index is None else index
  margin = float(src.info.extra["margin"])
  out = []
  for i in indices:
    image_id, ann_id = (int(v) for v in str(src.ids[int(i)]).split(":"))
    if image_id not in index.imgs or ann_id not in index.anns:
      raise ValueError(f"example {i} ({src.ids[int(i)]}) is not in {raw_dir}'s annotations")
    path = os.path.join(img_dir, index.imgs[image_id]["file_name"])
    original = raw.read_rgb(path)
    if original is None:
      raise raw.DataPathError(f"cannot read the COCO image {path}")
    bbox = index.anns[ann_id]["bbox"]
    x0, y0, side = coco.crop_square(bbox, margin)
    t = max(1, round(min(original.shape[:2]) / 100))
    drawn = np.array(original, np.uint8, copy=True)
    bx, by, bw, bh = bbox
    cv2.rectangle(drawn, (int(round(bx)), int(round(by))),
                  (int(round(bx + bw)) - 1, int(round(by + bh)) - 1), BOX_COLOUR, t)
    cv2.rectangle(drawn, (x0, y0), (x0 + side - 1, y0 + side - 1), BOX_COLOUR, 2 * t)
    ex = src[int(i)]
    crop = np.asarray(ex["image"], np.uint8)
    mask = np.asarray(ex["mask"]).astype(bool)
    out.append((drawn, crop, crop * mask[..., None]))
  return out


def _panel_figure(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str],
                  titles: Sequence[str], title: str, panel_inches: float):
  from matplotlib.figure import Figure
  fig = Figure(figsize=(panel_inches * len(titles) + 1.6, panel_inches * len(rows) + 0.6))
  axes = fig.subplots(len(rows), len(titles), squeeze=False)
  for r, (panels, label) in enumerate(zip(rows, row_labels)):
    for k, arr in enumerate(panels):
      ax = axes[r][k]
      ax.set_xticks([])
      ax.set_yticks([])
      ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255,
                interpolation="nearest")
      if r == 0:
        ax.set_title(titles[k], fontsize=8)
      if k == 0:
        ax.set_ylabel(label[:40], fontsize=7, rotation=0, ha="right", va="center")
  fig.suptitle(title, fontsize=9)
  return fig


def _paper_figure(src: Any, path: str, panels_fn, titles, title, *, examples: int, seed: int,
                  panel_inches: float, dpi: int) -> dict[str, Any]:
  from percadv_jax import io as pio
  checks.check_int(examples, "examples", minimum=1)
  checks.check_float(panel_inches, "panel_inches", minimum=0.0, min_inclusive=False)
  chosen = choose_examples(src, per_class=1, max_classes=examples, seed=seed)
  indices = [idx[0] for _, idx in chosen]
  rows = panels_fn(indices)
  names = src.info.class_names
  fig = _panel_figure(rows, [f"{c}: {names[c]}" for c, _ in chosen], titles, title,
                      panel_inches)
  pio.save_figure(fig, path, dpi=dpi)
  return {"path": path, "examples": indices}


def figure2(src: Any, path: str, *, examples: int = 3, seed: int = 0,
            panel_inches: float = 1.4, dpi: int = 120) -> dict[str, Any]:
  """The masks paper's Figure 2 of a GTSRB-IC source: image | computed mask | masked image,
  ``examples`` rows (the first classes with examples, one each; ``seed`` picks within a class).

  Returns:
    ``{"path", "examples": [index, ...]}``.
  """
  return _paper_figure(src, path, lambda idx: figure2_panels(src, idx), FIGURE2_PANELS,
                       f"{src.info.name} {src.info.split}: image | computed mask | masked image",
                       examples=examples, seed=seed, panel_inches=panel_inches, dpi=dpi)


def figure3(src: Any, path: str, *, raw_dir: str, examples: int = 3, seed: int = 0,
            panel_inches: float = 1.8, dpi: int = 120) -> dict[str, Any]:
  """The masks paper's Figure 3 of a prepared MS-COCO-IC source: original image (object box and
  crop square drawn) | cropped image | final image, ``examples`` rows (see :func:`figure2`).

  Returns:
    ``{"path", "examples": [index, ...]}``.
  """
  return _paper_figure(src, path, lambda idx: figure3_panels(src, idx, raw_dir=raw_dir),
                       FIGURE3_PANELS,
                       f"{src.info.name} {src.info.split}: original image | cropped image | "
                       "final image", examples=examples, seed=seed, panel_inches=panel_inches,
                       dpi=dpi)
