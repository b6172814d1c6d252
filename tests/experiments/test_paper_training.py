"""The paper presets' VGG-19 trains: ``gtsrb_paper``'s model and optimiser leave chance.

Plain VGG-19 without BatchNorm, trained from scratch with SGD, can stall at chance (loss log of
the class count) for a poor initialisation or learning rate. This trains ``gtsrb_paper``'s
full-width Keras-layout VGG-19 (``model.initializer``, SGD momentum 0.9, lr 0.001, piecewise
schedule, weight decay 5e-4) through the study's own ``train_config`` and ``percadv_jax.train.fit``
on a small 43-class, 32-px synthetic-signs set. Only the counts are cut (images, batch size,
steps); the run memorises the set, so its training loss falls clearly below ``log(43)`` unless
the model stalls. The full stand-in runs and their curves: ``docs/paper_runs.md``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from experiments.configs import attention_masks as masks_cfgs
from experiments.masks_study import train_config
from percadv_jax import train
from percadv_jax.data import synthetic

NUM_CLASSES = 43
NUM_IMAGES = 43  # one per class
BATCH_SIZE = 43  # the whole set every step
STEPS = 12


@pytest.mark.slow
def test_gtsrb_paper_vgg19_leaves_chance(tmp_path):
  config = masks_cfgs.get_config("gtsrb_paper")
  tc = train_config(config, "full_natural")
  assert tc.model_kwargs["width"] == 1.0 and tc.model_kwargs["variant"] == "imagenet"
  assert tc.optimizer.name == "sgd" and not tc.adversarial
  tc = dataclasses.replace(tc, batch_size=BATCH_SIZE, steps=STEPS, checkpoint_every=STEPS,
                           log_every=STEPS)
  source = synthetic.load(split="train", num_examples=NUM_IMAGES, num_classes=NUM_CLASSES,
                          image_size=config.data.image_size)
  losses: list[float] = []
  train.fit(tc, str(tmp_path), source,
            on_step=lambda step, state, metrics: losses.append(float(metrics["loss"])))
  print("LOSSES", losses)
  chance = math.log(NUM_CLASSES)
  assert len(losses) == STEPS and np.all(np.isfinite(losses))
  assert losses[0] > 0.9 * chance, losses  # it starts at chance ...
  assert np.mean(losses[-3:]) < 0.8 * chance, losses  # ... and leaves it
