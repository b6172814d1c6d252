"""Configuration of the perceptual paper's study (``experiments/perceptual_cam.py``).

Question: do perturbations found inside the SSIM quality ball change the regions a class
activation map marks as important (are they "semantically explainable"), more than Linf / L2 PGD
perturbations do? Defaults: a MobileNetV2 trained here on the synthetic signs, the quality ball
with window 8, stride 4, e1 = e2 = 0.05 (DESIGN.md), Grad-CAM++ and Grad-CAM on the clean image.
"""

from __future__ import annotations

import dataclasses

ATTACKS = ("ssim", "linf", "l2")
MAP_KINDS = ("abs_d", "one_minus_ssim")
CAM_METHODS = ("grad_cam_pp", "grad_cam")


@dataclasses.dataclass(frozen=True)
class PerceptualConfig:
  """Every setting of a run (written to ``config.json``).

  Attributes:
    dataset: "synthetic_signs" (masks available), "gtsrb_ic", "coco_ic" or "image_folder".
    data_dir: data directory (the image folder's root for "image_folder").
    labels_file: image_folder only: a file of ``<file> <label>`` lines (e.g. ImageNet indices).
    image_size: square side; None = the dataset's own (224 for image folders).
    split: the split the studied images come from.
    keras_weights: a Keras MobileNetV2 ``.h5`` / ``.weights.h5``; empty = train a model here.
    width: MobileNetV2 alpha of the model trained here (and of the Keras weights).
    num_train, batch_size, epochs, learning_rate, warmup_steps: training of the model trained
      here (natural training on full images).
    seed: data, initialisation, attacks, bootstrap.
    num_images: correctly classified images studied.
    candidates: images scanned to find them (0 = the whole split).
    ball_window, ball_stride, eps_structure, eps_luminance: the quality ball (e1 = 0: off).
    ssim_steps: iterations of the SSIM-constrained attack.
    linf_eps, l2_eps: PGD radii; 0 = matched to the median norm of the SSIM attack's
      perturbations (same size, different shape).
    pgd_steps: PGD iterations (step 2.5 eps / steps).
    cam_layer: tap for the CAMs; empty = the model's default.
    top_k: fraction of pixels of the top-k IoU.
    bootstrap: bootstrap resamples of the confidence intervals (95%, percentile).
    batch_size_attack: images per attack batch.
    figure_images: rows in the figure grids.
  """
  dataset: str = "synthetic_signs"
  data_dir: str | None = None
  labels_file: str | None = None
  image_size: int | None = None
  split: str = "test"
  keras_weights: str = ""
  width: float = 0.5
  num_train: int = 0
  batch_size: int = 128
  epochs: int = 10
  learning_rate: float = 2e-3
  warmup_steps: int = 100
  seed: int = 0
  num_images: int = 200
  candidates: int = 1000
  ball_window: int = 8
  ball_stride: int = 4
  eps_structure: float = 0.05
  eps_luminance: float = 0.05
  ssim_steps: int = 20
  linf_eps: float = 0.0
  l2_eps: float = 0.0
  pgd_steps: int = 20
  cam_layer: str = ""
  top_k: float = 0.1
  bootstrap: int = 1000
  batch_size_attack: int = 50
  figure_images: int = 6


def default() -> PerceptualConfig:
  return PerceptualConfig()


def demo() -> PerceptualConfig:
  """Sized for the demo (about 5 minutes on 2 CPU cores)."""
  return dataclasses.replace(PerceptualConfig(), num_train=4000, width=0.35, batch_size=64,
                             epochs=10, num_images=64, candidates=300, ssim_steps=10,
                             pgd_steps=10, bootstrap=500, batch_size_attack=32,
                             learning_rate=3e-3, warmup_steps=50)


def quick() -> PerceptualConfig:
  """A smoke run (well under a minute after compiling): the numbers mean nothing."""
  return dataclasses.replace(PerceptualConfig(), num_train=256, width=0.35, batch_size=32,
                             epochs=1, num_images=8, candidates=32, ssim_steps=2, pgd_steps=2,
                             bootstrap=50, batch_size_attack=8, warmup_steps=0, figure_images=3)


PRESETS = {"default": default, "demo": demo, "quick": quick}
