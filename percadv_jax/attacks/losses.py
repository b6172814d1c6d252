"""Attack objectives (to be *maximised*) and the success criterion, per example.

Every function takes logits ``z`` float [N, K] and integer labels ``y`` int [N] and returns a
float32 [N] objective that the attacker maximises:

- ``"ce"``: untargeted ``CE(z, y)``; targeted (``y`` = target classes) ``-CE(z, t)``.
- ``"margin"`` (Carlini & Wagner): untargeted ``max_{j != y} z_j - z_y``; targeted
  ``z_t - max_{j != t} z_j``. Positive exactly when the attack succeeds (up to ties).
- ``"dlr"`` (Croce & Hein 2020, difference of logits ratio, shift and scale invariant):
  untargeted ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)`` with ``z_pi1 >= z_pi2 >= ...``
  the sorted logits (needs K >= 3); targeted ``(z_t - max_{j != t} z_j) /
  (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` (needs K >= 4). AutoAttack's targeted DLR has the true
  class ``y`` where this has ``argmax_{j != t} z_j``; both agree while ``y`` is the top non-target
  class (e.g. at the start of an attack on a correctly classified point). The API takes only the
  target labels, hence this form.
- ``dlr_targeted(z, y, t)``: AutoAttack's targeted DLR itself (``dlr_loss_targeted``),
  ``(z_t - z_y) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` with both the true class ``y`` and
  the target ``t``: the objective of APGD-T (``percadv_jax.attacks.apgd.apgd_t``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

LOSSES = ("ce", "margin", "dlr")


def _label_logit(z: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.take_along_axis(z, y[:, None].astype(jnp.int32), axis=1)[:, 0]


def _max_other(z: jax.Array, y: jax.Array) -> jax.Array:
  """max_{j != y} z_j, [N]."""
  onehot = jax.nn.one_hot(y, z.shape[1], dtype=bool)
  return jnp.max(jnp.where(onehot, -jnp.inf, z), axis=1)


def cross_entropy(z: jax.Array, y: jax.Array, *, targeted: bool = False) -> jax.Array:
  """Softmax cross-entropy objective, float32 [N] (see module docstring)."""
  z = z.astype(jnp.float32)
  ce = jax.nn.logsumexp(z, axis=1) - _label_logit(z, y)
  return -ce if targeted else ce


def margin(z: jax.Array, y: jax.Array, *, targeted: bool = False) -> jax.Array:
  """Carlini-Wagner margin objective, float32 [N] (see module docstring)."""
  z = z.astype(jnp.float32)
  m = _max_other(z, y) - _label_logit(z, y)
  return -m if targeted else m


def dlr(z: jax.Array, y: jax.Array, *, targeted: bool = False) -> jax.Array:
  """Difference-of-logits-ratio objective, float32 [N] (see module docstring)."""
  z = z.astype(jnp.float32)
  k = z.shape[1]
  if k < (4 if targeted else 3):
    raise ValueError(f"the {'targeted ' if targeted else ''}DLR loss needs at least "
                     f"{4 if targeted else 3} classes, the logits have {k}")
  zs = jnp.sort(z, axis=1)[:, ::-1]
  m = _label_logit(z, y) - _max_other(z, y)
  if targeted:
    return m / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + 1e-12)
  return -m / (zs[:, 0] - zs[:, 2] + 1e-12)


def dlr_targeted(z: jax.Array, y: jax.Array, t: jax.Array) -> jax.Array:
  """AutoAttack's targeted DLR objective, float32 [N] (to maximise; needs K >= 4).

  Args:
    z: logits float [N, K]; y: true labels int [N]; t: target classes int [N].
  """
  z = z.astype(jnp.float32)
  if z.shape[1] < 4:
    raise ValueError(f"the targeted DLR loss needs at least 4 classes, the logits have "
                     f"{z.shape[1]}")
  zs = jnp.sort(z, axis=1)[:, ::-1]
  return (_label_logit(z, t) - _label_logit(z, y)) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3])
                                                      + 1e-12)


def get_loss(name: str) -> Callable[..., jax.Array]:
  """The objective named ``name`` in {"ce", "margin", "dlr"}."""
  return {"ce": cross_entropy, "margin": margin, "dlr": dlr}[name]


def is_success(z: jax.Array, y: jax.Array, *, targeted: bool = False) -> jax.Array:
  """bool [N]: the prediction differs from ``y`` (untargeted) or equals ``y`` (targeted)."""
  pred = jnp.argmax(z, axis=1)
  return pred == y if targeted else pred != y
