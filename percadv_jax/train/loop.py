"""The training loop: ``fit(config, workdir, source)`` with checkpoints, resume and metrics.

Determinism: the model initialisation and the training randomness come from ``config.seed``
(through ``state.key``), and the batch at step ``s`` is a function of ``(seed, s)`` only:
epoch ``e = s // steps_per_epoch`` uses the permutation ``numpy.random.default_rng([seed, e])``
of the training set, sliced at ``s % steps_per_epoch``. A run killed after a checkpoint and
restarted therefore replays exactly the batches and keys it would have seen, and reaches the same
final parameters as an uninterrupted run.

Workdir layout: ``config.json`` (the TrainConfig), ``metrics.jsonl`` (one line per ``log_every``
steps: step, loss, accuracy, learning rate, steps/s), ``checkpoints/<step>/`` (orbax).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import checks, io, models
from percadv_jax.train import checkpoint
from percadv_jax.train.state import (OptimizerConfig, TrainState, create_train_state,
                                     make_optimizer, make_schedule)
from percadv_jax.train import batchnorm
from percadv_jax.train.steps import AttackConfig, jit_train_step, model_input


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that determines a training run.

  Attributes:
    model: a ``percadv_jax.models.get_model`` name ("vgg19", "mobilenet_v2").
    model_kwargs: extra keyword arguments of ``get_model`` (e.g. ``{"variant": "small",
      "width": 0.25}``); ``num_classes`` comes from the data.
    batch_size: examples per step (the last partial batch of an epoch is dropped).
    epochs: passes over the training set (ignored when ``steps > 0``).
    steps: total optimiser steps, if > 0.
    seed: the run's seed (initialisation, attack starts, data order).
    adversarial: Madry adversarial training with ``attack``.
    masked: the masks paper's masked setting (model sees ``x * mask``).
    attack: the training threat model.
    optimizer: optimiser and schedule.
    checkpoint_every: save a checkpoint every this many steps (and at the end).
    log_every: write a metrics.jsonl line every this many steps.
    keep_checkpoints: how many checkpoints to keep.
    bn_recalibration_batches: after the last step, replace BatchNorm's running statistics by
      precise population statistics over this many training batches of clean model inputs
      (``percadv_jax.train.batchnorm``); 0 keeps the running averages.
    init_from: fine-tuning: the workdir of a finished run of the same model and optimiser whose
      final params and batch_stats initialise this run (optimiser state, step and key start
      fresh); "" = initialise from ``seed``.
  """
  model: str = "vgg19"
  model_kwargs: Mapping[str, Any] = dataclasses.field(
      default_factory=lambda: {"variant": "small"})
  batch_size: int = 128
  epochs: int = 10
  steps: int = 0
  seed: int = 0
  adversarial: bool = False
  masked: bool = False
  attack: AttackConfig = AttackConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  checkpoint_every: int = 200
  log_every: int = 20
  keep_checkpoints: int = 2
  bn_recalibration_batches: int = 0
  init_from: str = ""

  def validate(self) -> None:
    checks.check_positive(self.batch_size, "batch_size")
    checks.check_positive(self.epochs, "epochs")
    checks.check_positive(self.steps, "steps", allow_zero=True)
    checks.check_positive(self.checkpoint_every, "checkpoint_every")
    checks.check_positive(self.log_every, "log_every")
    checks.check_positive(self.keep_checkpoints, "keep_checkpoints")
    checks.check_positive(self.bn_recalibration_batches, "bn_recalibration_batches",
                          allow_zero=True)
    self.attack.validate()
    self.optimizer.validate()

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
    d = dict(d)
    d["attack"] = AttackConfig(**d.get("attack", {}))
    d["optimizer"] = OptimizerConfig(**d.get("optimizer", {}))
    d["model_kwargs"] = dict(d.get("model_kwargs", {}))
    return cls(**d)


def info_get(source: Any, name: str, default: Any = None) -> Any:
  """Reads ``name`` from ``source.info`` whether ``info`` is an object or a mapping."""
  info = getattr(source, "info", None)
  if info is None:
    return default
  if isinstance(info, Mapping):
    return info.get(name, default)
  return getattr(info, name, default)


