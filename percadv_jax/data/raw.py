"""Shared helpers for raw image files: robust decoding, resizing, the default data directory,
and the path and image-size checks every dataset module uses (numbers: ``percadv_jax.checks``)."""

from __future__ import annotations

import os
import warnings
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from percadv_jax import checks


class DataPathError(FileNotFoundError, ValueError):
  """A data or raw-data path is missing or of the wrong kind.

  Both a ``FileNotFoundError`` (what it is) and a ``ValueError`` (bad input, so command-line
  programs can answer it with one line). The message is one line and names the path.
  """


def check_image_size(value: Any, *, allow_none: bool = True, minimum: int = 8) -> int | None:
  """An image side in pixels (``>= minimum``), or ``None`` when allowed."""
  return checks.check_int(value, "image_size", minimum=minimum, allow_none=allow_none)


def check_dir(path: Any, name: str, *, must_exist: bool = True) -> str:
  """A directory argument: a non-empty path that (when ``must_exist``) is an existing folder.

  A path that exists but is a file is always refused. Raises :class:`DataPathError`.
  """
  if not isinstance(path, (str, os.PathLike)) or not str(path):
    raise DataPathError(f"{name} must be a folder path, got {path!r}")
  path = os.fspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise DataPathError(f"{name} {path} is a file, not a folder")
  if must_exist and not os.path.isdir(path):
    raise DataPathError(f"{name} {path} does not exist")
  return path


def warn_skipped(what: str, counts: Mapping[str, int], files: Mapping[str, Sequence[str]],
                 *, examples: int = 3) -> str | None:
  """Warns (``UserWarning``) about inputs left out, naming a few of their files.

  Returns the message, or ``None`` when nothing named was skipped.
  """
  parts = []
  for reason in sorted(files):
    paths = list(files[reason])
    if not paths:
      continue
    n = int(counts.get(reason, len(paths)))
    shown = ", ".join(paths[:examples]) + (", ..." if n > examples else "")
    parts.append(f"{n} {reason} ({shown})")
  if not parts:
    return None
  msg = f"{what}: skipped " + "; ".join(parts)
  warnings.warn(msg, UserWarning, stacklevel=3)
  return msg


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
