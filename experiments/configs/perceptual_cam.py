r"""Configurations of the perceptual paper's study (``python -m experiments.perceptual_cam``).

The paper's question: do imperceptible perturbations (found inside the SSIM quality ball) focus
on changing the regions a class activation map marks as important for the classification? The
study answers it directly (the share of the 1 - SSIM map's energy inside the CAM's top-k% region
against k%, and its rank correlation with the CAM), each number beside its sanity baselines (the
CAM of a randomised model, smooth random maps, another image's CAM; the CAM's own deletion check).
The project's addition: do they do so more than Linf / L2 PGD perturbations of the same size?

``--config=experiments/configs/perceptual_cam.py:<preset>`` with presets

- ``default``: a MobileNetV2 (width 0.5) trained here on the synthetic signs, 200 correctly
  classified test images, the quality ball w = 8, s = 4, e1 = e2 = 0.05, Grad-CAM++ and Grad-CAM;
- ``demo``: the demo's sizes (about 8 minutes on 2 CPU cores);
- ``quick``: a smoke run (the numbers mean nothing);
- ``imagenet_paper``: the paper's setting (MobileNetV2 1.0, Keras ImageNet weights, 224 px,
  CAM at the last convolutional layer); its docstring states every value and its source.

Fields (override any with ``--config.<field>=<value>``):

- ``seeds``: the study runs once per seed (model, image choice, attacks, bootstrap) and reports
  per-seed and pooled estimates.
- ``data``: the fields of ``experiments/configs/data.py`` (``image_size`` 0 = the dataset's;
  224 for image folders and TFDS) plus ``labels_file`` (image_folder: ``<file> <label>`` lines),
  ``split``, ``num_images`` (correctly classified images studied), ``candidates`` (images
  scanned for them; 0 = all).
- ``model``: ``keras_weights`` (a Keras MobileNetV2 ``.h5``; "" = train one here), ``width``.
- ``train`` (the model trained here): ``num_train``, ``batch_size``, ``epochs``, ``steps`` (if
  > 0, the number of optimiser steps instead of ``epochs``), ``learning_rate``,
  ``warmup_steps``, ``data_parallel`` (each batch split over every device,
  ``percadv_jax.train.TrainConfig.data_parallel``; True in ``imagenet_paper``, False in the
  others, whose numbers on a CPU with one device per core stay those of one device).
- ``ball``: ``window``, ``stride``, ``eps_structure`` (e2), ``eps_luminance`` (e1; 0 = off).
- ``attack``: ``ssim_steps``, ``pgd_steps``, ``linf_eps`` / ``l2_eps`` (0 = matched to the
  median norm of the SSIM attack's perturbations), ``batch_size``, ``diagnostics`` (the trust
  checks of ``percadv_jax.attacks.diagnostics`` on the first ``diagnostic_examples`` images of
  the Linf PGD evaluation, APGD with ``stronger_steps`` steps as the stronger attack),
  ``checklist`` (the robustness checklist of ``percadv_jax.attacks.checklist`` of each seed's
  Linf PGD evaluation: ``enabled``, ``examples`` (the first selected images it checks),
  ``restarts`` (of its more-restarts attack), ``square_queries`` (of its black-box Square
  Attack); every value is our choice: the paper has no checklist).
- ``cam``: ``layer`` ("" = the model's, or the deepest tap of at least 4x4 where the model's is
  smaller), ``top_k`` (fraction of pixels of the top-k IoU), ``energy_top_k`` (the fractions k of
  the direct answer's energy share inside the CAM's top-k% region; our choice (0.1, 0.2): the
  paper states no k, and the two show whether the result depends on it).
- ``sanity`` (the baselines beside the direct answer; every value is our choice, the paper has no
  baselines): ``nulls``, the references an agreement must beat to count as positive, any of
  "random_model" (the CAM of the model re-initialised at the cascade stage ``null_stage``),
  "smooth_random" (``random_maps`` Gaussian-smoothed noise maps per image), "other_image" (the
  CAM of the next selected image: the same smoothness and centre bias, another image's content);
  ``cascade``, the stages of the cascading randomisation (Adebayo et al. 2018) reported: "logits"
  (the head), "above_cam" (every layer above the CAM layer: its activations stay, the weighting
  is random), "all" (every layer); ``null_stage`` ("all": nothing learned is left);
  ``smooth_sigma`` (the random maps' Gaussian in pixels; 0 = matched to the Grad-CAM++ maps'
  spatial autocorrelation at a lag of one CAM cell, image side / CAM side); ``random_maps`` (8: the
  null per image is the mean over them); ``deletion_steps`` (10 steps of 10% of the pixels; 0 =
  no deletion check) and ``deletion_baseline`` ("mean": a removed pixel becomes the image's mean
  colour, which removes its content without the colour shift of black; or "blur").
- ``report``: ``bootstrap`` (resamples of the 95% CIs), ``figure_images``.
"""

from __future__ import annotations

import ml_collections

from experiments import configs

from experiments.configs import data

ATTACKS = ("ssim", "linf", "l2")
MAP_KINDS = ("one_minus_ssim", "abs_d")  # the paper compares SSIM maps first
CAM_METHODS = ("grad_cam_pp", "grad_cam")
NULLS = ("random_model", "smooth_random", "other_image")
CASCADE_STAGES = ("logits", "above_cam", "all")


