"""Training and evaluation: train state, jitted steps, checkpoints, the fit loop.

- ``TrainState`` / ``create_train_state(key, module, tx, *, input_shape)``: the state pytree
  (params, batch_stats, opt_state, step, key).
- ``OptimizerConfig`` / ``make_optimizer`` / ``make_schedule``: optax optimisers and schedules.
- ``train_step`` / ``jit_train_step(*, adversarial, masked, attack)``: natural and adversarial
  steps against an ``attacks.Attack`` (Madry's PGD-k, Wong et al.'s FGSM-RS, ...); ``masked=True``
  is the masks paper's masked setting (the model sees ``x * mask``; the attack, masked too,
  changes only foreground pixels).
- ``TrainConfig`` / ``fit(config, workdir, source)``: the loop with orbax checkpoints every N
  steps, exact resume (the data order ``percadv_jax.data.batch_indices`` is a function of
  (seed, step)), ``metrics.jsonl``, progress, and the catastrophic-overfitting guard
  (``TrainConfig.guard``); ``TrainConfig.data_parallel`` splits each batch over every device of
  every process (off by default), ``TrainConfig.precision="bfloat16"`` trains in mixed precision.

Evaluation is ``percadv_jax.attacks.robust_accuracy`` over ``make_logits_fn(...)``.
"""

from percadv_jax.train import checkpoint
from percadv_jax.train.loop import (GUARDS, ArrayData, TrainConfig, build, check_batch_split,
                                    fit, split_guard, total_steps)
from percadv_jax.train.state import (OptimizerConfig, TrainState, create_train_state,
                                     make_optimizer, make_schedule, make_variables)
from percadv_jax.train.steps import (adversarial_examples, jit_train_step, make_logits_fn,
                                     model_input, train_step)

__all__ = [
    "ArrayData", "GUARDS", "OptimizerConfig", "TrainConfig", "TrainState",
    "adversarial_examples", "build", "check_batch_split", "checkpoint",
    "create_train_state", "fit", "jit_train_step", "make_logits_fn",
    "make_optimizer", "make_schedule", "make_variables", "model_input", "split_guard",
    "total_steps", "train_step",
]
