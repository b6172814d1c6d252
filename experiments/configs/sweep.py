r"""Configuration of the robustness sweep (``python -m experiments.sweep``).

``--config=experiments/configs/sweep.py:<preset>``: ``default`` (an untrained small VGG-19,
PGD-10 at eps 0, 2, 4, 8 /255 on 512 synthetic test images: a smoke run) or ``quick``.
Point it at trained models with ``--config.checkpoints="('runs/demo/attention_masks/models/
full_natural',)"``.

Fields:

- ``checkpoints``: training workdirs (written by ``percadv_jax.train.fit``; the latest checkpoint
  is evaluated and its step recorded) or ``"init:SEED"`` (the untrained ``model`` initialised
  with SEED).
- ``attacks``: a subset of ``percadv_jax.attacks.KINDS`` ("fgsm", "fgsm_rs", "pgd", "apgd");
  ``eps``: radii (pixel scale; eps = 0 is clean accuracy); ``steps``: iterations (the
  single-step kinds have one); ``norm``: "linf" or "l2";
  ``restarts``; ``step_factor``: PGD step = step_factor * eps / steps.
- ``data``: ``dataset``, ``split``, ``data_dir``, ``image_size`` (0 = the dataset's),
  ``num_examples`` (0 = all; synthetic: generated), ``num_classes`` (synthetic only; 0 = 10).
- ``model`` (``init:`` checkpoints only): ``name`` (a ``get_model`` name or
  ``"package.module:Factory"``), ``kwargs``; ``masked``: the masked setting.
- ``batch_size`` (global, a multiple of the device count), ``seed`` (attack randomness),
  ``precision`` ("float32" or "bfloat16").
"""

from __future__ import annotations

import ml_collections

from experiments import configs


def default() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.checkpoints = ("init:0",)
  c.attacks = ("pgd",)
  c.eps = (0.0, 2 / 255, 4 / 255, 8 / 255)
  c.steps = (10,)
  c.norm = "linf"
  c.restarts = 1
  c.step_factor = 2.5
  c.data = ml_collections.ConfigDict(dict(
      dataset="synthetic_signs", split="test", data_dir="", image_size=0, num_examples=512,
      num_classes=0))
  c.model = ml_collections.ConfigDict(dict(
      name="vgg19", kwargs=ml_collections.ConfigDict(dict(variant="small", width=0.25))))
  c.masked = False
  c.batch_size = 128
  c.seed = 0
  c.precision = "float32"
  return c


def quick() -> ml_collections.ConfigDict:
  c = default()
  c.eps = (0.0, 8 / 255)
  c.steps = (2,)
  c.data.num_examples = 64
  c.batch_size = 32
  return c


PRESETS = {"default": default, "quick": quick}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The preset named after the ``:`` of ``--config`` (default: ``default``)."""
  return configs.select(PRESETS, preset, "default")
