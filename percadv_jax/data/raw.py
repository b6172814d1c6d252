"""Shared helpers for raw image files: robust decoding, resizing, the default data directory."""

from __future__ import annotations

import os

import cv2
import numpy as np


def default_data_dir() -> str:
  """``$PERCADV_DATA_DIR``, else ``~/.cache/percadv_jax``."""
  return os.environ.get("PERCADV_DATA_DIR",
                        os.path.join(os.path.expanduser("~"), ".cache", "percadv_jax"))


def read_rgb(path: str) -> np.ndarray | None:
  """Decodes an image file fully into uint8 RGB [H, W, 3]; ``None`` if unreadable or truncated.

  Uses Pillow, which raises on truncated files (instead of returning a half-grey image).
  """
  from PIL import Image
  try:
    with Image.open(path) as im:
      im.load()
      if im.mode not in ("RGB", "L", "RGBA", "P", "I;16", "I", "CMYK", "LA"):
        return None
      return np.asarray(im.convert("RGB"), np.uint8)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
    return None


def resize_square(image: np.ndarray, size: int, *, mode: str = "stretch") -> np.ndarray:
  """Resizes uint8 [H, W, C] (or [H, W]) to ``size x size``.

  ``mode="stretch"`` resizes the whole image; ``"center_crop"`` resizes the short side to
  ``size`` and crops the centre (ImageNet style). Area interpolation when shrinking, cubic
  when enlarging.
  """
  h, w = image.shape[:2]
  if mode == "center_crop":
    f = size / min(h, w)
    nh, nw = max(size, int(round(h * f))), max(size, int(round(w * f)))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    image = cv2.resize(image, (nw, nh), interpolation=interp)
    y, x = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(image[y:y + size, x:x + size])
  if mode != "stretch":
    raise ValueError(f"unknown resize mode {mode!r}; choose 'stretch' or 'center_crop'")
  interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
  return cv2.resize(image, (size, size), interpolation=interp)


def resize_mask(mask: np.ndarray, size: int, *, mode: str = "stretch") -> np.ndarray:
  """Resizes a {0,1} mask like :func:`resize_square` (area coverage >= 0.5)."""
  m = mask.astype(np.float32)
  h, w = m.shape
  if mode == "center_crop":
    f = size / min(h, w)
    nh, nw = max(size, int(round(h * f))), max(size, int(round(w * f)))
    m = cv2.resize(m, (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    y, x = (nh - size) // 2, (nw - size) // 2
    m = m[y:y + size, x:x + size]
  else:
    m = cv2.resize(m, (size, size),
                   interpolation=cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR)
  return (m >= 0.5).astype(np.uint8)
