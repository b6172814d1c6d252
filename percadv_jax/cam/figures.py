"""Side-by-side figures: image | CAM overlay | perturbation magnitude | 1 - SSIM map."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from percadv_jax import checks, io


def overlay(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.5,
            cmap: str = "jet") -> np.ndarray:
  """``(1 - alpha) * image + alpha * colormap(heat)``, float ``[H, W, 3]`` in [0, 1].

  ``image`` is ``[H, W, 3]`` (or ``[H, W]``/``[H, W, 1]`` grey) in [0, 1]; ``heat`` ``[H, W]`` in
  [0, 1] (clipped).
  """
  import matplotlib
  alpha = checks.check_float(alpha, "alpha", minimum=0.0, maximum=1.0)
  image = np.asarray(image, np.float32)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  heat = np.clip(np.asarray(heat, np.float32), 0.0, 1.0)
  if heat.shape != image.shape[:2]:
    raise ValueError(f"heat map {heat.shape} and image {image.shape[:2]} sizes differ")
  colour = matplotlib.colormaps[cmap](heat)[..., :3].astype(np.float32)
  return np.clip((1.0 - alpha) * image + alpha * colour, 0.0, 1.0)


def plot_maps(images, cam_maps, *, perturbation_maps=None, dissimilarity_maps=None,
              path: str | None = None, titles: Sequence[str] | None = None,
              max_images: int = 8, alpha: float = 0.5, dpi: int = 120):
  """Draws one row per image: image, CAM overlay, perturbation magnitude, 1 - SSIM map.

  Args:
    images: ``[N, H, W, 3]`` in [0, 1].
    cam_maps: ``[N, H, W]`` in [0, 1].
    perturbation_maps: ``[N, H, W]`` (e.g. ``perturbation_magnitude(x_adv - x)``) or None.
    dissimilarity_maps: ``[N, H, W]`` (e.g. ``dissimilarity_map(ssim_map, size=(H, W))``) or None.
    path: write a PNG there (atomically, via ``percadv_jax.io.save_figure``) and close the figure.
    titles: optional row labels (e.g. "label 3 -> pred 5").
    max_images: at most this many rows (the first ones).
  Returns:
    the matplotlib Figure (closed if ``path`` was given).
  """
  import matplotlib
  matplotlib.use("Agg", force=False)
  import matplotlib.pyplot as plt

  images = np.asarray(images, np.float32)
  cams = np.asarray(cam_maps, np.float32)
  if images.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
  columns = [("image", None), ("CAM overlay", cams)]
  if perturbation_maps is not None:
    columns.append(("|perturbation|", np.asarray(perturbation_maps, np.float32)))
  if dissimilarity_maps is not None:
    columns.append(("1 - SSIM", np.asarray(dissimilarity_maps, np.float32)))
  for name, m in columns[1:]:
    if m.shape != images.shape[:3]:
      raise ValueError(f"{name} maps {m.shape} must have shape [N, H, W] = {images.shape[:3]}")
  n = min(int(max_images), images.shape[0])
  if n < 1:
    raise ValueError("plot_maps needs at least one image")
  fig, axes = plt.subplots(n, len(columns), figsize=(2.4 * len(columns), 2.4 * n),
                           squeeze=False)
  for i in range(n):
    for j, (name, m) in enumerate(columns):
      ax = axes[i, j]
      if m is None:
        img = images[i]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else np.clip(img, 0, 1),
                  cmap="gray" if img.shape[-1] == 1 else None)
      elif name == "CAM overlay":
        ax.imshow(overlay(images[i], m[i], alpha=alpha))
      else:
        im = ax.imshow(m[i], cmap="magma")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(name, fontsize=9)
      if j == 0 and titles is not None and i < len(titles):
        ax.set_ylabel(str(titles[i]), fontsize=8)
  fig.tight_layout()
  if path is not None:
    io.save_figure(fig, path, dpi=dpi)
  return fig
