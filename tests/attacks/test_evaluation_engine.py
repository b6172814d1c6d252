"""robust_accuracy as the one evaluation path: Attack, step rule, Evaluation, eps traced, checks."""


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


def test_attack_equals_the_explicit_call(data):
  x, y = data
  f, key, eps = _linear(), jax.random.key(3), 4 / 255
  ev = A.robust_accuracy(f, x, y, {"pgd": A.Attack("pgd", eps=eps, steps=5)}, key=key,
                         batch_size=8, return_adversarial=True)
  # The engine folds the attack's index into the key, then the batch index (one batch of 8
  # examples at a time: the per-example keys come from the batch's key).
  k = jax.random.fold_in(key, 0)
  explicit = np.concatenate([
      np.asarray(A.pgd(f, x[i:i + 8], y[i:i + 8], key=jax.random.fold_in(k, b), eps=eps,
                       step_size=2.5 * eps / 5, steps=5, mask=np.ones((8, 8, 8, 1), np.float32)))
      for b, i in enumerate(range(0, 24, 8))])
  np.testing.assert_allclose(ev.x_adv["pgd"], explicit, atol=1e-7)
  assert A.step_size(8 / 255, 10) == pytest.approx(2 / 255)
  assert A.Attack("pgd", eps=8 / 255, steps=10).step == pytest.approx(2 / 255)
  assert A.Attack("fgsm_rs", eps=0.1).step == pytest.approx(0.125)
  assert ev.clean.all() and ev.robust.mean() < 1.0  # the comparison has something to compare
  assert np.all(ev.linf["pgd"] <= eps + 1e-6)


def test_eps_is_traced_and_each_attack_keeps_its_key(data):
  x, y = data
  f, key = _linear(), jax.random.key(5)

  def att(eps):
    return {"pgd": A.Attack("pgd", eps=eps, steps=3), "fgsm": A.Attack("fgsm", eps=eps)}
  small = A.robust_accuracy(f, x, y, att(1 / 255), key=key, batch_size=8)
  big = A.robust_accuracy(f, x, y, att(32 / 255), key=key, batch_size=8)
  assert big.robust.mean() <= small.robust.mean()
  assert np.all(big.linf["fgsm"] <= 32 / 255 + 1e-6)
  assert np.any(big.linf["fgsm"] > 1 / 255 + 1e-6)
  alone = A.robust_accuracy(f, x, y, {"pgd": A.Attack("pgd", eps=32 / 255, steps=3)}, key=key,
                            batch_size=8)
  np.testing.assert_array_equal(alone.survived["pgd"], big.survived["pgd"])


def test_evaluation_record_round_trips_and_summarises(data):
  x, y = data
  ev = A.robust_accuracy(_linear(), x, y, {"pgd": A.Attack("pgd", eps=8 / 255, steps=3),
                                           "apgd": A.Attack("apgd", eps=8 / 255, steps=3)},
                         key=jax.random.key(2), batch_size=8)
  np.testing.assert_array_equal(ev.robust, ev.clean & ev.survived["pgd"] & ev.survived["apgd"])
  s = ev.summary()
  assert s["n"] == 24 and s["clean"] == ev.clean.mean() and s["robust"] == ev.robust.mean()
  assert s["per_attack"] == {n: ev.survived[n].mean() for n in ("pgd", "apgd")}
  assert s["robust"] <= min(s["per_attack"].values()) <= s["clean"]
  back = A.Evaluation.from_arrays(ev.to_arrays())
  assert back.summary() == s and back.names == ["pgd", "apgd"]
  np.testing.assert_array_equal(back.subset(5).robust, ev.robust[:5])
  broken = ev.to_arrays()
  del broken["linf/apgd"]
  with pytest.raises(ValueError, match="linf"):
    A.Evaluation.from_arrays(broken)


def test_masked_attack_changes_only_the_foreground(data):
  x, y = data
  mask = np.zeros((24, 8, 8, 1), np.float32)
  mask[:, 2:6, 2:6] = 1
  att = {"full": A.Attack("pgd", eps=0.1, steps=2),
         "masked": A.Attack("pgd", eps=0.1, steps=2, masked=True)}
  ev = A.robust_accuracy(_linear(), x, y, att, key=jax.random.key(0), mask=mask,
                         return_adversarial=True)
  outside = np.broadcast_to(mask == 0, x.shape)
  assert np.array_equal(ev.x_adv["masked"][outside], x[outside])
  assert np.abs(ev.x_adv["full"] - x)[outside].max() > 0.09  # the unmasked one uses every pixel
  np.testing.assert_array_equal(A.free_pixels(mask, True, x.shape), mask)
  np.testing.assert_array_equal(A.free_pixels(None, False, x.shape), np.ones_like(mask))
  with pytest.raises(ValueError, match="mask"):
    A.free_pixels(None, True, x.shape)


def test_bad_attacks_are_refused(data):
  x, y = data
  with pytest.raises(ValueError, match="attack kind"):
    A.Attack("bim")
  with pytest.raises(ValueError, match="norm"):
    A.Attack("pgd", norm="l3")
  with pytest.raises(ValueError, match="loss"):
    A.Attack("pgd", loss="hinge")
  with pytest.raises(ValueError, match="eps"):
    A.Attack("pgd", eps=-1.0)
  assert A.Attack("fgsm", steps=10) == A.Attack("fgsm")  # one description per attack
  with pytest.raises(TypeError, match="dict"):
    A.robust_accuracy(_linear(), x, y, [A.Attack("pgd")])
  with pytest.raises(ValueError, match="shape"):
    A.robust_accuracy(_linear(), x, y, {"bad": _Crop()})


class _Crop:
  """An attack with the engine's signature returning the wrong shape."""

  def __call__(self, logits_fn, x, y, *, key=None, mask=None):
    return x[:, :4]

  def __hash__(self):
    return 1

  def __eq__(self, other):
    return isinstance(other, _Crop)


def test_labels_out_of_range_are_refused(data):
  x, y = data
  bad = y.copy()
  bad[1] = 99
  with pytest.raises(ValueError, match=r"y must lie in \[0, 4\)"):
    A.robust_accuracy(_linear(), x, bad, {"pgd": A.Attack("pgd", steps=2)},
                      key=jax.random.key(0))
  with pytest.raises(ValueError, match="empty"):
    A.robust_accuracy(_linear(), x[:0], y[:0], {"pgd": A.Attack("pgd")})


def test_trust_checks_trip_on_gradient_masking_only(data):
  x, y = data
  opts = A.diagnostics.Options(stronger_steps=4, max_examples=24)
  key = jax.random.key(7)
  att = {"pgd": A.Attack("pgd", eps=2 / 255, steps=3)}
  fq = _linear(quantise=True)
  yq = np.asarray(jnp.argmax(fq(x), -1))
  masked = A.robust_accuracy(fq, x, yq, att, key=key, trust_checks=opts)
  assert masked.checks["gradients"]["tripped"]
  assert masked.checks["large_eps"]["tripped"]
  assert "gradients" in masked.summary()["checks"]
  normal = A.robust_accuracy(_linear(), x, y, att, key=key, trust_checks=opts)
  assert not normal.checks["gradients"]["tripped"]
  assert not normal.checks["large_eps"]["tripped"]
  assert not normal.checks["randomness"]["tripped"]
  with pytest.raises(ValueError, match="trust_checks need"):
    A.robust_accuracy(_linear(), x, y, att, trust_checks=A.diagnostics.Options())
  with pytest.raises(TypeError, match="Options"):
    A.robust_accuracy(_linear(), x, y, att, key=key, trust_checks={"steps": 3})
