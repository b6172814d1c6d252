r"""Configurations of the masks paper's Table 4 study (``python -m experiments.attention_masks``).

``--config=experiments/configs/attention_masks.py:<preset>`` with presets

- ``default``: VGG-19 (small-input variant, width 0.25) on the built-in synthetic signs, 15 natural
  epochs, adversarial models fine-tuned from the natural ones for 5 epochs with PGD-7, evaluation
  with PGD-10 and APGD-CE-10 on 1,000 test images;
- ``demo``: the demo's sizes (about 4 minutes on 2 CPU cores);
- ``quick``: a smoke run (about a minute; the numbers mean nothing);
- ``gtsrb_paper``, ``coco_paper``: the paper's two columns of Table 4 (each states every value
  and where it comes from).

Threat model (every preset): Linf, eps 8/255; training PGD with step 2/255 (Madry et al.'s CIFAR
settings: the paper's own eps, step and step count are not recoverable from its text). Every step
follows the one rule ``percadv_jax.attacks.step_size``: ``step_factor * eps / steps``; training
PGD-7 with step 2/255 is ``step_factor = 1.75``, evaluation PGD uses the default 2.5 (2/255 at 10
steps), APGD adapts its own.

Fields (override any with ``--config.<field>=<value>``):

- ``seed``: data (synthetic), initialisation, attacks, data order.
- ``models``: which of the four Table 4 models to train (a tuple of ``MODEL_NAMES``).
- ``data``: see ``experiments/configs/data.py`` (dataset, data_dir, image_size, num_train,
  num_test and the GTSRB-IC / MS-COCO-IC preparation options that select the cache).
- ``model``: ``name`` ("vgg19", "mobilenet_v2"), ``variant`` (VGG-19: "small" for 32-64 px
  inputs, "imagenet" = Keras' VGG19 with its fully connected head), ``width``, ``batch_norm``.
- ``train``: ``batch_size``, ``epochs``, ``optimizer``, ``learning_rate``, ``schedule``,
  ``warmup_steps``, ``weight_decay``, ``checkpoint_every``; ``adversarial_init`` ("natural" =
  each adversarial model fine-tunes the natural model of its setting, "scratch" = Madry's
  training from a random initialisation), ``adversarial_epochs`` (0 = ``epochs``);
  ``attack`` (an ``attacks.Attack``): ``kind`` ("pgd": Madry's PGD-``steps``; "fgsm_rs": Wong et
  al.'s fast FGSM with a random start, about 3x the images/s of PGD-7), ``eps``, ``steps``,
  ``step_factor`` (step = ``step_factor * eps / steps``; 0 = the kind's default: 2.5 for PGD,
  1.25 for FGSM-RS); ``guard`` ("off", "stop", "rollback": the catastrophic-overfitting
  guard of ``percadv_jax.train``, PGD accuracy on held-out training images after each epoch).
- ``eval``: ``eps``, ``steps`` (PGD), ``apgd_steps``, ``restarts``, ``examples`` (test images
  attacked; 0 = all), ``batch_size``, ``curve_eps`` (radii of the accuracy-vs-eps curves),
  ``curve_examples``; ``diagnostics`` (the trust checks of ``percadv_jax.attacks.diagnostics``
  on the first ``diagnostic_examples`` images: zero / non-finite gradients, randomness, APGD-CE
  and APGD-DLR with ``stronger_steps`` steps finding markedly more adversarial examples, accuracy
  not falling at a very large eps; shown in the table's notes).
"""

from __future__ import annotations

import ml_collections

from experiments import configs

from experiments.configs import data
from percadv_jax.data.coco import PAPER_CLASSES

MODEL_NAMES = ("full_natural", "full_adversarial", "masked_natural", "masked_adversarial")
MODEL_LABELS = {
    "full_natural": "Full image, natural training",
    "full_adversarial": "Full image, adversarial training",
    "masked_natural": "Masked (foreground only), natural training",
    "masked_adversarial": "Masked (foreground only), adversarial training",
}


def default() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.models = MODEL_NAMES
  c.data = data.get("synthetic_signs")
  c.model = ml_collections.ConfigDict(dict(
      name="vgg19", variant="small", width=0.25, batch_norm=False))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=128, epochs=15, optimizer="adam", learning_rate=2e-3, schedule="cosine",
      warmup_steps=100, weight_decay=0.0, checkpoint_every=200, adversarial_init="natural",
      adversarial_epochs=5, guard="off",
      attack=ml_collections.ConfigDict(dict(kind="pgd", eps=8 / 255, steps=7,
                                            step_factor=1.75))))
  c.eval = ml_collections.ConfigDict(dict(
      eps=8 / 255, steps=10, apgd_steps=10, restarts=1, examples=1000, batch_size=250,
      curve_eps=(0.0, 2 / 255, 4 / 255, 8 / 255, 12 / 255, 16 / 255), curve_examples=500,
      diagnostics=True, diagnostic_examples=100, stronger_steps=20))
  return c


