"""Foreground masks by graph cut: OpenCV's GrabCut seeded from a region of interest.

As in the masks paper (GTSRB-IC): foreground seeds near the image centre / inside the annotated
ROI, background seeds from the border, colour models (GrabCut's GMMs) and a min-cut/max-flow
(OpenCV's implementation; nothing hand-written). Seeds, in GrabCut's four-label mask:

* sure background (``GC_BGD``): a ring along the image border, ``border`` of the short side wide
  (at least one pixel), except where it lies inside the ROI;
* probable background (``GC_PR_BGD``): the rest outside the ROI;
* probable foreground (``GC_PR_FGD``): the ROI;
* sure foreground (``GC_FGD``): an ellipse at the ROI's centre with ``centre`` of its half-sizes.

Small images are upsampled so the short side is at least ``work_size`` pixels before the cut (GMMs
need pixels), and the result is area-resampled back. ``cv2.setRNGSeed(seed)`` before every cut
makes the GMM initialisation (k-means++) deterministic.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def roi_seed_mask(shape: tuple[int, int], roi: Sequence[float], *, border: float = 0.06,
                  centre: float = 0.3) -> np.ndarray:
  """GrabCut's initial labels for an image of ``shape`` (H, W) and ROI ``(x1, y1, x2, y2)``.

  ``x2, y2`` are inclusive pixel coordinates (the GTSRB convention). Returns uint8 [H, W] with
  values in {GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD}.
  """
  h, w = shape
  x1, y1, x2, y2 = (float(v) for v in roi)
  x1, x2 = np.clip([x1, x2], 0, w - 1)
  y1, y2 = np.clip([y1, y2], 0, h - 1)
  seeds = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
  b = max(1, int(round(border * min(h, w))))
  seeds[:b], seeds[-b:], seeds[:, :b], seeds[:, -b:] = (cv2.GC_BGD,) * 4
  xi1, yi1, xi2, yi2 = (int(round(v)) for v in (x1, y1, x2, y2))
  seeds[yi1:yi2 + 1, xi1:xi2 + 1] = cv2.GC_PR_FGD
  cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
  ax, ay = max(1.0, centre * (x2 - x1 + 1) / 2), max(1.0, centre * (y2 - y1 + 1) / 2)
  yy, xx = np.mgrid[0:h, 0:w]
  seeds[((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0] = cv2.GC_FGD
  return seeds


def grabcut_mask(image: np.ndarray, roi: Sequence[float] | None = None, *,
                 out_size: int | None = None,
                 work_size: int = 128, iterations: int = 5, border: float = 0.06,
                 centre: float = 0.3, seed: int = 0) -> tuple[np.ndarray, bool]:
  """Segments the object in ``roi`` of ``image`` with GrabCut.

  Args:
    image: uint8 RGB [H, W, 3].
    roi: ``(x1, y1, x2, y2)`` inclusive pixel box of the object; ``None`` = the central 80%.
    out_size: side of the square output mask (the image resized to ``out_size``); ``None`` =
      the image's own [H, W].
    work_size: minimum short side at which the cut runs.
    iterations: GrabCut iterations.
    border, centre: seed geometry (see the module docstring).
    seed: OpenCV RNG seed (GMM initialisation), for reproducible masks.

  Returns:
    ``(mask, ok)``: uint8 {0,1} mask ([out_size, out_size] or [H, W]) and whether GrabCut
    produced a usable foreground (``False``: it failed or returned an empty / all-image mask, and
    the mask is the ROI's inscribed ellipse instead).
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"image must be uint8 [H,W,3], got {image.dtype} {image.shape}")
  h, w = image.shape[:2]
  if roi is None:
    roi = (0.1 * w, 0.1 * h, 0.9 * w - 1, 0.9 * h - 1)
  f = max(1.0, work_size / min(h, w))
  hw, ww = int(round(h * f)), int(round(w * f))
  big = cv2.resize(image, (ww, hw), interpolation=cv2.INTER_CUBIC) if f > 1 else image
  sx, sy = ww / w, hw / h
  x1, y1, x2, y2 = (float(v) for v in roi)
  roi_big = ((x1 + 0.5) * sx - 0.5, (y1 + 0.5) * sy - 0.5, (x2 + 0.5) * sx - 0.5,
             (y2 + 0.5) * sy - 0.5)
  seeds = roi_seed_mask((hw, ww), roi_big, border=border, centre=centre)
  ok = True
  try:
    cv2.setRNGSeed(int(seed))
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    labels = seeds.copy()
    cv2.grabCut(np.ascontiguousarray(big[..., ::-1]), labels, None, bgd, fgd, int(iterations),
                cv2.GC_INIT_WITH_MASK)
    fg = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.uint8)
    fg = _clean(fg, seeds == cv2.GC_FGD).astype(np.float32)
    frac = fg.mean()
    if frac < 0.01 or frac > 0.99:
      ok = False
  except cv2.error:
    ok = False
  if not ok:  # the ROI's inscribed ellipse
    rx1, ry1, rx2, ry2 = roi_big
    yy, xx = np.mgrid[0:hw, 0:ww]
    ax, ay = max(0.5, (rx2 - rx1 + 1) / 2), max(0.5, (ry2 - ry1 + 1) / 2)
    fg = ((((xx - (rx1 + rx2) / 2) / ax) ** 2 + ((yy - (ry1 + ry2) / 2) / ay) ** 2) <= 1.0
          ).astype(np.float32)
  out_hw = (h, w) if out_size is None else (out_size, out_size)
  small = cv2.resize(fg, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_AREA)
  return (small >= 0.5).astype(np.uint8), ok


def _clean(fg: np.ndarray, core: np.ndarray) -> np.ndarray:
  """Keeps the connected components touching the sure-foreground core and fills their holes."""
  n, comp = cv2.connectedComponents(fg, connectivity=8)
  keep = np.unique(comp[core & (fg > 0)])
  keep = keep[keep > 0]
  if keep.size == 0:
    return fg
  fg = np.isin(comp, keep).astype(np.uint8)
  # Holes = background pixels not connected to the image border.
  h, w = fg.shape
  pad = np.pad(1 - fg, 1, constant_values=1)
  flood = pad.copy()
  cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2)
  holes = (flood[1:-1, 1:-1] == 1)
  return (fg.astype(bool) | holes).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
  """Intersection over union of two binary masks (1.0 when both are empty)."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  union = np.logical_or(a, b).sum()
  return float(np.logical_and(a, b).sum() / union) if union else 1.0
