"""Golden test: our PGD against Foolbox 3.3.4's LinfPGD / L2PGD on the same Flax model.

Foolbox (test-only dependency) runs on its JAX backend (``foolbox.JAXModel`` over the same jitted
Flax ``logits_fn``); it works with jax 0.10 as is, no shim needed. Random start off, the same
absolute step size and number of steps, so both compute the same deterministic iterates; only the
sign of a near-zero gradient may differ by float rounding.
"""

import foolbox
import jax.numpy as jnp
import numpy as np
import pytest

from percadv_jax import attacks as A
from tests.attacks import attack_models as M


@pytest.fixture(scope="module")
def setup():
  _, _, f, (x, y) = M.trained_model(steps=200)
  return f, x[:64], y[:64]


def _robust(f, xa, y):
  return float(np.mean(np.asarray(jnp.argmax(f(jnp.asarray(xa)), 1)) == y))


@pytest.mark.parametrize("norm, eps, steps", [("linf", 0.06, 10), ("l2", 0.6, 8)])
def test_pgd_matches_foolbox(setup, norm, eps, steps):
  f, x, y = setup
  step = eps / 4
  cls = foolbox.attacks.LinfPGD if norm == "linf" else foolbox.attacks.L2PGD
  fb_attack = cls(abs_stepsize=step, steps=steps, random_start=False)
  fmodel = foolbox.JAXModel(f, bounds=(0, 1))
  _, fb_adv, fb_success = fb_attack(fmodel, jnp.asarray(x), jnp.asarray(y), epsilons=eps)
  fb_adv = np.asarray(fb_adv)
  ours = np.asarray(A.pgd(f, x, y, eps=eps, step_size=step, steps=steps, norm=norm,
                          random_start=False, unroll=1))
  if norm == "linf":
    assert np.mean(ours == fb_adv) >= 0.99
  else:
    # Continuous steps: float rounding of the norms only (no sign flips), so values are close.
    assert np.mean(np.isclose(ours, fb_adv, atol=1e-4)) >= 0.99
    assert np.abs(ours - fb_adv).max() < 1e-2
  robust = _robust(f, ours, y)
  assert robust == pytest.approx(1.0 - float(np.mean(np.asarray(fb_success))))
  assert robust == pytest.approx(_robust(f, fb_adv, y))
  assert 0.0 < robust < 1.0  # the attack changes some predictions, not all
