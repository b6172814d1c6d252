"""Jitted train and eval steps: natural, adversarial (Madry PGD-k) and the masked setting.

One code path covers the masks paper's four models {full, masked} x {natural, adversarial}:

- ``masked=False``: the model sees ``x``; the adversary may change every pixel.
- ``masked=True``: the model sees ``x * mask`` (the background is removed before
  classification); the adversary attacks ``x * mask`` with ``pgd(..., mask=mask)``, so it may
  change only foreground pixels, and the model again sees its input times the mask.
- ``adversarial=True``: each batch is replaced by its adversarial version under an
  ``attacks.Attack`` (Madry et al.'s PGD-k with ``Attack("pgd", ...)``, Wong et al.'s FGSM-RS with
  ``Attack("fgsm_rs", ...)``), found with BatchNorm in eval mode (``train=False``: running
  statistics, no updates); the parameter update then runs in train mode on the adversarial
  batch. In the masked setting the attack must be masked (``Attack(masked=True)``).

Batches are dicts ``{"image": float32 [B,H,W,3] in [0,1], "mask": float32 [B,H,W,1] in {0,1},
"label": int32 [B]}`` as ``percadv_jax.data.batches`` yields them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, Sharding

from percadv_jax import attacks, checks, compiler, parallel, precision as mixed
from percadv_jax.train.state import TrainState, make_variables


def model_input(x: jax.Array, mask: jax.Array | None, masked: bool) -> jax.Array:
  """What the model sees: ``x * mask`` in the masked setting, else ``x`` ([N,H,W,3])."""
  return x * mask if masked else x


def _logits_of(apply_fn: Callable, masked: bool) -> Callable:
  def logits(variables, mask, x):
    return apply_fn(variables, model_input(x, mask, masked), train=False)
  return logits


@functools.lru_cache(maxsize=64)
def _cached_logits_of(model: Any, masked: bool) -> Callable:
  return _logits_of(model.apply if isinstance(model, nn.Module) else model, masked)


def _eval_apply(apply_fn: Callable, masked: bool) -> Callable:
  """The eval-mode function of ``make_logits_fn``'s ``Partial``, one object per model and
  setting; for a Flax ``module.apply`` one per equal module, so that models built apart with
  the same fields (e.g. one per seed) share the compiled attacks, CAMs and evaluations."""
  module = getattr(apply_fn, "__self__", None)
  is_apply = isinstance(module, nn.Module) and getattr(apply_fn, "__name__", "") == "apply"
  try:
    return _cached_logits_of(module if is_apply else apply_fn, masked)
  except TypeError:  # unhashable (a module with an unhashable field): its own function
    return _logits_of(apply_fn, masked)


def make_logits_fn(apply_fn: Callable, variables: Any, *, mask: jax.Array | None = None,
                   masked: bool = False) -> Callable[[jax.Array], jax.Array]:
  """``x [N,H,W,3] -> logits [N,K]`` in eval mode (BatchNorm running statistics).

  In the masked setting the model input is ``x * mask`` (a no-op on images that are already zero
  outside the mask, and it makes the gradient zero there). The result is a
  ``jax.tree_util.Partial`` over ``(variables, mask)``: the attacks trace them as inputs, so
  every model of one architecture shares one compiled attack.
  """
  return jax.tree_util.Partial(_eval_apply(apply_fn, masked), variables, mask)


def adversarial_examples(apply_fn: Callable, variables: Any, x: jax.Array, y: jax.Array,
                         mask: jax.Array | None, *, key: jax.Array, attack: attacks.Attack,
                         masked: bool) -> jax.Array:
  """Adversarial versions of the model inputs under ``attack`` (eval-mode model).

  Args:
    apply_fn, variables: the model (``apply_fn(variables, x, train=False) -> logits``).
    x: float32 [N,H,W,3] in [0,1], clean images (unmasked).
    y: int32 [N] labels.
    mask: float32 [N,H,W,1] in {0,1} foreground masks (required when ``masked``).
    key: PRNG key for the random start.
    attack: the training attack; it changes the pixels ``attacks.free_pixels(mask,
      attack.masked)`` frees.
    masked: the masks paper's masked setting of the model (see module docstring).

  Returns:
    float32 [N,H,W,3] in [0,1]: the adversarial *model-space* images; in the masked setting they
    are zero outside the mask and differ from ``x * mask`` only on the foreground.
  """
  x0 = model_input(x, mask, masked)
  logits_fn = make_logits_fn(apply_fn, variables, mask=mask, masked=masked)
  return jax.lax.stop_gradient(attack(logits_fn, x0, y, key=key, mask=mask))


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of logits [N,K] (float32) and integer labels [N]."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


PRECISIONS = ("float32", "bfloat16")


@functools.lru_cache(maxsize=64)
def _compute_in(apply_fn: Callable, precision: str) -> Callable:
  """``apply_fn`` computing in ``precision`` (``percadv_jax.precision.mixed_precision``: float32
  in and out; for "float32" ``apply_fn`` itself), one wrapper per pair so caches keyed on the
  function keep hitting."""
  checks.check_choice(precision, "precision", PRECISIONS)
  return mixed.mixed_precision(apply_fn, dtype=precision)


def train_step(state: TrainState, batch: dict, *, adversarial: bool = False,
               masked: bool = False, attack: attacks.Attack = attacks.Attack("pgd", steps=7),
               precision: str = "float32") -> tuple[TrainState, dict]:
  """One optimiser update (pure; jit it with ``jit_train_step``).

  Args:
    state: the train state; its ``key`` is split for the attack's random start and dropout.
    batch: ``{"image": [B,H,W,3], "mask": [B,H,W,1], "label": [B]}`` (see module docstring).
    adversarial: adversarial training with ``attack``.
    masked: the masked setting (model sees ``x * mask``).
    attack: the training attack (ignored unless ``adversarial``).
    precision: "float32", or "bfloat16" for mixed precision: the model (in the attack and in
      the update) computes in bfloat16 on bfloat16 copies of the parameters and inputs, while
      the parameters, optimiser state, BatchNorm statistics, perturbations, logits and loss stay
      float32 (``percadv_jax.precision``). No loss scaling: bfloat16 has float32's exponent
      range, so small gradients do not underflow as in float16 (which is not offered).

  Returns:
    ``(new_state, metrics)`` with scalar float32 metrics ``loss`` and ``accuracy`` (on the
    batch the update used: adversarial accuracy when ``adversarial``).
  """
  key, attack_key, dropout_key = jax.random.split(state.key, 3)
  x, y, mask = batch["image"], batch["label"], batch.get("mask")
  apply_fn = _compute_in(state.apply_fn, precision)
  if adversarial:
    x_in = adversarial_examples(apply_fn, state.variables(), x, y, mask, key=attack_key,
                                attack=attack, masked=masked)
  else:
    x_in = model_input(x, mask, masked)
  x_in = model_input(x_in, mask, masked)

  def loss_fn(params):
    logits, updates = apply_fn(make_variables(params, state.batch_stats), x_in, train=True,
                               mutable=["batch_stats"], rngs={"dropout": dropout_key})
    return cross_entropy(logits, y), (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads)
  new_state = new_state.replace(batch_stats=updates.get("batch_stats", state.batch_stats),
                                key=key)
  accuracy = jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
  return new_state, {"loss": loss, "accuracy": accuracy}


def jit_train_step(*, adversarial: bool = False, masked: bool = False,
                   attack: attacks.Attack = attacks.Attack("pgd", steps=7),
                   mesh: Mesh | None = None, precision: str = "float32") -> Callable:
  """``train_step`` with its static hyper-parameters bound, jitted: ``(state, batch) -> ...``.

  The full-image setting runs the masked step with a mask of ones (``x * 1 == x`` and a mask of
  ones changes nothing in an attack, bit for bit), so the full and masked models share one
  compile. The attack's setting must be the model's (``attack.masked == masked``).

  With a ``mesh`` (``percadv_jax.parallel.make_mesh``) the step is data-parallel: it takes and
  returns the state replicated on every device of the mesh (``parallel.replicate``) and takes the
  batch split along its ``"data"`` axis (``parallel.shard_batch``); the metrics come back
  replicated. The program is the same ``train_step``: the loss and BatchNorm's batch statistics
  are means over the whole global batch, so the compiler all-reduces the gradient and the
  statistics across devices, and the values equal the one-device step's up to float summation
  order. Without a mesh the step runs where its arguments are (one device). ``precision``: see
  ``train_step``.
  """
  if adversarial and attack.masked != masked:
    raise ValueError(f"the training attack's masked={attack.masked} differs from the model's "
                     f"masked={masked}: the masked setting attacks only the foreground")
  checks.check_choice(precision, "precision", PRECISIONS)
  step = _jit_masked_step(adversarial, dataclasses.replace(attack, masked=True), mesh,
                          precision)
  if masked:
    return step
  ones_sharding = None if mesh is None else parallel.data_sharding(mesh=mesh)

  def full_step(state, batch):
    shape = tuple(np.shape(batch["image"])[:-1]) + (1,)
    return step(state, {**batch, "mask": _ones(shape, ones_sharding)})
  return full_step


@functools.lru_cache(maxsize=8)
def _ones(shape: tuple[int, ...], sharding: Sharding | None = None) -> jax.Array:
  """A device array of ones (made once per shape, not copied to the device every step), split
  like the batch when ``sharding`` is given (made on the devices, so every process can)."""
  if sharding is None:
    return jnp.ones(shape, jnp.float32)
  return jax.jit(lambda: jnp.ones(shape, jnp.float32), out_shardings=sharding)()


@functools.lru_cache(maxsize=32)
def _jit_masked_step(adversarial: bool, attack: attacks.Attack, mesh: Mesh | None,
                     precision: str) -> Callable:
  def step(state, batch):
    return train_step(state, batch, adversarial=adversarial, masked=True, attack=attack,
                      precision=precision)
  if mesh is None:
    return compiler.jit(step)
  replicated = parallel.replicated_sharding(mesh=mesh)
  return compiler.jit(step, in_shardings=(replicated, parallel.data_sharding(mesh=mesh)),
                      out_shardings=(replicated, replicated))
