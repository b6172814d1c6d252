"""The train state pytree, optax optimisers and learning-rate schedules.

A ``TrainState`` holds everything a run needs to continue bit for bit: ``step``, ``params``,
``batch_stats`` (BatchNorm running statistics; ``{}`` for models without BatchNorm),
``opt_state`` and ``key`` (a raw ``uint32[2]`` PRNG key, split once per step, so a restored state
continues the same random stream). ``apply_fn`` and ``tx`` are static (not saved).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from percadv_jax import checks


class TrainState(train_state.TrainState):
  """``flax.training.train_state.TrainState`` plus ``batch_stats`` and ``key``.

  Attributes:
    step: int32 scalar, number of optimizer updates applied.
    params: model parameters (pytree of float32 arrays).
    batch_stats: BatchNorm statistics (pytree; ``{}`` if the model has none).
    opt_state: optax state of ``tx``.
    key: ``uint32[2]`` raw PRNG key; each train step splits it.
  """
  batch_stats: Any = None
  key: jax.Array = None

  def variables(self) -> dict:
    """The ``variables`` dict for ``module.apply`` (params and, if any, batch_stats)."""
    return make_variables(self.params, self.batch_stats)


def make_variables(params: Any, batch_stats: Any) -> dict:
  """``{"params": params}`` plus ``"batch_stats"`` when the model has BatchNorm statistics."""
  out = {"params": params}
  if batch_stats:
    out["batch_stats"] = batch_stats
  return out


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimiser and schedule hyper-parameters (see ``make_optimizer``).

  Attributes:
    name: "sgd" (heavy-ball ``momentum``), "adam" or "adamw".
    learning_rate: peak learning rate.
    schedule: "constant", "cosine" (warmup then cosine decay to 0) or "piecewise" (warmup then
      x0.1 at 50% and 75% of training, Madry's CIFAR schedule shape).
    warmup_steps: linear warm-up steps from 0 to ``learning_rate``.
    momentum: SGD momentum.
    weight_decay: L2 decay (added to the gradient for sgd/adam; decoupled for adamw).
    grad_clip: global-norm gradient clipping (0 disables it).
  """
  name: str = "adam"
  learning_rate: float = 1e-3
  schedule: str = "cosine"
  warmup_steps: int = 0
  momentum: float = 0.9
  weight_decay: float = 0.0
  grad_clip: float = 0.0

  def validate(self) -> None:
    """Raises ``ValueError`` naming the first field out of range (unknown name or schedule, ...)."""
    checks.check_choice(self.name, "optimizer", {"sgd", "adam", "adamw"})
    checks.check_choice(self.schedule, "schedule", {"constant", "cosine", "piecewise"})
    checks.check_positive(self.learning_rate, "learning_rate")
    checks.check_positive(self.warmup_steps, "warmup_steps", allow_zero=True)
    checks.check_positive(self.weight_decay, "weight_decay", allow_zero=True)
    checks.check_positive(self.grad_clip, "grad_clip", allow_zero=True)


def make_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
  """The learning-rate schedule of ``cfg`` over ``total_steps`` updates."""
  lr, warm = cfg.learning_rate, int(min(cfg.warmup_steps, max(total_steps - 1, 0)))
  if cfg.schedule == "constant":
    main = optax.constant_schedule(lr)
    decay_steps = 1
  elif cfg.schedule == "cosine":
    decay_steps = max(total_steps - warm, 1)
    main = optax.cosine_decay_schedule(lr, decay_steps)
  else:
    decay_steps = max(total_steps - warm, 1)
    main = optax.piecewise_constant_schedule(
        lr, {int(0.5 * decay_steps): 0.1, int(0.75 * decay_steps): 0.1})
  del decay_steps
  if warm == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), main], [warm])


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
  """An optax chain for ``cfg``: optional clipping, decay, the optimiser at the scheduled lr."""
  cfg.validate()
  schedule = make_schedule(cfg, total_steps)
  parts = []
  if cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip))
  if cfg.name == "adamw":
    parts.append(optax.adamw(schedule, weight_decay=cfg.weight_decay))
  else:
    if cfg.weight_decay > 0:
      parts.append(optax.add_decayed_weights(cfg.weight_decay))
    if cfg.name == "sgd":
      parts.append(optax.sgd(schedule, momentum=cfg.momentum or None))
    else:
      parts.append(optax.adam(schedule))
  return optax.chain(*parts)