def default() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seeds = (0,)
  c.data = data.get("synthetic_signs")
  c.data.update(dict(labels_file="", split="test", num_images=200, candidates=1000))
  c.model = ml_collections.ConfigDict(dict(keras_weights="", width=0.5))
  c.train = ml_collections.ConfigDict(dict(
      num_train=0, batch_size=128, epochs=10, steps=0, learning_rate=2e-3, warmup_steps=100,
      data_parallel=False))
  c.ball = ml_collections.ConfigDict(dict(
      window=8, stride=4, eps_structure=0.05, eps_luminance=0.05))
  c.attack = ml_collections.ConfigDict(dict(
      ssim_steps=20, pgd_steps=20, linf_eps=0.0, l2_eps=0.0, batch_size=50, diagnostics=True,
      stronger_steps=20, diagnostic_examples=256))
  # Ours: 256 images (as many as the trust checks), 5 restarts, 5,000 queries (AutoAttack's
  # Square budget); the paper has no checklist.
  c.attack.checklist = ml_collections.ConfigDict(dict(enabled=True, examples=256, restarts=5,
                                                      square_queries=5000))
  c.cam = ml_collections.ConfigDict(dict(layer="", top_k=0.1, energy_top_k=(0.1, 0.2)))
  c.sanity = ml_collections.ConfigDict(dict(
      nulls=NULLS, cascade=CASCADE_STAGES, null_stage="all", smooth_sigma=0.0, random_maps=8,
      deletion_steps=10, deletion_baseline="mean"))
  c.report = ml_collections.ConfigDict(dict(bootstrap=1000, figure_images=6))
  return c


def demo() -> ml_collections.ConfigDict:
  """The demo: two seeds; per seed a MobileNetV2 (width 0.35, 32 px) trained for 1,560 steps on
  16,000 synthetic signs (93-96% test accuracy; 4,000 images and 620 steps gave 68.7%), 64
  correctly classified test images. About 8 minutes on 2 CPU cores."""
  c = default()
  c.seeds = (0, 1)
  c.data.update(num_images=64, candidates=300)
  c.model.width = 0.35
  c.train.update(num_train=16000, batch_size=64, steps=1560, learning_rate=3e-3,
                 warmup_steps=50)
  c.attack.update(ssim_steps=10, pgd_steps=10, batch_size=32, stronger_steps=10,
                  diagnostic_examples=32)
  # Our choice, to keep the demo short: the checklist on 32 images, 2 restarts, 100 Square
  # queries (about 1 min on 2 cores for both seeds: the second reuses the first's compiles).
  c.attack.checklist.update(examples=32, restarts=2, square_queries=100)
  c.report.bootstrap = 500
  return c


def quick() -> ml_collections.ConfigDict:
  """A smoke run (well under a minute after compiling): the numbers mean nothing."""
  c = default()
  c.data.update(num_images=8, candidates=32)
  c.model.width = 0.35
  c.train.update(num_train=256, batch_size=32, epochs=1, warmup_steps=0)
  c.attack.update(ssim_steps=2, pgd_steps=2, batch_size=8, diagnostics=False)
  c.attack.checklist.update(examples=8, restarts=2, square_queries=10)  # tiny: a short smoke run
  c.report.update(bootstrap=50, figure_images=3)
  return c


def imagenet_paper() -> ml_collections.ConfigDict:
  """The perceptual paper's setting: MobileNetV2 1.0 with Keras' ImageNet weights at 224 px.

  Every value and its source:

  - data: ImageNet-style photographs (the paper: ImageNet) as an image folder
    (``DIR/<class>/*.jpg``, or files plus ``data.labels_file`` lines ``<file> <ImageNet class
    index>``; without labels the model's own predictions are the labels), 224 px (MobileNetV2's
    ImageNet input), 200 correctly classified images from up to 1,000 candidates (the paper's
    count is not stated), the images' own split ("test").
  - model: MobileNetV2 width 1.0 with Keras' ImageNet weights (``model.keras_weights``: save
    them once with ``keras.applications.MobileNetV2(weights="imagenet").save("mnv2.h5")``);
    the CAM at the last convolutional layer (``out_relu``, 7x7 at 224 px), as the paper.
  - quality ball: windows of 8 x 8 at stride 4, e1 = e2 = 0.05 (each window keeps its SSIM
    luminance and structure terms above 0.95: the paper's perceptual budget is not stated as
    numbers); 10 Frank-Wolfe steps of the SSIM attack; Linf / L2 PGD-10 with radii matched to
    the SSIM attack's median norms (the comparison at equal size).
  - report: Grad-CAM++ and Grad-CAM, 1,000 bootstrap resamples; seeds (0, 1) (the paper has one
    run; two seeds test replication).
  """
  c = default()
  c.seeds = (0, 1)
  c.data.update(dataset="image_folder", image_size=224, num_images=200, candidates=1000)
  c.model.width = 1.0
  c.attack.update(ssim_steps=10, pgd_steps=10, batch_size=8)
  c.cam.layer = "out_relu"
  c.train.data_parallel = True
  return c


PRESETS = {"default": default, "demo": demo, "quick": quick, "imagenet_paper": imagenet_paper}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The preset named after the ``:`` of ``--config`` (default: ``default``)."""
  return configs.select(PRESETS, preset, "default")
