"""Invariants of FGSM / PGD / APGD on tiny random and trained models.

Guarantees (eps-ball, box, mask), determinism, jit == no-jit, vmap == batch, monotonicity in
steps and eps, APGD at least as strong as PGD, restarts keep the worst case, robust_accuracy's
pointwise worst case, and clear errors on bad input.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from percadv_jax import attacks as A
from percadv_jax.attacks import losses
from tests.attacks import attack_models as M

N = 12
STEPS = 4  # steps of the shared PGD config


@pytest.fixture(scope="module")
def trained():
  _, _, f, (x, y) = M.trained_model(steps=200)
  x, y = x[:128], y[:128]
  assert float(np.mean(np.asarray(jnp.argmax(f(x), 1)) == y)) > 0.95
  return dict(f=f, x=x, y=y)


@pytest.fixture(scope="module")
def rand(trained):
  """N test images (some pixels on the box boundary), random masks, per-example eps and keys."""
  f = trained["f"]
  rng = np.random.default_rng(0)
  x = trained["x"][:N].copy()
  x[0, :2] = 0.0
  x[1, :2] = 1.0
  y = np.asarray(jnp.argmax(f(x), axis=1)).astype(np.int32)
  mask = (rng.uniform(size=(N, M.SIZE, M.SIZE, 1)) < 0.7).astype(np.float32)
  eps = np.linspace(0.05, 0.3, N).astype(np.float32)
  keys = jax.random.split(jax.random.key(3), N)
  return dict(f=f, x=x, y=y, mask=mask, eps=eps, keys=keys)


def _configs(d):
  """(name, attack output, eps, norm, mask) for attacks combining many options."""
  f, x, y, mask, eps, keys = d["f"], d["x"], d["y"], d["mask"], d["eps"], d["keys"]
  targets = (y + 1) % M.NUM_CLASSES
  return [
      ("pgd_linf", A.pgd(f, x, y, key=keys, eps=eps, step_size=eps / 3, steps=STEPS, mask=mask,
                         restarts=2, early_stop=True, loss="margin", unroll=1), eps, "linf",
       mask),
      ("pgd_l2_targeted", A.pgd(f, x, targets, key=jax.random.key(1), eps=eps * 8,
                                step_size=eps * 3, steps=6, norm="l2", mask=mask,
                                targeted=True, random_start=False, unroll=1), eps * 8, "l2",
       mask),
      ("apgd_linf_dlr", A.apgd(f, x, y, eps=eps, steps=8, mask=mask, loss="dlr",
                               random_start=False, unroll=1), eps, "linf", mask),
      ("apgd_l2", A.apgd(f, x, y, eps=eps * 8, steps=8, norm="l2", random_start=False,
                         unroll=1), eps * 8, "l2", None),
      ("fgsm_rs", A.fgsm(f, x, y, key=jax.random.key(4), eps=eps, step_size=1.25 * eps,
                         random_start=True, mask=mask), eps, "linf", mask),
  ]


@pytest.fixture(scope="module")
def outputs(rand):
  return _configs(rand)


def test_guarantees(rand, outputs):
  x = rand["x"]
  for name, xa, eps, norm, mask in outputs:
    xa = np.asarray(xa)
    d = (xa - x).reshape(N, -1)
    dist = np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)
    assert np.all(dist <= eps + 1e-6), name
    assert xa.min() >= 0.0 and xa.max() <= 1.0, name
    if mask is not None:
      outside = np.broadcast_to(mask == 0, x.shape)
      assert np.array_equal(xa[outside], x[outside]), name
    # Each attack really perturbs (inside the mask) and fools the random model sometimes.
    assert np.mean(dist > 0.5 * eps) > 0.5, name
    assert np.mean(np.asarray(jnp.argmax(rand["f"](xa), 1)) != rand["y"]) > 0.2, name


def test_same_key_same_result_and_key_matters(rand, outputs):
  xa = _configs(rand)  # second call: compiled already
  for (name, a, *_), (_, b, *_) in zip(outputs, xa):
    assert np.array_equal(np.asarray(a), np.asarray(b)), name
  f, x, y, eps = rand["f"], rand["x"], rand["y"], rand["eps"]
  c = A.pgd(f, x, y, key=jax.random.split(jax.random.key(99), N), eps=eps, step_size=eps / 3,
            steps=STEPS, mask=rand["mask"], restarts=2, early_stop=True, loss="margin",
            unroll=1)
  assert not np.array_equal(np.asarray(c), np.asarray(outputs[0][1]))


def test_jit_equals_no_jit_and_grad_through_outer_jit(rand, outputs):
  f, x, y, mask, eps, keys = (rand[k] for k in ("f", "x", "y", "mask", "eps", "keys"))

  @jax.jit
  def outer(x, keys):
    xa = A.pgd(f, x, y, key=keys, eps=eps, step_size=eps / 3, steps=STEPS, mask=mask,
               restarts=2, early_stop=True, loss="margin", unroll=1)
    # Like an adversarial train step: a loss at the attack's output, differentiated.
    return xa, jax.grad(lambda v: jnp.sum(f(v) ** 2))(xa)

  xa, g = outer(x, keys)
  ref = np.asarray(outputs[0][1])
  close = np.all((np.abs(np.asarray(xa) - ref) <= 1e-6).reshape(N, -1), axis=1)
  assert close.sum() >= N - 1, close
  assert np.all(np.isfinite(np.asarray(g)))


def test_vmap_over_examples_equals_batch(rand, outputs):
  f, x, y, mask, eps, keys = (rand[k] for k in ("f", "x", "y", "mask", "eps", "keys"))

  def one(xi, yi, mi, ei, ki):
    return A.pgd(f, xi[None], yi[None], key=ki[None], eps=ei[None], step_size=ei / 3,
                 steps=STEPS, mask=mi[None], restarts=2, early_stop=True, loss="margin",
                 unroll=1)[0]

  xv = np.asarray(jax.vmap(one)(x, y, mask, eps, keys))
  ref = np.asarray(outputs[0][1])
  # Batched differently, the arithmetic may round differently (1 ulp); rarely a near-zero
  # gradient then flips sign and that example's later iterates differ.
  close = np.all((np.abs(xv - ref) <= 1e-6).reshape(N, -1), axis=1)
  assert close.sum() >= N - 1, close


def test_restarts_keep_the_worst_case(rand, outputs):
  f, x, y, mask, eps, keys = (rand[k] for k in ("f", "x", "y", "mask", "eps", "keys"))
  one = A.pgd(f, x, y, key=keys, eps=eps, step_size=eps / 3, steps=STEPS, mask=mask, restarts=1,
              early_stop=True, loss="margin", unroll=1)
  fooled_1 = np.asarray(jnp.argmax(f(one), 1)) != y
  fooled_2 = np.asarray(jnp.argmax(f(outputs[0][1]), 1)) != y
  assert np.all(fooled_2 >= fooled_1)  # restart 0 of restarts=2 is the restarts=1 run


def test_monotone_in_steps_and_eps(trained):
  f, x, y = trained["f"], trained["x"], trained["y"]
  success = {}
  for steps in (2, 8):
    for eps in (0.0, 0.03, 0.06, 0.1, 0.2):
      # steps=2 fully unrolled, steps=8 as a loop (the default).
      xa = A.pgd(f, x, y, eps=eps, step_size=max(eps, 1e-3) / 4, steps=steps,
                 random_start=False, early_stop=True, unroll=True if steps == 2 else 1)
      success[steps, eps] = np.asarray(jnp.argmax(f(xa), 1)) != y
  for steps in (2, 8):
    rates = [success[steps, e].mean() for e in (0.0, 0.03, 0.06, 0.1, 0.2)]
    assert rates == sorted(rates), rates
    assert rates[0] == 0.0 and rates[-1] > 0.8
  for eps in (0.03, 0.06, 0.1, 0.2):
    # Early stop runs the same prefix, so success can only grow with steps, per example.
    assert np.all(success[8, eps] >= success[2, eps])


def test_apgd_at_least_as_strong_as_pgd(trained):
  f, x, y = trained["f"], trained["x"], trained["y"]
  eps = 0.06
  pgd_att = A.Attack("pgd", eps=eps, steps=10, step_factor=2.5)
  res = A.robust_accuracy(f, x, y, {"pgd": pgd_att}, key=jax.random.key(0)).summary()
  res_apgd = A.robust_accuracy(
      f, x, y, {"apgd_ce": A.Attack("apgd", eps=eps, steps=10),
                "apgd_dlr": A.Attack("apgd", eps=eps, steps=10, loss="dlr")},
      key=jax.random.key(0)).summary()
  assert 0.2 < res["robust"] < 1.0  # a regime where the comparison means something
  assert res_apgd["robust"] <= res["robust"]
  for name in ("apgd_ce", "apgd_dlr"):
    assert res_apgd["per_attack"][name] <= res["robust"] + 0.02


def test_robust_accuracy_pointwise_worst_case(rand):
  f, x, y = rand["f"], rand["x"], rand["y"]
  # Attack a inverts the images of even labels, attack b mirrors those of labels < 2: each
  # example's output depends only on the example, whatever the batching.
  # Attacks are traced (robust_accuracy runs each in a jitted, sharded function).
  sel_a = lambda y: (y % 2 == 0)[:, None, None, None]
  sel_b = lambda y: (y < 2)[:, None, None, None]
  a = lambda fn, x, y, key=None, mask=None: jnp.where(sel_a(y), 1.0 - x, x)
  b = lambda fn, x, y, key=None, mask=None: jnp.where(sel_b(y), x[:, ::-1, ::-1], x)
  ev = A.robust_accuracy(f, x, y, {"a": a, "b": b}, batch_size=5)
  res = ev.summary()
  flag_a = np.asarray(jnp.argmax(f(a(f, x, jnp.asarray(y))), 1)) == y
  flag_b = np.asarray(jnp.argmax(f(b(f, x, jnp.asarray(y))), 1)) == y
  ok_other = flag_a & flag_b
  assert res["clean"] == 1.0
  np.testing.assert_array_equal(ev.survived["a"], flag_a)
  np.testing.assert_array_equal(ev.survived["b"], flag_b)
  np.testing.assert_array_equal(ev.robust, flag_a & flag_b)
  assert res["robust"] == pytest.approx(np.mean(flag_a & flag_b))
  assert res["per_attack"]["a"] == pytest.approx(flag_a.mean())
  assert not ok_other.all()  # the test can fail
  with pytest.raises(ValueError, match="outside"):
    A.robust_accuracy(f, x, y, {"c": lambda fn, x, y, key=None, mask=None: x + 2.0})


def test_losses_against_numpy():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(6, 5)).astype(np.float32)
  y = rng.integers(0, 5, 6)
  zs = -np.sort(-z, axis=1)
  zy = z[np.arange(6), y]
  other = np.where(np.eye(5, dtype=bool)[y], -np.inf, z).max(1)
  ce = np.log(np.exp(z).sum(1)) - zy
  np.testing.assert_allclose(losses.cross_entropy(z, y), ce, rtol=1e-5)
  np.testing.assert_allclose(losses.cross_entropy(z, y, targeted=True), -ce, rtol=1e-5)
  np.testing.assert_allclose(losses.margin(z, y), other - zy, rtol=1e-5)
  np.testing.assert_allclose(losses.dlr(z, y), -(zy - other) / (zs[:, 0] - zs[:, 2]), rtol=1e-5)
  np.testing.assert_allclose(losses.dlr(z, y, targeted=True),
                             (zy - other) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3])), rtol=1e-5)
  t = (y + 1) % 5
  np.testing.assert_allclose(losses.dlr_targeted(z, y, t),
                             (z[np.arange(6), t] - zy) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3])),
                             rtol=1e-5)
  np.testing.assert_array_equal(losses.is_success(z, y), z.argmax(1) != y)
  with pytest.raises(ValueError, match="at least 3 classes"):
    losses.dlr(z[:, :2], np.zeros(6, int))


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=-0.1), "eps"),
    (dict(steps=0), "steps"),
    (dict(eps=np.ones(3, np.float32)), "eps"),
    (dict(mask=np.ones((N, 4, 4, 1), np.float32)), "mask"),
    (dict(mask=np.full((N, M.SIZE, M.SIZE, 1), 0.5, np.float32)), "0 and 1"),
    (dict(norm="l1"), "norm"),
    (dict(loss="hinge"), "loss"),
    (dict(key=None), "key"),
    (dict(random_start=False, restarts=2), "restarts"),
    (dict(x_scale=2.0), r"\[0, 1\]"),
    (dict(x_nan=True), "NaN"),
    (dict(y_bad=True), "y"),
])
def test_bad_input_raises(rand, kwargs, match):
  f, x, y = rand["f"], rand["x"].copy(), rand["y"]
  kw = dict(key=jax.random.key(0), eps=0.1, step_size=0.01, steps=3)
  if kwargs.pop("x_scale", None):
    x = x * 2.0
  if kwargs.pop("x_nan", None):
    x[0, 0, 0, 0] = np.nan
  if kwargs.pop("y_bad", None):
    y = y + M.NUM_CLASSES
  kw.update(kwargs)
  with pytest.raises(ValueError, match=match):
    A.pgd(f, x, y, **kw)
  kw.pop("step_size")
  if "restarts" not in kwargs:
    with pytest.raises(ValueError, match=match):
      A.apgd(f, x, y, **kw)
