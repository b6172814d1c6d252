"""Synthetic traffic signs: the embedded default dataset (no download).

Every example is a traffic-sign-like object (class = shape x colour scheme x inner glyph; up to 43
classes, like GTSRB) drawn on a random crop of a real photograph shipped inside scikit-image
(``skimage.data``). Train and test draw their backgrounds from *disjoint* photographs, and the
background never depends on the label.

Rendering, per example ``i`` (all randomness from ``SeedSequence([seed, split, i])``, so example
``i`` does not depend on how many examples are generated):

1. A per-class RGBA template (premultiplied colour, alpha = coverage of the sign's outline) is
   drawn once at 4x and area-downsampled: anti-aliased edges.
2. A random homography (scale 55-90% of the image side, offset, rotation +-15 deg, perspective
   corner jitter) warps the template with ``cv2.warpPerspective`` onto a canvas ``S`` times the
   output size (``S = 4`` up to 64 px), which is area-downsampled to the output size. The alpha
   channel then holds the exact fraction of each output pixel covered by the sign.
3. Lighting: gain 0.45-1.25, a linear shading gradient and a colour cast on the sign; gain and
   cast on the background crop. The sign is composited over the background, blurred (Gaussian,
   sigma 0-1 px at 32 px, scaled with the size) and given Gaussian noise (std 0-0.04), then
   rounded to uint8.
4. ``mask = coverage >= 0.5``: the sign's pixels at output resolution, from the same geometry.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from typing import Any

import cv2
import numpy as np

from percadv_jax import checks, io as pio
from percadv_jax.data.source import ArraySource, DatasetInfo

VERSION = 2  # bump when rendering changes: part of every cache key

_RED = (0.80, 0.08, 0.10)
_WHITE = (0.95, 0.95, 0.93)
_BLACK = (0.08, 0.08, 0.08)
_BLUE = (0.10, 0.30, 0.75)
_YELLOW = (0.96, 0.76, 0.10)
_GREY = (0.30, 0.30, 0.30)

# scheme -> (outer colour, inner colour, glyph colour, inner scale)
SCHEMES = {
    "red_ring": (_RED, _WHITE, _BLACK, 0.72),
    "red_fill": (_WHITE, _RED, _WHITE, 0.88),
    "blue_fill": (_WHITE, _BLUE, _WHITE, 0.88),
    "yellow_fill": (_WHITE, _YELLOW, _BLACK, 0.82),
    "white_black": (_GREY, _WHITE, _BLACK, 0.86),
}

# (shape, scheme, glyph). The first ten (the default) differ pairwise by shape or colour scheme
# (glyphs add variety); the remaining 33 add glyph-only differences (30/50, arrow up/right) that
# blur and noise make hard to see at 32 px.
CLASSES: tuple[tuple[str, str, str], ...] = (
    ("circle", "red_ring", "none"), ("triangle_up", "red_ring", "!"),
    ("triangle_down", "red_ring", "none"), ("octagon", "red_fill", "STOP"),
    ("circle", "red_fill", "bar_h"), ("circle", "blue_fill", "arrow_up"),
    ("diamond", "yellow_fill", "none"), ("circle", "white_black", "slash"),
    ("square", "blue_fill", "P"), ("circle", "yellow_fill", "arrow_up"),
    ("circle", "red_ring", "30"), ("circle", "red_ring", "50"),
    ("circle", "blue_fill", "arrow_right"), ("circle", "red_ring", "80"),
    ("triangle_up", "red_ring", "arrow_left"), ("triangle_up", "red_ring", "arrow_right"),
    ("triangle_up", "red_ring", "plus"), ("circle", "blue_fill", "arrow_left"),
    ("circle", "red_ring", "60"), ("circle", "red_ring", "70"),
    ("circle", "red_ring", "100"), ("circle", "red_ring", "120"),
    ("square", "blue_fill", "arrow_up"), ("circle", "blue_fill", "ring"),
    ("triangle_up", "red_ring", "chevrons"), ("circle", "red_ring", "20"),
    ("triangle_up", "red_ring", "bar_v"), ("triangle_up", "red_ring", "ring"),
    ("triangle_up", "red_ring", "dot"), ("circle", "blue_fill", "dot"),
    ("circle", "blue_fill", "arrow_diag_right"), ("circle", "blue_fill", "arrow_diag_left"),
    ("circle", "red_ring", "slash"), ("circle", "red_ring", "bar_v"),
    ("circle", "red_ring", "plus"), ("square", "blue_fill", "none"),
    ("square", "yellow_fill", "!"), ("diamond", "yellow_fill", "dot"),
    ("octagon", "red_fill", "bar_h"), ("triangle_down", "red_ring", "!"),
    ("square", "white_black", "slash"), ("circle", "white_black", "none"),
    ("triangle_up", "yellow_fill", "!"),
)
MAX_CLASSES = len(CLASSES)
DEFAULT_NUM_CLASSES = 10
DEFAULT_IMAGE_SIZE = 32
DEFAULT_NUM_EXAMPLES = {"train": 10000, "test": 2000}

# Disjoint background photographs (all ship inside scikit-image; no download).
BACKGROUNDS = {
    "train": ("astronaut", "coffee", "motorcycle", "immunohistochemistry", "hubble_deep_field",
              "brick", "grass", "camera", "moon"),
    "test": ("chelsea", "rocket", "retina", "gravel", "coins", "clock"),
}
SPLITS = {"train": 0, "test": 1}


def class_name(c: int) -> str:
  shape, scheme, glyph = CLASSES[c]
  return f"{shape}/{scheme}/{glyph}"


# ----------------------------------------------------------------------------- geometry

def shape_polygon(shape: str) -> np.ndarray:
  """The outline of ``shape`` in canonical coordinates ([-1,1]^2, y down): float64 [V,2]."""
  if shape == "circle":
    t = np.linspace(0, 2 * np.pi, 128, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1)
  h = math.sqrt(3) / 2
  if shape == "triangle_up":
    return np.array([[0.0, -h], [1.0, h], [-1.0, h]])
  if shape == "triangle_down":
    return np.array([[-1.0, -h], [1.0, -h], [0.0, h]])
  if shape == "octagon":
    t = np.pi / 8 + np.arange(8) * np.pi / 4
    return np.stack([np.cos(t), np.sin(t)], 1)
  if shape == "diamond":
    return np.array([[0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
  if shape == "square":
    return np.array([[-0.9, -0.9], [0.9, -0.9], [0.9, 0.9], [-0.9, 0.9]])
  raise ValueError(f"unknown shape {shape!r}")


def _arrow(direction: float) -> np.ndarray:
  """An arrow pointing at angle ``direction`` (radians, 0 = up), unit size: [V,2]."""
  pts = np.array([[0.0, -1.0], [0.6, -0.2], [0.22, -0.2], [0.22, 1.0], [-0.22, 1.0],
                  [-0.22, -0.2], [-0.6, -0.2]])
  c, s = math.cos(direction), math.sin(direction)
  return pts @ np.array([[c, s], [-s, c]])


def _draw_glyph(canvas: np.ndarray, glyph: str, colour: tuple, centre: np.ndarray, radius: float,
                px: float) -> None:
  """Draws ``glyph`` into the float32 RGB ``canvas`` (pixel units; ``px`` pixels per unit)."""
  def to_px(p):
    return np.round((centre + np.asarray(p) * radius) * px * 16).astype(np.int32)

  def poly(p):
    cv2.fillPoly(canvas, [to_px(p)], colour, lineType=cv2.LINE_8, shift=4)

  thick = max(1, int(round(0.22 * radius * px)))
  if glyph == "none":
    return
  if glyph in ("bar_h", "bar_v"):
    p = np.array([[-0.8, -0.2], [0.8, -0.2], [0.8, 0.2], [-0.8, 0.2]])
    poly(p if glyph == "bar_h" else p[:, ::-1])
  elif glyph == "plus":
    poly(np.array([[-0.75, -0.16], [0.75, -0.16], [0.75, 0.16], [-0.75, 0.16]]))
    poly(np.array([[-0.16, -0.75], [0.16, -0.75], [0.16, 0.75], [-0.16, 0.75]]))
  elif glyph == "slash":
    d = np.array([[-0.75, 0.55], [0.55, -0.75], [0.75, -0.55], [-0.55, 0.75]])
    poly(d)
  elif glyph == "dot":
    cv2.circle(canvas, tuple(to_px([0, 0])), int(0.35 * radius * px * 16), colour, -1,
               cv2.LINE_8, 4)
  elif glyph == "ring":
    cv2.circle(canvas, tuple(to_px([0, 0])), int(0.6 * radius * px * 16), colour, thick,
               cv2.LINE_8, 4)
  elif glyph == "chevrons":
    for dy in (-0.35, 0.3):
      poly(np.array([[-0.7, dy + 0.25], [0.0, dy - 0.3], [0.7, dy + 0.25], [0.7, dy + 0.55],
                     [0.0, dy], [-0.7, dy + 0.55]]))
  elif glyph.startswith("arrow_"):
    angle = {"arrow_up": 0.0, "arrow_right": math.pi / 2, "arrow_left": -math.pi / 2,
             "arrow_diag_right": 3 * math.pi / 4, "arrow_diag_left": -3 * math.pi / 4}[glyph]
    poly(_arrow(angle) * 0.8)
  else:  # text
    font = cv2.FONT_HERSHEY_SIMPLEX
    width = 1.5 * radius * px if len(glyph) > 1 else 0.9 * radius * px
    (tw, th), _ = cv2.getTextSize(glyph, font, 1.0, 1)
    scale = min(width / tw, 1.1 * radius * px / th)
    t = max(1, int(round(scale * 2.2)))
    (tw, th), _ = cv2.getTextSize(glyph, font, scale, t)
    org = (int(round(centre[0] * px - tw / 2)), int(round(centre[1] * px + th / 2)))
    ink = np.zeros(canvas.shape[:2], np.uint8)  # putText draws on uint8 images only
    cv2.putText(ink, glyph, org, font, scale, 255, t, cv2.LINE_8)
    canvas[ink > 0] = colour


@functools.lru_cache(maxsize=None)
def template(c: int, size: int) -> np.ndarray:
  """The RGBA template of class ``c``: float32 ``[size,size,4]``, colour premultiplied by alpha.

  The canonical square [-1,1]^2 spans the template's pixel area [0, size]^2. Drawn at 4x and
  area-downsampled, so edges are anti-aliased and alpha is the outline's coverage per pixel.
  """
  shape, scheme, glyph = CLASSES[c]
  outer, inner, glyph_colour, inner_scale = SCHEMES[scheme]
  big = 4 * size
  px = big / 2.0  # pixels per canonical unit, origin at the canvas' top-left corner

  def to_px(p):  # canonical -> fixed-point pixel-area coordinates
    return np.round(((np.asarray(p) + 1.0) * px) * 16).astype(np.int32)

  poly = shape_polygon(shape)
  centroid = poly.mean(0)
  rgb = np.zeros((big, big, 3), np.float32)
  alpha = np.zeros((big, big), np.float32)
  cv2.fillPoly(alpha, [to_px(poly)], 1.0, cv2.LINE_8, 4)
  cv2.fillPoly(rgb, [to_px(poly)], outer, cv2.LINE_8, 4)
  inner_poly = centroid + (poly - centroid) * inner_scale
  cv2.fillPoly(rgb, [to_px(inner_poly)], inner, cv2.LINE_8, 4)
  radius = inner_scale * (0.62 if shape.startswith("triangle") else 0.85)
  _draw_glyph(rgb, glyph, glyph_colour, centroid + 1.0, radius, px)
  rgba = np.concatenate([rgb * alpha[..., None], alpha[..., None]], -1)
  return cv2.resize(rgba, (size, size), interpolation=cv2.INTER_AREA)


def _supersample(image_size: int) -> tuple[int, int]:
  s = 4 if image_size <= 64 else 2 if image_size <= 128 else 1
  big = image_size * s
  t = 128 if big <= 160 else 256 if big <= 320 else 512
  return s, t


# ----------------------------------------------------------------------------- backgrounds

@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
  import skimage.data
  img = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(
      skimage.data, name)()
  img = np.asarray(img)
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, -1)
  img = img[..., :3].astype(np.float32) / 255.0
  img.setflags(write=False)
  return img


@functools.lru_cache(maxsize=None)
def _pyramid(name: str) -> tuple[np.ndarray, ...]:
  """The photograph at full, half, quarter ... resolution (area-averaged), read-only."""
  levels = [_photo(name)]
  while min(levels[-1].shape[:2]) >= 32:
    h, w = levels[-1].shape[:2]
    nxt = cv2.resize(levels[-1], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    nxt.setflags(write=False)
    levels.append(nxt)
  return tuple(levels)


def _background(rng: np.random.Generator, split: str, size: int) -> tuple[np.ndarray, str]:
  name = BACKGROUNDS[split][rng.integers(len(BACKGROUNDS[split]))]
  levels = _pyramid(name)
  h, w = levels[0].shape[:2]
  lo = min(min(h, w), max(48, size))
  side = int(rng.integers(lo, min(h, w) + 1))
  y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
  flip = rng.random() < 0.5
  # Crop from the coarsest pyramid level that still has >= size pixels across the crop.
  level = max(0, min(len(levels) - 1, int(math.floor(math.log2(side / size)))))
  f = 2 ** level
  photo = levels[level]
  y0, x0 = y // f, x // f
  side_l = max(1, min(side // f, photo.shape[0] - y0, photo.shape[1] - x0))
  crop = cv2.resize(photo[y0:y0 + side_l, x0:x0 + side_l], (size, size),
                    interpolation=cv2.INTER_AREA)
  if flip:
    crop = crop[:, ::-1]
  gain = rng.uniform(0.6, 1.3) * rng.uniform(0.85, 1.15, size=3)
  return np.clip(crop * gain.astype(np.float32), 0, 1), name


# ----------------------------------------------------------------------------- rendering

def _rng(seed: int, split: str, index: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], int(index)]))


def sign_homography(rng: np.random.Generator, image_size: int) -> np.ndarray:
  """Random map from canonical sign coordinates to output pixel-area coordinates: [3,3].

  Output pixel ``(r, c)`` covers ``[c, c+1] x [r, r+1]``.
  """
  n = float(image_size)
  scale = rng.uniform(0.55, 0.9) * n / 2  # canonical unit -> pixels
  room = max(0.0, n / 2 - scale * 0.95)
  centre = n / 2 + rng.uniform(-room, room, size=2) * 0.9
  theta = math.radians(rng.uniform(-15, 15))
  c, s = math.cos(theta), math.sin(theta)
  corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
  dst = corners @ (scale * np.array([[c, s], [-s, c]])) + centre
  dst = dst + rng.uniform(-0.1, 0.1, size=(4, 2)) * scale
  return cv2.getPerspectiveTransform(corners.astype(np.float32), dst.astype(np.float32)
                                     ).astype(np.float64)


def apply_homography(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
  p = np.concatenate([pts, np.ones((len(pts), 1))], 1) @ h.T
  return p[:, :2] / p[:, 2:]


def render_example(index: int, *, seed: int = 0, split: str = "train",
                   image_size: int = DEFAULT_IMAGE_SIZE,
                   num_classes: int = DEFAULT_NUM_CLASSES) -> dict[str, Any]:
  """Renders example ``index`` of a split.

  Returns:
    dict with ``image`` uint8 [S,S,3], ``mask`` uint8 [S,S] in {0,1}, ``label`` int,
    ``coverage`` float32 [S,S] in [0,1] (fraction of each pixel covered by the sign),
    ``homography`` float64 [3,3] (canonical -> output pixel-area coordinates), ``polygon``
    float64 [V,2] (the sign's outline in output pixel-area coordinates, x then y) and
    ``background`` (the photograph's name).
  """
  rng = _rng(seed, split, index)
  label = int(index % num_classes)
  n = image_size
  s, t = _supersample(n)
  bg, bg_name = _background(rng, split, n)
  h = sign_homography(rng, n)
  # template pixel-area coords -> canonical: c = u * 2/t - 1; output area -> supersampled: * s.
  tmpl_to_canon = np.array([[2.0 / t, 0, -1], [0, 2.0 / t, -1], [0, 0, 1]])
  area = np.diag([s, s, 1.0]) @ h @ tmpl_to_canon
  # OpenCV samples pixel centres at integer coordinates: shift area coords by 0.5 on both sides.
  shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
  m = np.linalg.inv(shift) @ area @ shift
  big = cv2.warpPerspective(template(label, t), m, (n * s, n * s), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  small = cv2.resize(big, (n, n), interpolation=cv2.INTER_AREA) if s > 1 else big
  colour, cover = small[..., :3], np.clip(small[..., 3], 0, 1)
  # Lighting on the sign: gain, linear shading across the image, colour cast.
  gain = rng.uniform(0.45, 1.25)
  direction = rng.uniform(0, 2 * np.pi)
  amp = rng.uniform(0, 0.25)
  yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n - 0.5
  shade = 1 + amp * 2 * (np.cos(direction) * xx + np.sin(direction) * yy)
  cast = rng.uniform(0.9, 1.1, size=3).astype(np.float32)
  img = bg * (1 - cover[..., None]) + colour * (gain * shade)[..., None] * cast
  sigma = rng.uniform(0, 1.0) * n / 32
  if sigma > 0.25:
    img = cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
  img = img + rng.normal(0, rng.uniform(0, 0.04), size=img.shape).astype(np.float32)
  image = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
  mask = (cover >= 0.5).astype(np.uint8)
  return {"image": image, "mask": mask, "label": label, "coverage": cover, "homography": h,
          "polygon": apply_homography(h, shape_polygon(CLASSES[label][0])),
          "background": bg_name}


def generate(*, split: str, num_examples: int, seed: int = 0,
             image_size: int = DEFAULT_IMAGE_SIZE, num_classes: int = DEFAULT_NUM_CLASSES,
             progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Renders examples ``0..num_examples-1``.

  Returns:
    uint8 images [N,S,S,3], uint8 masks [N,S,S] in {0,1}, int64 labels [N].
  """
  images = np.empty((num_examples, image_size, image_size, 3), np.uint8)
  masks = np.empty((num_examples, image_size, image_size), np.uint8)
  labels = np.empty((num_examples,), np.int64)
  it = range(num_examples)
  if progress:
    it = pio.progress(it, total=num_examples, desc=f"synthetic_signs/{split}", unit="img")
  for i in it:
    ex = render_example(i, seed=seed, split=split, image_size=image_size,
                        num_classes=num_classes)
    images[i], masks[i], labels[i] = ex["image"], ex["mask"], ex["label"]
  return images, masks, labels


_MEMORY: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
_MEMORY_LIMIT = 8


def load(*, split: str = "train", data_dir: str | None = None, image_size: int | None = None,
         num_examples: int | None = None, seed: int = 0,
         num_classes: int = DEFAULT_NUM_CLASSES) -> ArraySource:
  """The synthetic-signs source (see the module docstring).

  Args:
    split: ``"train"`` or ``"test"`` (disjoint background photographs).
    data_dir: if given, generated arrays are cached there as
      ``synthetic_signs/<key>.npz`` (no pickle) and reused.
    image_size: image side in pixels (default 32).
    num_examples: default 10,000 (train) / 2,000 (test).
    seed: same seed -> byte-identical images, masks and labels.
    num_classes: 2..43 (default 10); label of example ``i`` is ``i % num_classes``.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} for synthetic_signs; choose one of "
                     f"{sorted(SPLITS)}")
  from percadv_jax.data import raw
  image_size = DEFAULT_IMAGE_SIZE if image_size is None else raw.check_image_size(image_size)
  num_classes = checks.check_int(num_classes, "num_classes", minimum=2, maximum=MAX_CLASSES)
  num_examples = checks.check_int(num_examples, "num_examples", minimum=1, allow_none=True)
  n = DEFAULT_NUM_EXAMPLES[split] if num_examples is None else num_examples
  seed = checks.check_int(seed, "seed", minimum=0)
  if data_dir is not None:
    raw.check_dir(data_dir, "data_dir", must_exist=False)
  key = (VERSION, int(seed), split, image_size, n, int(num_classes))
  arrays = _MEMORY.get(key)
  path = None
  if data_dir is not None:
    tag = hashlib.sha1(repr(key).encode()).hexdigest()[:12]
    path = os.path.join(data_dir, "synthetic_signs",
                        f"{split}_s{seed}_{image_size}px_n{n}_c{num_classes}_{tag}.npz")
  if arrays is None and path is not None and os.path.exists(path):
    try:
      with np.load(path, allow_pickle=False) as z:
        arrays = (z["images"], z["masks"], z["labels"])
    except Exception as e:  # a damaged cache file: render again and replace it
      import warnings
      warnings.warn(f"synthetic_signs cache {path} is corrupt ({type(e).__name__}: {e}); "
                    "rendering it again", UserWarning, stacklevel=2)
      arrays = None
  if arrays is None:
    arrays = generate(split=split, num_examples=n, seed=seed, image_size=image_size,
                      num_classes=num_classes, progress=n >= 5000)
    if path is not None:
      with pio.atomic_open(path, "wb") as f:
        np.savez(f, images=arrays[0], masks=arrays[1], labels=arrays[2])
  if len(_MEMORY) >= _MEMORY_LIMIT:
    _MEMORY.pop(next(iter(_MEMORY)))
  _MEMORY[key] = arrays
  for a in arrays:
    a.setflags(write=False)
  info = DatasetInfo(
      name="synthetic_signs", split=split, num_classes=num_classes,
      class_names=tuple(class_name(c) for c in range(num_classes)), image_size=image_size,
      num_examples=n, has_masks=True, mask_source="rendered",
      source=(f"rendered by percadv_jax.data.synthetic v{VERSION} (seed={seed}) on crops of "
              f"skimage.data photographs: {', '.join(BACKGROUNDS[split])}"),
      skipped={},
      extra={"seed": int(seed), "backgrounds": list(BACKGROUNDS[split]), "version": VERSION})
  return ArraySource(*arrays, info=info)