def demo() -> ml_collections.ConfigDict:
  """The demo: natural models 10 epochs (620 steps); adversarial models fine-tune them for 3
  epochs with PGD-3 (from scratch they stay at chance at this budget); 200 test images."""
  c = default()
  c.data.num_train, c.data.num_test = 4000, 1000
  c.model.width = 0.125
  c.train.update(batch_size=64, epochs=10, adversarial_epochs=3, learning_rate=3e-3,
                 warmup_steps=50)
  c.train.attack.update(steps=3, step_factor=0.75)  # step 2/255
  c.eval.update(examples=200, curve_eps=(0.0, 4 / 255, 8 / 255, 16 / 255), curve_examples=100,
                batch_size=100, diagnostic_examples=50, stronger_steps=10)
  return c


def quick() -> ml_collections.ConfigDict:
  """A smoke run (about a minute): tiny data, few steps; the numbers mean nothing."""
  c = default()
  c.data.num_train, c.data.num_test = 256, 64
  c.model.width = 0.125
  c.train.update(batch_size=32, epochs=1, adversarial_epochs=1, learning_rate=3e-3,
                 warmup_steps=0, checkpoint_every=4)
  c.train.attack.update(steps=1, step_factor=0.25)  # step 2/255
  c.eval.update(steps=2, apgd_steps=2, examples=64, curve_eps=(0.0, 4 / 255, 8 / 255),
                curve_examples=32, batch_size=32, diagnostic_examples=16, stronger_steps=2)
  return c


def _paper(dataset: str, image_size: int) -> ml_collections.ConfigDict:
  c = default()
  c.data = data.get(dataset)
  c.data.image_size = image_size
  c.model.update(variant="imagenet", width=1.0, batch_norm=False)
  c.train.update(batch_size=128, epochs=30, optimizer="sgd", learning_rate=0.01,
                 schedule="piecewise", warmup_steps=0, weight_decay=5e-4,
                 adversarial_init="scratch", adversarial_epochs=0, checkpoint_every=500)
  c.eval.update(steps=20, apgd_steps=100, examples=0, batch_size=128, curve_examples=1000)
  return c


def gtsrb_paper() -> ml_collections.ConfigDict:
  """The masks paper's GTSRB-IC column of Table 4.

  Every value and its source:

  - data: GTSRB-IC (the paper: GTSRB with graph-cut foreground masks; 43 classes, the official
    39,209 training / 12,630 test images), 32 px (conventional for GTSRB; the paper does not
    state its input size), masks from the ROI-seeded GrabCut segmenter (``data.segmenter``:
    measured better than the paper-style centre-seeded graph cut on our fixtures; "centre"
    selects the paper's). All images (``num_train = num_test = 0``).
  - model: VGG-19 as the paper, Keras-style with its fully connected head (``variant=
    "imagenet"``, width 1, fc 4096; the flatten size follows the input: 1x1x512 at 32 px).
  - train: the paper trains naturally and with Madry's PGD adversarial training from scratch
    (``adversarial_init="scratch"``); its optimiser, schedule and epochs are not stated: SGD
    momentum 0.9, lr 0.01, Madry's piecewise schedule (x0.1 at 50% and 75%), weight decay 5e-4,
    batch 128, 30 epochs (conventional choices).
  - threat model: Linf; the paper's eps, step and step count are not recoverable from its text:
    Madry's CIFAR settings, eps 8/255, training PGD-7 with step 2/255 (``step_factor`` 1.75),
    evaluation PGD-20 (step 2.5 eps / steps) and APGD-CE-100 (AutoAttack's budget) on the whole
    test split.

  Data preparation: ``python -m experiments.prepare_data
  --config=experiments/configs/prepare_data.py:gtsrb_paper --config.raw_dir=RAW
  --config.data.data_dir=DATA``; then pass ``--config.data.data_dir=DATA`` here.
  """
  return _paper("gtsrb_ic", 32)


def coco_paper() -> ml_collections.ConfigDict:
  """The masks paper's MS-COCO-IC column of Table 4.

  Every value and its source:

  - data: MS-COCO-IC as the paper: COCO-2014 (the paper's 100,000 train / 51,271 test crops fit
    the 2014 release), its ten classes of Table 1 (chair, car, book, bottle, dining table,
    umbrella, boat, motorcycle, sheep, cow), one crop per object whose mask is that object's
    annotation only ("the mask corresponding to an image contains annotations for one object
    only"), 64 px (the paper does not state its input size; 64 keeps the objects recognisable
    at a CPU-friendly size), all crops.
  - model, train, threat model: as ``gtsrb_paper`` (VGG-19 with its fully connected head:
    2x2x512 flatten at 64 px; conventional optimiser choices; Madry's eps 8/255, PGD-7 training
    from scratch, PGD-20 and APGD-CE-100 evaluation).

  Data preparation: ``python -m experiments.prepare_data
  --config=experiments/configs/prepare_data.py:coco_paper --config.raw_dir=RAW
  --config.data.data_dir=DATA`` (RAW holds ``annotations/instances_train2014.json``,
  ``train2014/``, ``val2014/``...); then pass ``--config.data.data_dir=DATA`` here.
  """
  c = _paper("coco_ic", 64)
  c.data.update(year=2014, classes=PAPER_CLASSES, crop="object")
  return c


PRESETS = {"default": default, "demo": demo, "quick": quick, "gtsrb_paper": gtsrb_paper,
           "coco_paper": coco_paper}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The preset named after the ``:`` of ``--config`` (default: ``default``)."""
  return configs.select(PRESETS, preset, "default")