class ArrayData:
  """Random access to batches of a data source as float32 arrays.

  Small sources (up to ``cache_bytes`` as float32) are converted once with
  ``percadv_jax.data.to_arrays``; larger ones batch by batch. ``source`` may also be a dict
  ``{"image", "mask", "label"}`` of arrays already in the batch format.
  """

  def __init__(self, source: Any, *, cache_bytes: int = 2 << 30):
    self.source = source
    self._arrays = None
    if isinstance(source, Mapping):
      self._arrays = {k: np.asarray(v) for k, v in source.items()}
      self.n = len(self._arrays["label"])
    else:
      self.n = len(source)
      first = source[0]["image"]
      if self.n * first.size * 4 <= cache_bytes:
        self._arrays = _to_arrays(source, None)

  def __len__(self) -> int:
    return self.n

  def batch(self, indices: np.ndarray) -> dict:
    """The batch dict for ``indices`` (float32 images [B,H,W,3], masks [B,H,W,1], int32 labels)."""
    if self._arrays is not None:
      return {k: v[indices] for k, v in self._arrays.items()}
    return _to_arrays(self.source, np.asarray(indices))

  def all(self) -> dict:
    return self.batch(np.arange(self.n))


def _to_arrays(source: Any, indices: np.ndarray | None) -> dict:
  from percadv_jax import data
  out = data.to_arrays(source, indices)
  return {"image": np.asarray(out["image"], np.float32),
          "mask": np.asarray(out["mask"], np.float32).reshape(out["image"].shape[:3] + (1,)),
          "label": np.asarray(out["label"], np.int32)}


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Indices of the batch at ``step``: a function of ``(n, batch_size, seed, step)`` only."""
  steps_per_epoch = n // batch_size
  epoch, i = divmod(step, steps_per_epoch)
  perm = np.random.default_rng([seed, epoch]).permutation(n)
  return perm[i * batch_size:(i + 1) * batch_size]


def total_steps(config: TrainConfig, n: int) -> int:
  """Number of optimiser steps of ``config`` on ``n`` training examples."""
  if n < config.batch_size:
    raise ValueError(f"the training set has {n} examples, fewer than batch_size="
                     f"{config.batch_size}")
  return config.steps if config.steps > 0 else config.epochs * (n // config.batch_size)


def build(config: TrainConfig, *, num_classes: int, image_shape: Sequence[int],
          total: int, abstract: bool = False) -> TrainState:
  """A fresh ``TrainState`` for ``config`` (model from ``get_model``, optax optimiser).

  ``abstract=True`` gives ``jax.ShapeDtypeStruct`` leaves: a restore target that costs no
  initialisation (``checkpoint.restore`` fills in the arrays).
  """
  module = _model(config.model, num_classes, tuple(sorted(dict(config.model_kwargs).items())))
  tx = _optimizer(config.optimizer, total)
  return create_train_state(jax.random.PRNGKey(config.seed), module, tx,
                            input_shape=(1, *image_shape), abstract=abstract)


@functools.lru_cache(maxsize=16)
def _model(name: str, num_classes: int, kwargs: tuple) -> Any:
  # One module object per architecture, so the jitted steps (whose cache keys include the
  # state's static apply_fn and tx) are reused across runs in one process.
  return models.get_model(name, num_classes=num_classes, **dict(kwargs))


@functools.lru_cache(maxsize=16)
def _optimizer(config: OptimizerConfig, total: int) -> Any:
  return make_optimizer(config, total)


def _check_config(workdir: str, config: TrainConfig) -> None:
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    old = io.read_json(path)
    fresh = _json_roundtrip(config.to_dict())
    if old != fresh:
      raise ValueError(f"{workdir} holds a run with a different configuration "
                       f"({_diff(old, fresh)}); use another workdir or delete it")
  else:
    io.write_json(path, config.to_dict())


def _json_roundtrip(d: Any) -> Any:
  import json
  return json.loads(json.dumps(d, sort_keys=True, default=str))


def _diff(a: Mapping, b: Mapping, prefix: str = "") -> str:
  out = []
  for k in sorted(set(a) | set(b)):
    va, vb = a.get(k), b.get(k)
    if isinstance(va, Mapping) and isinstance(vb, Mapping):
      s = _diff(va, vb, prefix + k + ".")
      if s:
        out.append(s)
    elif va != vb:
      out.append(f"{prefix}{k}: {va!r} != {vb!r}")
  return ", ".join(out)


def fit(config: TrainConfig, workdir: str, source: Any, *,
        num_classes: int | None = None,
        on_step: Callable[[int, TrainState, dict], None] | None = None,
        desc: str = "train") -> TrainState:
  """Trains (or resumes, or just restores a finished) run of ``config`` in ``workdir``.

  Args:
    config: the run's configuration (written to ``workdir/config.json``; a workdir holding a
      different configuration raises ValueError).
    workdir: directory for config.json, metrics.jsonl and checkpoints/.
    source: the training data: a ``percadv_jax.data`` source (``len``, ``[i]``, ``info``) or
      a dict of arrays ``{"image": [N,H,W,3], "mask": [N,H,W,1], "label": [N]}``.
    num_classes: taken from ``source.info`` unless given (needed for array dicts).
    on_step: called as ``on_step(step, state, metrics)`` after every step (``step`` counts
      finished steps); an exception there stops the run like a kill would.
    desc: progress-bar label.

  Returns:
    The final ``TrainState`` (from the last checkpoint when the run had already finished).
  """
  config.validate()
  os.makedirs(workdir, exist_ok=True)
  _check_config(workdir, config)
  data = source if isinstance(source, ArrayData) else ArrayData(source)
  num_classes = num_classes or info_get(data.source, "num_classes")
  if num_classes is None:
    raise ValueError("num_classes is needed when the source has no info.num_classes")
  n = len(data)
  total = total_steps(config, n)
  image_shape = data.batch(np.arange(1))["image"].shape[1:]
  mngr = checkpoint.manager(os.path.join(workdir, "checkpoints"),
                            max_to_keep=config.keep_checkpoints)
  resume = mngr.latest_step() is not None
  state = build(config, num_classes=num_classes, image_shape=image_shape, total=total,
                abstract=resume)
  state = checkpoint.restore(mngr, state)
  if not resume and config.init_from:
    state = _init_from(state, config.init_from)
  start = int(jax.device_get(state.step))
  if start >= total:
    return state
  # Fresh, restored and fine-tuning states mix committed and uncommitted arrays; the step's
  # outputs are all committed. One placement for all keeps the step at one compile.
  state = jax.device_put(state, jax.devices()[0])
  step_fn = jit_train_step(adversarial=config.adversarial, masked=config.masked,
                           attack=config.attack)
  schedule = make_schedule(config.optimizer, total)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  pending: list[dict] = []
  t0 = time.perf_counter()
  bar = io.progress(total=total, initial=start, desc=desc, unit="step")
  try:
    for step in range(start, total):
      batch = data.batch(batch_indices(n, config.batch_size, config.seed, step))
      state, metrics = step_fn(state, batch)
      pending.append(metrics)
      done = step + 1
      bar.update(1)
      if done % config.log_every == 0 or done == total:
        means = {k: float(np.mean([jax.device_get(m[k]) for m in pending])) for k in pending[0]}
        rate = len(pending) / max(time.perf_counter() - t0, 1e-9)
        io.append_jsonl(metrics_path, {"step": done, **means, "lr": float(schedule(step)),
                                       "steps_per_sec": rate})
        bar.set_postfix(loss=f"{means['loss']:.3f}", acc=f"{means['accuracy']:.3f}")
        pending, t0 = [], time.perf_counter()
      if done == total and config.bn_recalibration_batches and state.batch_stats:
        state = state.replace(batch_stats=_recalibrated(config, state, data, n, total))
      if done % config.checkpoint_every == 0 or done == total:
        checkpoint.save(mngr, state)
      if on_step is not None:
        on_step(done, state, metrics)
  finally:
    bar.close()
    mngr.close()
  return state


def _init_from(state: TrainState, workdir: str) -> TrainState:
  """``state`` with params and batch_stats of the latest checkpoint in ``workdir``."""
  directory = os.path.join(workdir, "checkpoints")
  if checkpoint.latest_step(directory) is None:
    raise ValueError(f"init_from: no checkpoint in {directory}")
  mngr = checkpoint.manager(directory)
  try:
    src = checkpoint.restore(mngr, state)
  finally:
    mngr.close()
  return state.replace(params=src.params, batch_stats=src.batch_stats)


def _recalibrated(config: TrainConfig, state: TrainState, data: ArrayData, n: int,
                  total: int) -> Any:
  """Precise BatchNorm statistics over the batches that steps total, total+1, ... would use."""
  def inputs():
    for j in range(config.bn_recalibration_batches):
      b = data.batch(batch_indices(n, config.batch_size, config.seed, total + j))
      yield jnp.asarray(model_input(b["image"], b["mask"], config.masked))
  return batchnorm.recalibrate(state.apply_fn, state.params, state.batch_stats, inputs())


def restore_final(config: TrainConfig, workdir: str, *, num_classes: int,
                  image_shape: Sequence[int], n: int) -> TrainState | None:
  """The finished state of a run in ``workdir`` or None when it has not finished."""
  total = total_steps(config, n)
  directory = os.path.join(workdir, "checkpoints")
  if checkpoint.latest_step(directory) != total:
    return None
  state = build(config, num_classes=num_classes, image_shape=image_shape, total=total,
                abstract=True)
  mngr = checkpoint.manager(directory)
  try:
    return checkpoint.restore(mngr, state, total)
  finally:
    mngr.close()
