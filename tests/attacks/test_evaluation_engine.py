"""robust_accuracy as the one evaluation path: Attack + step rule, eps traced, labels, trust checks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from percadv_jax import attacks as A

K = 4


def _linear(seed=0, quantise=False):
  w = np.random.default_rng(seed).normal(size=(8 * 8 * 3, K)).astype(np.float32)

  def f(x):
    if quantise:  # zero input gradient everywhere: gradient masking by construction
      x = jnp.round(x * 4) / 4
    return x.reshape(x.shape[0], -1) @ w
  return f


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(24, 8, 8, 3)).astype(np.float32)
  y = np.asarray(jnp.argmax(_linear()(x), -1))  # all correct clean
  return x, y


def test_attack_spec_equals_the_explicit_call(data):
  x, y = data
  f, key, eps = _linear(), jax.random.key(3), 4 / 255
  explicit = functools.partial(A.pgd, eps=eps, step_size=2.5 * eps / 5, steps=5)
  r1 = A.robust_accuracy(f, x, y, {"pgd": explicit}, key=key, batch_size=8,
                         return_adversarial=True)
  r2 = A.robust_accuracy(f, x, y, {"pgd": A.Attack("pgd", steps=5)}, key=key, eps=eps,
                         batch_size=8, return_adversarial=True)
  np.testing.assert_allclose(r1["adversarial"]["pgd"], r2["adversarial"]["pgd"], atol=1e-7)
  np.testing.assert_array_equal(r1["flags"]["pgd"], r2["flags"]["pgd"])
  assert A.step_size(8 / 255, 10) == pytest.approx(2 / 255)
  assert r1["clean"] == 1.0 and r1["robust"] < 1.0  # the comparison has something to compare
  assert np.all(r2["linf"]["pgd"] <= eps + 1e-6)


def test_eps_is_traced_and_each_attack_keeps_its_key(data):
  x, y = data
  f, key = _linear(), jax.random.key(5)
  att = {"pgd": A.Attack("pgd", steps=3), "fgsm": A.Attack("fgsm")}
  small = A.robust_accuracy(f, x, y, att, key=key, eps=1 / 255, batch_size=8)
  big = A.robust_accuracy(f, x, y, att, key=key, eps=32 / 255, batch_size=8)
  assert big["robust"] <= small["robust"]
  assert np.all(big["linf"]["fgsm"] <= 32 / 255 + 1e-6)
  assert np.any(big["linf"]["fgsm"] > 1 / 255 + 1e-6)
  alone = A.robust_accuracy(f, x, y, {"pgd": A.Attack("pgd", steps=3)}, key=key, eps=32 / 255,
                            batch_size=8)
  np.testing.assert_array_equal(alone["flags"]["pgd"], big["flags"]["pgd"])


def test_labels_out_of_range_are_refused(data):
  x, y = data
  bad = y.copy()
  bad[1] = 99
  with pytest.raises(ValueError, match=r"y must lie in \[0, 4\)"):
    A.robust_accuracy(_linear(), x, bad, {"pgd": A.Attack("pgd", steps=2)}, eps=0.1,
                      key=jax.random.key(0))
  with pytest.raises(ValueError, match="empty"):
    A.robust_accuracy(_linear(), x[:0], y[:0], {"pgd": A.Attack("pgd")}, eps=0.1)


def test_trust_checks_trip_on_gradient_masking_only(data):
  x, y = data
  opts = {"stronger_steps": 4, "max_examples": 24}
  key = jax.random.key(7)
  att = {"pgd": A.Attack("pgd", steps=3)}
  fq = _linear(quantise=True)
  yq = np.asarray(jnp.argmax(fq(x), -1))
  masked = A.robust_accuracy(fq, x, yq, att, key=key, eps=2 / 255, diagnostics=opts)
  assert masked["diagnostics"]["gradients"]["tripped"]
  assert masked["diagnostics"]["large_eps"]["tripped"]
  assert "gradients" in masked["diagnostics_summary"]
  normal = A.robust_accuracy(_linear(), x, y, att, key=key, eps=2 / 255, diagnostics=opts)
  assert not normal["diagnostics"]["gradients"]["tripped"]
  assert not normal["diagnostics"]["large_eps"]["tripped"]
  assert not normal["diagnostics"]["randomness"]["tripped"]
  with pytest.raises(ValueError, match="diagnostics need"):
    A.robust_accuracy(_linear(), x, y, att, eps=2 / 255, diagnostics=True)
