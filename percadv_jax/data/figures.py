"""Example figures of a dataset with foreground masks (the masks paper's Figures 2-3).

One row per class, ``per_class`` examples side by side, each as three panels: the image, its
mask (white = foreground) and the masked image (background set to black).

    from percadv_jax.data import figures
    figures.example_figure(test, f"{workdir}/examples_gtsrb_ic.png", per_class=2, max_classes=8)
"""

from __future__ import annotations

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