def _raw_key(key: Any) -> jax.Array:
  if isinstance(key, int):
    return jax.random.PRNGKey(key)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key)
  return jnp.asarray(key, jnp.uint32)


def create_train_state(key: Any, module: nn.Module, tx: optax.GradientTransformation, *,
                       input_shape: tuple[int, ...], abstract: bool = False,
                       sharding: jax.sharding.Sharding | None = None) -> TrainState:
  """Initialises ``module`` on zeros of ``input_shape`` (NHWC, float32) and builds the state.

  Args:
    key: PRNG key (typed or raw ``uint32[2]``) or an int seed. One half initialises the model,
      the other half becomes ``state.key`` for the training randomness.
    module: a Flax module with ``apply(variables, x, train=...)``.
    tx: the optax optimiser.
    input_shape: ``(N, H, W, 3)``; ``N`` may be 1.
    abstract: return a state of ``jax.ShapeDtypeStruct`` leaves (no initialisation compiled or
      run): the restore target for a checkpoint.
    sharding: where the abstract leaves say their arrays live, hence where a checkpoint restores
      them (default: the first device; data-parallel training passes the replicated sharding of
      its mesh). Ignored unless ``abstract``.

  Returns:
    A ``TrainState`` at step 0.
  """
  key = _raw_key(key)
  init_key, train_key = jax.random.split(key)
  init = _jit_init(module, tuple(input_shape))
  if abstract:
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    def spec(a):
      return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding)
    variables = dict(jax.tree.map(spec, jax.eval_shape(init, init_key)))
    params = variables.pop("params")
    opt_state = jax.tree.map(spec, jax.eval_shape(tx.init, params))
    step = spec(jax.ShapeDtypeStruct((), jnp.int32))
  else:
    variables = dict(_compiled_init(module, tuple(input_shape))(init_key))
    params = variables.pop("params")
    opt_state = tx.init(params)
    # A strongly typed int32 step, as a restored checkpoint has it: same jit cache entry.
    step = jnp.zeros((), jnp.int32)
  batch_stats = variables.pop("batch_stats", {})
  return TrainState(step=step, apply_fn=module.apply, params=params, tx=tx,
                    opt_state=opt_state, batch_stats=batch_stats, key=train_key)


@functools.lru_cache(maxsize=16)
def _jit_init(module: nn.Module, input_shape: tuple[int, ...]):
  """``key -> variables`` of ``module`` on zeros of ``input_shape`` (jitted)."""
  return jax.jit(lambda k: module.init(k, jnp.zeros(input_shape, jnp.float32), train=False))


@functools.lru_cache(maxsize=16)
def _compiled_init(module: nn.Module, input_shape: tuple[int, ...]):
  """``_jit_init`` compiled once per pair for a raw ``uint32[2]`` key.

  The initialisers are random-number code that XLA:CPU spends seconds optimising (VGG-19 6-12 s,
  MobileNetV2 13 s) to run once in milliseconds; on the CPU it is compiled unoptimised (4-5x
  faster to compile, the same values up to float rounding, about 1 ulp).
  """
  options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
  return _jit_init(module, input_shape).lower(
      jax.ShapeDtypeStruct((2,), jnp.uint32)).compile(compiler_options=options)


def state_arrays(state: TrainState) -> Mapping[str, Any]:
  """The saved part of ``state`` (no functions) as a plain dict pytree."""
  return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats,
          "opt_state": state.opt_state, "key": state.key}


def with_arrays(state: TrainState, arrays: Mapping[str, Any]) -> TrainState:
  """``state`` with its saved fields replaced by ``arrays`` (from ``state_arrays``)."""
  return state.replace(step=arrays["step"], params=arrays["params"],
                       batch_stats=arrays["batch_stats"], opt_state=arrays["opt_state"],
                       key=arrays["key"])

