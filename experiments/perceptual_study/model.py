"""The perceptual study's model: Keras MobileNetV2 weights, or one trained here; its CAM layer."""

from __future__ import annotations

import os
from typing import Any

from experiments import common
from experiments.configs import data as data_config
from percadv_jax import cam, io, models, train

MIN_CAM_SIDE = 4


def get_model(config: Any, workdir: str, seed: int) -> tuple[Any, Any, dict]:
  """``(module, variables, info)`` from ``model.keras_weights``, or trained in ``workdir/model``.

  The model trained here is a MobileNetV2 (``model.width``) trained naturally on full images of
  the study's dataset (``train`` fields), seeded by ``seed``.
  """
  if config.model.keras_weights:
    module, variables = models.load_keras_weights("mobilenet_v2", config.model.keras_weights,
                                                  width=config.model.width)
    return module, variables, {"source": f"keras weights {config.model.keras_weights}"}
  d, t = config.data, config.train
  src = common.load_split(d.dataset, "train", data_dir=d.data_dir or None,
                          image_size=d.image_size or None, num_examples=t.num_train, seed=seed,
                          **data_config.options(d))
  data = (train.ArrayData(common.subset_arrays(src, t.num_train, seed=seed))
          if t.num_train and d.dataset != "synthetic_signs" else train.ArrayData(src))
  tc = train_config(config, seed)
  with common.Timer() as timer:
    state = train.fit(tc, os.path.join(workdir, "model"), data,
                      num_classes=src.info.num_classes, desc=f"mobilenet_v2 (seed {seed})")
  io.log_event(workdir, "model", seconds=timer.seconds, steps=int(state.step))
  module = models.get_model("mobilenet_v2", num_classes=src.info.num_classes,
                            width=config.model.width)
  return module, state.variables(), {
      "source": f"trained here: MobileNetV2 width {config.model.width}, {len(data)} "
                f"{d.dataset} training images, {int(state.step)} steps"}


def train_config(config: Any, seed: int) -> train.TrainConfig:
  """The ``TrainConfig`` of the model trained here."""
  t = config.train
  return train.TrainConfig(
      model="mobilenet_v2", model_kwargs={"width": config.model.width},
      batch_size=t.batch_size, epochs=t.epochs, steps=t.steps, seed=seed,
      optimizer=train.OptimizerConfig(name="adam", learning_rate=t.learning_rate,
                                      schedule="cosine", warmup_steps=t.warmup_steps),
      checkpoint_every=200, log_every=20, bn_recalibration_batches=20,
      data_parallel=t.data_parallel)


def cam_layer(module: Any, variables: Any, x: Any, requested: str = "") -> str:
  """``requested``, else the model's ``cam_layer``, or the deepest tap of at least 4x4 where
  that one is smaller (MobileNetV2's ``out_relu`` is 1x1 at 32 px, and a CAM of a 1x1 map is
  constant: every correlation with it is undefined).

  Raises:
    ValueError: ``requested`` is not a tap of the model (the message lists them).
  """
  taps, _ = cam.model_info(module, variables, x[:1])
  if requested:
    return cam.resolve_layer(list(taps), requested)
  name = cam.resolve_layer(list(taps), module.cam_layer)
  if min(taps[name].shape[1:3]) >= MIN_CAM_SIDE:
    return name
  big = [n for n, t in taps.items() if len(t.shape) == 4 and min(t.shape[1:3]) >= MIN_CAM_SIDE]
  return big[-1] if big else name
