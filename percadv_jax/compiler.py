"""How the library compiles the programs that run a model: ``jax.jit`` plus measured XLA options.

``jit(fun, **kwargs)`` is ``jax.jit(fun, compiler_options=OPTIONS, **kwargs)``. Every jitted
program of the library that evaluates a model (the attack cores, the evaluation engine
``parallel.map_examples``, the training steps, the CAMs) is compiled through it; compile your
own model programs with it to get the same speed.

``OPTIONS`` holds the XLA debug options chosen by measurement
(``experiments/benchmarks/conv.py``, figures in ``docs/benchmarks.md``):

- ``xla_cpu_use_fusion_emitters=False``: XLA:CPU's newer fusion emitters compile the backward
  pass of the shifted multiply-add depthwise convolutions (``models.layers.conv_auto``) into
  loop fusions that recompute the forward convolution once per tap of the transposed one. With
  the older emitters the input gradient of MobileNetV2 (forward + backward in one program, as
  in every attack step) takes 0.13 s instead of 0.40 s (alpha 0.5, 64 px, batch 64, one core)
  and 0.77 s instead of 2.45 s (alpha 1.0, 224 px, batch 16), bit for bit the same values. The
  small VGG-19 and the training steps are unchanged (within 3%). The quality-ball ADMM alone is
  about 15% slower with it (0.117 vs 0.101 s, 8 images of 64 px), so ``perceptual.solve_linear``
  and ``perceptual.project`` keep plain ``jax.jit``; inside an attack step the model's gradient
  dominates.

The options are fields of XLA's ``DebugOptions``: other backends accept and ignore the CPU ones.
An ``XLA_FLAGS`` environment variable that names an option leaves that option to it.

``use_cpu_cores()`` makes JAX's CPU backend one device per CPU core (call it before any JAX
operation; the experiment binaries do). The data-parallel evaluation (``parallel.map_examples``,
hence ``attacks.robust_accuracy``) then splits each batch over the cores, which on 2 cores
runs PGD-10 on the small VGG-19 1.41x faster than one device using both cores through XLA's
intra-op threads (0.885 vs 1.247 s, batch 128) and MobileNetV2 1.10x faster.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax

OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}


def use_cpu_cores(count: int | None = None) -> int | None:
  """Gives JAX's CPU backend ``count`` devices (default: the CPUs this process may use).

  Must run before JAX starts (before any JAX operation). Leaves the setting alone when the user
  chose one (``JAX_NUM_CPU_DEVICES`` / ``jax.config.jax_num_cpu_devices``, or
  ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``) or when JAX has already started.

  Returns:
    The device count set, or None when the setting was left alone.
  """
  if count is None:
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  if (jax.config.jax_num_cpu_devices != -1
      or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")):
    return None
  try:
    jax.config.update("jax_num_cpu_devices", int(count))
  except RuntimeError:  # JAX has started: its device count is fixed
    return None
  return int(count)


def options() -> dict[str, Any]:
  """``OPTIONS`` less those the user set in ``XLA_FLAGS`` (read at each call)."""
  flags = os.environ.get("XLA_FLAGS", "")
  return {k: v for k, v in OPTIONS.items() if f"--{k}" not in flags}


def jit(fun: Callable, **kwargs: Any) -> Callable:
  """``jax.jit(fun, **kwargs)`` compiled with ``options()``; same arguments as ``jax.jit``.

  The options are read at each call (one compile per set of options). JAX accepts compiler
  options only on a top-level ``jit``: called with traced arguments (inside an outer ``jit``,
  ``vmap`` or ``grad``) the function is traced as a plain ``jax.jit``, and its ops are compiled
  with the outer program and that program's options.
  """
  extra = kwargs.pop("compiler_options", None) or {}
  plain = jax.jit(fun, **kwargs)
  tuned: dict[tuple, Callable] = {}

  def pick(args, kw) -> Callable:
    opts = {**options(), **extra}
    leaves = jax.tree_util.tree_leaves((args, kw))
    if not opts or any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
      return plain
    key = tuple(sorted(opts.items()))
    if key not in tuned:
      tuned[key] = jax.jit(fun, compiler_options=opts, **kwargs)
    return tuned[key]

  @functools.wraps(fun)
  def call(*args, **kw):
    return pick(args, kw)(*args, **kw)
  call.lower = lambda *args, **kw: pick(args, kw).lower(*args, **kw)
  return call
