"""The training loop: ``fit(config, workdir, source)`` with checkpoints, resume and metrics.

Determinism: the model initialisation and the training randomness come from ``config.seed``
(through ``state.key``), and the batch at step ``s`` is a function of ``(seed, s)`` only,
``percadv_jax.data.batch_indices``: epoch ``e = s // steps_per_epoch`` uses the permutation
``numpy.random.default_rng([seed, e])`` of the training set, sliced at ``s % steps_per_epoch``.
A run killed after a checkpoint and restarted therefore replays exactly the batches and keys it
would have seen, and reaches the same final parameters as an uninterrupted run.

Workdir layout: ``config.json`` (the TrainConfig), ``metrics.jsonl``, ``checkpoints/<step>/``
(orbax).

``metrics.jsonl`` holds one record every ``log_every`` steps and at every checkpoint (step, mean
loss and accuracy over the steps since the previous record, learning rate, steps/s), plus the
overfitting guard's records (``"event"``). Since a record never spans a checkpoint, a resumed
run writes the same records as an uninterrupted one: on (re)start, records after the restored
checkpoint's step and a torn last line (a kill during a write) are dropped first.

Catastrophic-overfitting guard (``TrainConfig.guard``; Wong et al. 2020 for FGSM-RS training):
``guard_examples`` training examples are held out of training; after every epoch the model's
PGD-``guard_steps`` accuracy on them is recorded (``{"event": "guard", "guard_pgd_accuracy"}``).
When it falls by more than ``guard_drop`` below the previous epoch's, a
``{"event": "catastrophic_overfitting", ...}`` record is written and the run ends: with
``guard="rollback"`` with the previous epoch's parameters, with ``guard="stop"`` with the current
ones. The final state is saved with ``step = total`` so the workdir counts as finished.

Input: the batches (this process's rows) are gathered :data:`PREFETCH` steps ahead on a
background thread (``percadv_jax.data.source.prefetch``), in the same order, so reading a
split that stays on disk (``percadv_jax.data.cache.CachedSource``) overlaps the steps.

Data parallelism (``TrainConfig.data_parallel``, off by default): the run uses the ``"data"``
mesh of ``percadv_jax.parallel`` over every device of every process (start a multi-process run
with ``parallel.initialize`` first). The state is replicated on every device, each global batch
of ``batch_size`` rows is split along the mesh (each process reads only its rows,
``parallel.local_slice``, and assembles its part with ``parallel.shard_batch``), and the step is
the same ``train_step``, jitted for the mesh: the loss and BatchNorm's batch statistics are means
over the whole global batch, so the compiler all-reduces gradients and statistics, and the run
follows the one-device run up to float summation order (the data order, keys and batch
statistics do not depend on the device count). ``batch_size`` must be a multiple of the device
count (refused otherwise: padding rows would enter BatchNorm's statistics). Checkpoints hold
whole arrays, so a run saved on N devices resumes on M. Process 0 writes ``metrics.jsonl``; every
process takes part in the checkpoints (the workdir must be on a file system they share). Off,
the run stays on the first device (``jax.devices()[0]``) whatever the device count, as the
binaries' one-device-per-core CPU setting would otherwise change the results' rounding.
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

from percadv_jax import attacks, checks, io, models, parallel
from percadv_jax.data.source import batch_indices, prefetch
from percadv_jax.train import checkpoint
from percadv_jax.train.state import (OptimizerConfig, TrainState, create_train_state,
                                     make_optimizer, make_schedule)
from percadv_jax.train import batchnorm
from percadv_jax.train.steps import (PRECISIONS, adversarial_examples, jit_train_step,
                                     make_logits_fn, model_input)


GUARDS = ("off", "stop", "rollback")
# Batches (this process's rows, NumPy) gathered ahead of the step on a background thread: two
# keep the step fed when a batch's reading time varies (our choice; one more costs only memory).
PREFETCH = 2


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
    adversarial: adversarial training with ``attack``.
    masked: the masks paper's masked setting (model sees ``x * mask``).
    attack: the training attack (``attacks.Attack``; Madry's PGD-7 by default); in the masked
      setting it must be masked too (``attack.masked == masked``).
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
    guard: catastrophic-overfitting guard (see the module docstring): "off", "stop" (end the
      run when the held-out PGD accuracy collapses) or "rollback" (end it with the previous
      epoch's parameters).
    guard_examples: training examples held out for the guard (used when ``guard != "off"``).
    guard_steps: steps of the guard's attack: PGD at ``attack.eps`` in ``attack.norm`` with the
      step rule ``attacks.step_size`` (2/255 at eps 8/255 and 10 steps).
    guard_drop: a collapse is a fall of the guard's PGD accuracy (a fraction) by more than this
      below the previous epoch's.
    data_parallel: train on every device of every process, the batch split over them and the
      state replicated (see the module docstring); ``batch_size`` must then be a multiple of
      ``jax.device_count()``. False (the default) trains on the first device only.
    precision: "float32" (the default) or "bfloat16": mixed-precision training steps (bf16
      compute, float32 master weights, optimiser state, BatchNorm statistics and loss; no loss
      scaling, see ``steps.train_step``). The guard and the BatchNorm recalibration evaluate in
      float32.
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
  attack: attacks.Attack = attacks.Attack("pgd", steps=7)
  optimizer: OptimizerConfig = OptimizerConfig()
  checkpoint_every: int = 200
  log_every: int = 20
  keep_checkpoints: int = 2
  bn_recalibration_batches: int = 0
  init_from: str = ""
  guard: str = "off"
  guard_examples: int = 256
  guard_steps: int = 10
  guard_drop: float = 0.2
  data_parallel: bool = False
  precision: str = "float32"

  def validate(self) -> None:
    """Raises ``ValueError`` naming the first field out of range (attack and optimiser too)."""
    checks.check_positive(self.batch_size, "batch_size")
    checks.check_positive(self.epochs, "epochs")
    checks.check_positive(self.steps, "steps", allow_zero=True)
    checks.check_positive(self.checkpoint_every, "checkpoint_every")
    checks.check_positive(self.log_every, "log_every")
    checks.check_positive(self.keep_checkpoints, "keep_checkpoints")
    checks.check_positive(self.bn_recalibration_batches, "bn_recalibration_batches",
                          allow_zero=True)
    checks.check_choice(self.guard, "guard", set(GUARDS))
    checks.check_positive(self.guard_examples, "guard_examples")
    checks.check_positive(self.guard_steps, "guard_steps")
    checks.check_positive(self.guard_drop, "guard_drop")
    checks.check_bool(self.data_parallel, "data_parallel")
    checks.check_choice(self.precision, "precision", set(PRECISIONS))
    if not isinstance(self.attack, attacks.Attack):
      raise TypeError(f"attack must be an attacks.Attack, got {type(self.attack).__name__}")
    if self.adversarial and self.attack.masked != self.masked:
      raise ValueError(f"attack.masked={self.attack.masked} differs from masked={self.masked}: "
                       "in the masked setting the adversary attacks only the foreground")
    self.optimizer.validate()

  def to_dict(self) -> dict:
    """The config as nested plain dicts (JSON-ready; ``from_dict`` reads it back)."""
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, fields: Mapping[str, Any]) -> "TrainConfig":
    """The config of a ``to_dict`` dict (missing fields, also of ``attack`` / ``optimizer``, take
    their defaults)."""
    d = dict(fields)
    d["attack"] = attacks.Attack(**d.get("attack", {}))
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
    """Every example as one batch dict (images [N,H,W,3], masks [N,H,W,1], labels [N])."""
    return self.batch(np.arange(self.n))


def _to_arrays(source: Any, indices: np.ndarray | None) -> dict:
  from percadv_jax import data
  out = data.to_arrays(source, indices=indices)
  return {"image": np.asarray(out["image"], np.float32),
          "mask": np.asarray(out["mask"], np.float32).reshape(out["image"].shape[:3] + (1,)),
          "label": np.asarray(out["label"], np.int32)}


def total_steps(config: TrainConfig, n: int) -> int:
  """Number of optimiser steps of ``config`` on ``n`` training examples."""
  if n < config.batch_size:
    raise ValueError(f"the training set has {n} examples, fewer than batch_size="
                     f"{config.batch_size}")
  return config.steps if config.steps > 0 else config.epochs * (n // config.batch_size)


def build(config: TrainConfig, *, num_classes: int, image_shape: Sequence[int],
          total: int, abstract: bool = False,
          sharding: jax.sharding.Sharding | None = None) -> TrainState:
  """A fresh ``TrainState`` for ``config`` (model from ``get_model``, optax optimiser).

  ``abstract=True`` gives ``jax.ShapeDtypeStruct`` leaves: a restore target that costs no
  initialisation (``checkpoint.restore`` fills in the arrays, placed by ``sharding``: default
  the first device).
  """
  module = _model(config.model, num_classes, tuple(sorted(dict(config.model_kwargs).items())))
  tx = _optimizer(config.optimizer, total)
  return create_train_state(jax.random.PRNGKey(config.seed), module, tx,
                            input_shape=(1, *image_shape), abstract=abstract, sharding=sharding)


@functools.lru_cache(maxsize=16)
def _model(name: str, num_classes: int, kwargs: tuple) -> Any:
  # One module object per architecture, so the jitted steps (whose cache keys include the
  # state's static apply_fn and tx) are reused across runs in one process.
  return models.get_model(name, num_classes=num_classes, **dict(kwargs))


@functools.lru_cache(maxsize=16)
def _optimizer(config: OptimizerConfig, total: int) -> Any:
  return make_optimizer(config, total)


def check_batch_split(config: TrainConfig, *, mesh: jax.sharding.Mesh | None = None) -> None:
  """Checks that ``config.batch_size`` splits over the devices ``fit`` trains on (nothing to
  check without ``data_parallel``); binaries call it before they lock a workdir.

  Args:
    config: the run's configuration.
    mesh: the data-parallel mesh (default ``parallel.make_mesh()``: every device of every
      process).

  Raises:
    ValueError: ``data_parallel`` and a ``batch_size`` that is not a multiple of the device
      count (naming both numbers).
  """
  if not config.data_parallel:
    return
  count = parallel.num_devices(mesh=mesh if mesh is not None else parallel.make_mesh())
  if config.batch_size % count:
    raise ValueError(
        f"batch_size={config.batch_size} does not split over the {count} devices of "
        f"data-parallel training (data_parallel=True uses every device of every process): use "
        f"a batch_size that is a multiple of {count}, or data_parallel=False")


class _Placement:
  """Where a run's arrays live: the first device, or the ``"data"`` mesh of ``data_parallel``.

  Raises:
    ValueError: ``data_parallel`` and a ``batch_size`` that is not a multiple of the device count.
  """

  def __init__(self, config: TrainConfig):
    self.mesh = parallel.make_mesh() if config.data_parallel else None
    if self.mesh is None:
      self.sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
      return
    check_batch_split(config, mesh=self.mesh)
    self.sharding = parallel.replicated_sharding(mesh=self.mesh)

  def state(self, state: TrainState) -> TrainState:
    """``state`` on the first device, or replicated on every device of the mesh."""
    if self.mesh is None:
      return jax.device_put(state, jax.devices()[0])
    return parallel.replicate(state, mesh=self.mesh)

  def local(self, data: ArrayData, indices: np.ndarray) -> dict:
    """This process's rows of the batch of the global example ``indices`` (NumPy arrays: all of
    them on one device, ``parallel.local_slice`` of them with the mesh)."""
    if self.mesh is None:
      return data.batch(indices)
    return data.batch(indices[parallel.local_slice(len(indices))])

  def place(self, local: dict) -> dict:
    """A :meth:`local` batch as the step takes it: as is on one device; with the mesh, global
    arrays split along it."""
    if self.mesh is None:
      return local
    return parallel.shard_batch(local, mesh=self.mesh)

  def batch(self, data: ArrayData, indices: np.ndarray) -> dict:
    """The batch of the global example ``indices`` (:meth:`local`, then :meth:`place`)."""
    return self.place(self.local(data, indices))

  def whole(self, batch: dict) -> dict:
    """A batch every device holds whole (the guard's): device arrays, replicated on the mesh."""
    if self.mesh is None:
      return {k: jnp.asarray(v) for k, v in batch.items()}
    return parallel.replicate(batch, mesh=self.mesh)


def _lock_config(workdir: str, config: TrainConfig) -> None:
  """Locks ``workdir`` to ``config`` (``io.lock_config``); a config.json written before a field
  existed holds that field's default."""
  def with_defaults(stored: dict) -> dict:
    try:
      return TrainConfig.from_dict(stored).to_dict()
    except TypeError:  # a field this version does not know: compared as stored
      return stored
  io.lock_config(workdir, config.to_dict(), upgrade=with_defaults,
                 hold=jax.process_index() == 0)  # the other processes share process 0's run


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
  placement = _Placement(config)
  _lock_config(workdir, config)
  main = parallel.is_main_process()
  data = source if isinstance(source, ArrayData) else ArrayData(source)
  num_classes = num_classes or info_get(data.source, "num_classes")
  if num_classes is None:
    raise ValueError("num_classes is needed when the source has no info.num_classes")
  train_idx, guard_idx = split_guard(config, len(data))
  n = len(train_idx)
  total = total_steps(config, n)
  steps_per_epoch = n // config.batch_size
  image_shape = data.batch(np.arange(1))["image"].shape[1:]
  mngr = checkpoint.manager(os.path.join(workdir, "checkpoints"),
                            max_to_keep=config.keep_checkpoints)
  resume = mngr.latest_step() is not None
  state = build(config, num_classes=num_classes, image_shape=image_shape, total=total,
                abstract=resume, sharding=placement.sharding)
  state = checkpoint.restore(mngr, state)
  if not resume and config.init_from:
    state = _init_from(state, config.init_from)
  start = int(jax.device_get(state.step))
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if main:
    io.drop_records_after(metrics_path, start)
  parallel.sync("percadv_jax.train.fit: metrics")  # others read them after the drop (guard)
  if start >= total:
    mngr.close()
    return state
  # Fresh, restored and fine-tuning states mix committed and uncommitted arrays; the step's
  # outputs are all committed. One placement for all keeps the step at one compile.
  state = placement.state(state)
  step_fn = jit_train_step(adversarial=config.adversarial, masked=config.masked,
                           attack=config.attack, mesh=placement.mesh,
                           precision=config.precision)
  schedule = make_schedule(config.optimizer, total)
  guard = (_Guard(config, placement.whole(data.batch(guard_idx)), write=main)
           if guard_idx is not None else None)
  if guard is not None:
    guard.resume(metrics_path, state, mngr)
  pending: list[dict] = []
  t0 = time.perf_counter()
  bar = io.progress(total=total, initial=start, desc=desc, unit="step")
  host_batches = prefetch(
      (placement.local(data, train_idx[batch_indices(n, config.batch_size, config.seed, step)])
       for step in range(start, total)), PREFETCH)
  try:
    for step in range(start, total):
      batch = placement.place(next(host_batches))
      state, metrics = step_fn(state, batch)
      pending.append(metrics)
      done = step + 1
      bar.update(1)
      if guard is not None and done % steps_per_epoch == 0:
        state, stopped = guard.check(state, done, metrics_path)
        if stopped:
          _flush(metrics_path, pending, done, schedule(step), t0, write=main)
          if config.bn_recalibration_batches and state.batch_stats:
            state = _recalibrated(config, state, data, train_idx, total, placement)
          state = state.replace(step=jnp.asarray(total, jnp.int32))
          checkpoint.save(mngr, state)
          break
      is_ckpt = (done % config.checkpoint_every == 0 or done == total
                 or (guard is not None and done % steps_per_epoch == 0))
      if done % config.log_every == 0 or is_ckpt:
        means = _flush(metrics_path, pending, done, schedule(step), t0, write=main)
        bar.set_postfix(loss=f"{means['loss']:.3f}", acc=f"{means['accuracy']:.3f}")
        pending, t0 = [], time.perf_counter()
      if done == total and config.bn_recalibration_batches and state.batch_stats:
        state = _recalibrated(config, state, data, train_idx, total, placement)
      if is_ckpt:
        checkpoint.save(mngr, state)
      if on_step is not None:
        on_step(done, state, metrics)
  finally:
    host_batches.close()
    bar.close()
    mngr.close()
  return state


def _flush(path: str, pending: list[dict], done: int, lr: Any, t0: float, *,
           write: bool = True) -> dict:
  """The means of the steps in ``pending`` (ending at step ``done``); appends their record when
  ``write`` (process 0)."""
  means = {k: float(np.mean([jax.device_get(m[k]) for m in pending])) for k in pending[0]}
  rate = len(pending) / max(time.perf_counter() - t0, 1e-9)
  if write:
    io.append_jsonl(path, {"step": done, **means, "lr": float(lr), "steps_per_sec": rate})
  return means


def split_guard(config: TrainConfig, n: int) -> tuple[np.ndarray, np.ndarray | None]:
  """(training indices, guard indices or None) of a data set of ``n`` examples.

  Without a guard all ``n`` examples train (``arange(n)``). With one, the guard's
  ``guard_examples`` are the last ones of the permutation ``default_rng([seed, 2**31 - 1])``
  and the training indices the others, in increasing order.
  """
  if config.guard == "off":
    return np.arange(n), None
  if n - config.guard_examples < config.batch_size:
    raise ValueError(f"guard_examples={config.guard_examples} leaves {n - config.guard_examples}"
                     f" of {n} training examples, fewer than batch_size={config.batch_size}")
  perm = np.random.default_rng([config.seed, 2**31 - 1]).permutation(n)
  return np.sort(perm[:n - config.guard_examples]), np.sort(perm[n - config.guard_examples:])


class _Guard:
  """PGD accuracy on the held-out guard batch after each epoch; detects a collapse.

  ``batch`` holds device arrays (replicated in a data-parallel run); ``write``: whether this
  process appends the guard's records (process 0).
  """

  def __init__(self, config: TrainConfig, batch: dict, *, write: bool = True):
    self.config = config
    self.batch = batch
    self.write = write
    self.attack = attacks.Attack("pgd", eps=config.attack.eps, steps=config.guard_steps,
                                 norm=config.attack.norm, masked=config.masked)
    self.key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x6A617264)
    self.previous: tuple[float, TrainState | None] | None = None

  def resume(self, path: str, state: TrainState, mngr: Any) -> None:
    """Recovers the last epoch's guard accuracy (and its checkpoint, if kept) on a restart."""
    records = [r for r in io.read_jsonl(path) if r.get("event") == "guard"]
    if not records:
      return
    step = records[-1]["step"]
    if step == int(jax.device_get(state.step)):
      prev = state
    elif step in mngr.all_steps():
      prev = checkpoint.restore(mngr, state, step)
    else:
      prev = None  # rotated out (keep_checkpoints): a collapse then stops without rollback
    self.previous = (records[-1]["guard_pgd_accuracy"], prev)

  def accuracy(self, state: TrainState) -> float:
    b, masked = self.batch, self.config.masked
    mask = b["mask"] if masked else None
    x_adv = adversarial_examples(state.apply_fn, state.variables(), b["image"], b["label"], mask,
                                 key=self.key, attack=self.attack, masked=masked)
    logits = make_logits_fn(state.apply_fn, state.variables(), mask=mask,
                            masked=masked)(x_adv)
    return float(jnp.mean((jnp.argmax(logits, -1) == b["label"]).astype(jnp.float32)))

  def check(self, state: TrainState, done: int, path: str) -> tuple[TrainState, bool]:
    """Records the epoch's guard accuracy; returns (state to keep, whether the run stops)."""
    acc = self.accuracy(state)
    if self.write:
      io.append_jsonl(path, {"step": done, "event": "guard", "guard_pgd_accuracy": acc})
    prev = self.previous
    if prev is not None and acc < prev[0] - self.config.guard_drop:
      rollback = self.config.guard == "rollback" and prev[1] is not None
      if self.write:
        io.append_jsonl(path, {
            "step": done, "event": "catastrophic_overfitting", "guard_pgd_accuracy": acc,
            "previous_guard_pgd_accuracy": prev[0], "action": "rollback" if rollback else "stop",
            "restored_step": int(jax.device_get(prev[1].step)) if rollback else done})
      return (prev[1] if rollback else state), True
    self.previous = (acc, state)
    return state, False


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


def _recalibrated(config: TrainConfig, state: TrainState, data: ArrayData,
                  train_idx: np.ndarray, total: int, placement: _Placement) -> TrainState:
  """``state`` with precise BatchNorm statistics over the batches that steps total, total+1, ...
  would use (placed as the run's state)."""
  n = len(train_idx)

  def inputs():
    for j in range(config.bn_recalibration_batches):
      b = placement.batch(data, train_idx[batch_indices(n, config.batch_size, config.seed,
                                                        total + j)])
      yield jnp.asarray(model_input(b["image"], b["mask"], config.masked))
  stats = batchnorm.recalibrate(state.apply_fn, state.params, state.batch_stats, inputs())
  return placement.state(state.replace(batch_stats=stats))
