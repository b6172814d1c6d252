"""Named feature points ("taps") inside Flax models, shared by every model and by CAM.

A model calls ``x = tap(self, "block_16", x)`` at each point users may inspect. A tap:
- sows the activation into the ``"intermediates"`` collection under its name (read it with
  ``module.apply(variables, x, mutable=["intermediates"])``);
- adds a zero ``"perturbations"`` variable of the same shape when that collection is passed to
  ``apply`` (``flax.linen.Module.perturb``), so ``jax.grad`` w.r.t. the perturbation is the
  gradient w.r.t. the activation — one forward and one backward pass, no model rewrite.
It does nothing at ``init`` time, so checkpoints hold only ``params`` and ``batch_stats``.
"""

from __future__ import annotations

import flax.linen as nn
import jax


def tap(module: nn.Module, name: str, x: jax.Array) -> jax.Array:
  """Marks ``x`` as the feature point ``name`` of ``module`` (see module docstring).

  ``x`` is the layer's output, e.g. ``[N,h,w,K]`` features. Returns an array of the same shape:
  ``x`` itself, plus the ``"perturbations"`` variable when that collection is passed to ``apply``.
  """
  if module.is_initializing():
    return x
  x = module.perturb(name, x)
  module.sow("intermediates", name, x, init_fn=tuple, reduce_fn=lambda _, v: v)
  return x
