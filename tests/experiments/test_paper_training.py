"""The paper presets' VGG-19 trains: ``gtsrb_paper``'s model and optimiser leave chance.

Plain VGG-19 without BatchNorm, trained from scratch with SGD, can stall at chance (loss log of
the class count) for a poor initialisation or learning rate. The slow test trains
``gtsrb_paper``'s full-width Keras-layout VGG-19 (its ``model.initializer``; SGD momentum 0.9,
lr 0.001, weight decay 5e-4) through the study's own ``train_config`` and
``percadv_jax.train.fit`` on a small 43-class, 32-px synthetic-signs set. Only the counts are cut
(images, batch size, steps) and the rate is held constant (the preset's piecewise schedule would
cut it halfway through so short a run); the run memorises the set, so its training loss falls
clearly below ``log(43)`` unless the model stalls. The stand-in runs and their curves:
``docs/paper_runs.md``.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest

from experiments.configs import attention_masks as masks_cfgs
from experiments.masks_study import report, train_config
from percadv_jax import io, train
from percadv_jax.data import synthetic

NUM_CLASSES = 43
NUM_IMAGES = 43  # one per class
BATCH_SIZE = 43  # the whole set every step
STEPS = 16


@pytest.mark.slow
def test_gtsrb_paper_vgg19_leaves_chance(tmp_path):
  config = masks_cfgs.get_config("gtsrb_paper")
  tc = train_config(config, "full_natural")
  assert tc.model_kwargs["width"] == 1.0 and tc.model_kwargs["variant"] == "imagenet"
  assert tc.optimizer.name == "sgd" and not tc.adversarial
  # A constant rate: the preset's piecewise schedule would cut it at step 8 of so short a run.
  tc = dataclasses.replace(tc, batch_size=BATCH_SIZE, steps=STEPS, checkpoint_every=STEPS,
                           log_every=STEPS,
                           optimizer=dataclasses.replace(tc.optimizer, schedule="constant"))
  source = synthetic.load(split="train", num_examples=NUM_IMAGES, num_classes=NUM_CLASSES,
                          image_size=config.data.image_size)
  losses: list[float] = []
  train.fit(tc, str(tmp_path), source,
            on_step=lambda step, state, metrics: losses.append(float(metrics["loss"])))
  chance = math.log(NUM_CLASSES)
  assert len(losses) == STEPS and np.all(np.isfinite(losses))
  assert losses[0] > 0.9 * chance, losses  # it starts at chance ...
  assert np.mean(losses[-3:]) < 0.8 * chance, losses  # ... and leaves it


def test_training_figure_reads_the_models_metrics(tmp_path):
  """``report.training_figure`` plots every model's records of a study workdir (fast)."""
  io.write_json(str(tmp_path / "config.json"), {"data": {"num_train": 256},
                                                "train": {"batch_size": 128}})
  for name, losses in (("full_natural", [3.7, 2.0, 0.5]), ("full_adversarial", [3.8, 3.6])):
    os.makedirs(tmp_path / "models" / name)
    for step, loss in enumerate(losses, start=1):
      io.append_jsonl(str(tmp_path / "models" / name / "metrics.jsonl"),
                      {"step": 2 * step, "loss": loss, "accuracy": 1 - loss / 4})
  path = tmp_path / "training.png"
  series = report.training_figure({"synthetic": str(tmp_path)}, str(path),
                                  num_classes={"synthetic": 43})
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert list(series) == ["synthetic, full_natural", "synthetic, full_adversarial"]
  assert series["synthetic, full_natural"]["epoch"] == [1.0, 2.0, 3.0]  # step 2 x 128 / 256
  assert series["synthetic, full_natural"]["loss"] == [3.7, 2.0, 0.5]
  assert series["synthetic, full_adversarial"]["accuracy"] == [1 - 3.8 / 4, 1 - 3.6 / 4]
  with pytest.raises(FileNotFoundError):  # a workdir that is not a study's
    report.training_figure({"x": str(tmp_path / "missing")}, str(tmp_path / "x.png"))
