"""Training the four Table 4 models: {full image, masked} x {natural, adversarial}."""

from __future__ import annotations

import os
from typing import Any

from experiments import common
from percadv_jax import attacks, io, parallel, train


def model_kwargs(config: Any) -> dict:
  """The ``get_model`` keyword arguments of ``config.model`` (besides name and num_classes)."""
  m = config.model
  if m.name == "vgg19":
    return {"variant": m.variant, "width": m.width, "batch_norm": m.batch_norm,
            "initializer": m.get("initializer", "lecun")}
  return {"width": m.width}


def train_config(config: Any, name: str, workdir: str = "") -> train.TrainConfig:
  """The ``TrainConfig`` of Table 4 model ``name`` (e.g. "masked_adversarial") in ``workdir``."""
  setting, regime = name.split("_")
  t = config.train
  adversarial = regime == "adversarial"
  finetune = adversarial and t.adversarial_init == "natural"
  epochs = t.adversarial_epochs if adversarial and t.adversarial_epochs else t.epochs
  m = config.model
  return train.TrainConfig(
      model=m.name,
      model_kwargs=model_kwargs(config),
      batch_size=t.batch_size, epochs=epochs, seed=config.seed,
      adversarial=adversarial, masked=setting == "masked",
      init_from=os.path.join(workdir, "models", f"{setting}_natural") if finetune else "",
      attack=attacks.Attack(t.attack.kind, eps=t.attack.eps, steps=t.attack.steps,
                            step_factor=t.attack.step_factor or None, masked=setting == "masked"),
      guard=t.guard if adversarial else "off",
      optimizer=train.OptimizerConfig(name=t.optimizer, learning_rate=t.learning_rate,
                                      schedule=t.schedule, warmup_steps=t.warmup_steps,
                                      weight_decay=t.weight_decay),
      checkpoint_every=t.checkpoint_every, log_every=20, data_parallel=t.data_parallel)


def train_model(config: Any, name: str, workdir: str, train_data: Any, num_classes: int
                ) -> train.TrainState:
  """Trains (or resumes, or restores the finished) model ``name`` in ``workdir/models/name``
  (every process of a multi-process run calls it; process 0 logs)."""
  tc = train_config(config, name, workdir)
  mdir = os.path.join(workdir, "models", name)
  with common.Timer() as t:
    state = train.fit(tc, mdir, train_data, num_classes=num_classes, desc=name)
  if parallel.is_main_process():
    io.log_event(workdir, "trained", model=name, seconds=t.seconds, steps=int(state.step))
  return state
