r"""Configuration of the demo (``python -m experiments.demo``): both studies on synthetic signs.

``--config=experiments/configs/demo.py:<preset>``: ``demo`` (the default; about 17 minutes on 2
CPU cores) or ``quick`` (a few minutes; the numbers mean nothing). The fields are the
two studies' configurations, ``masks`` (``configs/attention_masks.py``) and ``perceptual``
(``configs/perceptual_cam.py``), overridable as ``--config.masks.train.epochs=3``.
"""

from __future__ import annotations

import ml_collections

from experiments import configs
from experiments.configs import attention_masks, perceptual_cam

def _preset(name: str):
  def make() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.preset = name
    c.masks = attention_masks.get_config(name)
    c.perceptual = perceptual_cam.get_config(name)
    return c
  return make


PRESETS = {name: _preset(name) for name in ("demo", "quick")}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The preset named after the ``:`` of ``--config`` (default: ``demo``)."""
  return configs.select(PRESETS, preset, "demo")
