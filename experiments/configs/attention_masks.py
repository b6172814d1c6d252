"""Configuration of the masks paper's Table 4 study (``experiments/attention_masks.py``).

Defaults: VGG-19 (small-input variant) on the synthetic signs; Linf PGD with eps 8/255, step
2/255, 7 steps for adversarial training and 10 for evaluation (Madry's CIFAR settings; the
paper's own values are not recoverable), APGD-CE with the same budget.
"""

from __future__ import annotations

import dataclasses

MODEL_NAMES = ("full_natural", "full_adversarial", "masked_natural", "masked_adversarial")
MODEL_LABELS = {
    "full_natural": "Full image, natural training",
    "full_adversarial": "Full image, adversarial training",
    "masked_natural": "Masked (foreground only), natural training",
    "masked_adversarial": "Masked (foreground only), adversarial training",
}


@dataclasses.dataclass(frozen=True)
class MasksConfig:
  """Every setting of a run (written to ``config.json``).

  Attributes:
    dataset: "synthetic_signs", "gtsrb_ic" or "coco_ic".
    data_dir: where prepared data lives (or the synthetic cache); None = in memory only.
    image_size: square side; None = the dataset's own.
    num_train / num_test: examples used (synthetic: generated; others: a fixed random subset);
      0 = the whole split (synthetic: its default size).
    model, width, batch_norm: the network (``get_model(model, variant="small", ...)``).
    batch_size, epochs, optimizer, learning_rate, schedule, warmup_steps, weight_decay: training.
    seed: seeds the data (synthetic), initialisation, attacks and data order.
    eps, step_size, train_attack_steps, eval_attack_steps, apgd_steps, eval_restarts: the Linf
      threat model for training and evaluation.
    eval_examples: test examples the attacks run on (0 = all of ``num_test``).
    curve_eps: eps values (pixel scale [0,1]) of the accuracy-vs-eps curves.
    curve_examples: test examples per curve point.
    models: which of the four Table 4 models to train.
    checkpoint_every: training checkpoint interval (steps).
    eval_batch_size: attack batch size.
    adversarial_init: "natural" = each adversarial model fine-tunes the natural model of its
      setting (trained first; needs it in ``models``); "scratch" = Madry's training from a
      random initialisation (collapses to one class at small budgets on CPU).
    adversarial_epochs: epochs of adversarial training (0 = ``epochs``).
  """
  dataset: str = "synthetic_signs"
  data_dir: str | None = None
  image_size: int | None = None
  num_train: int = 0
  num_test: int = 0
  model: str = "vgg19"
  width: float = 0.25
  batch_norm: bool = False
  batch_size: int = 128
  epochs: int = 15
  optimizer: str = "adam"
  learning_rate: float = 2e-3
  schedule: str = "cosine"
  warmup_steps: int = 100
  weight_decay: float = 0.0
  seed: int = 0
  eps: float = 8 / 255
  step_size: float = 2 / 255
  train_attack_steps: int = 7
  eval_attack_steps: int = 10
  apgd_steps: int = 10
  eval_restarts: int = 1
  eval_examples: int = 1000
  curve_eps: tuple[float, ...] = (0.0, 2 / 255, 4 / 255, 8 / 255, 12 / 255, 16 / 255)
  curve_examples: int = 500
  models: tuple[str, ...] = MODEL_NAMES
  checkpoint_every: int = 200
  eval_batch_size: int = 250
  adversarial_init: str = "natural"
  adversarial_epochs: int = 5


def default() -> MasksConfig:
  return MasksConfig()


def demo() -> MasksConfig:
  """Sized for the demo: the four models in about 4 minutes on 2 CPU cores.

  Natural models: 10 epochs (620 steps); adversarial models fine-tune them for 3 epochs with
  PGD-3 (from scratch they stay at chance at this budget).
  """
  return dataclasses.replace(
      MasksConfig(), num_train=4000, num_test=1000, width=0.125, batch_size=64, epochs=10,
      adversarial_epochs=3,
      train_attack_steps=3, eval_attack_steps=10, apgd_steps=10, eval_examples=200,
      curve_eps=(0.0, 4 / 255, 8 / 255, 16 / 255), curve_examples=100, eval_batch_size=100,
      learning_rate=3e-3, warmup_steps=50)


def quick() -> MasksConfig:
  """A smoke run (about a minute): tiny data, few steps; the numbers mean nothing."""
  return dataclasses.replace(
      MasksConfig(), num_train=256, num_test=64, width=0.125, batch_size=32, epochs=1,
      adversarial_epochs=1,
      train_attack_steps=1, eval_attack_steps=2, apgd_steps=2, eval_examples=64,
      curve_eps=(0.0, 4 / 255, 8 / 255), curve_examples=32, learning_rate=3e-3,
      warmup_steps=0, checkpoint_every=4, eval_batch_size=64)


PRESETS = {"default": default, "demo": demo, "quick": quick}
