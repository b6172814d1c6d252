"""The attacks' guarantees when the model or the arguments misbehave, in and out of ``jit``.

A model returning NaN, a traced negative / NaN eps, a traced non-binary mask: the output still
lies in [0, 1], within eps of x and equal to x outside the mask. Type handling of the scalar
arguments is uniform (NumPy scalars accepted, bools and non-finite numbers refused), an empty
batch is refused, and ``checked`` raises the concrete checks from inside ``jit`` via checkify.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from percadv_jax import attacks as A
from tests.attacks import attack_models as M

N = 6


@pytest.fixture(scope="module")
def setup():
  # A linear model: the properties tested here do not depend on the architecture, and its
  # compiles are fast (each attack configuration compiles once).
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(0.0, 0.3, (M.SIZE * M.SIZE * 3, M.NUM_CLASSES)), jnp.float32)
  f = jax.jit(lambda v: v.reshape(v.shape[0], -1) @ w)
  x, y = M.synthetic_task(N, seed=5)
  mask = (rng.uniform(size=(N, M.SIZE, M.SIZE, 1)) < 0.5).astype(np.float32)
  return dict(f=f, x=x, y=y, mask=mask)


def _attacks(eps, norm="linf"):
  """(name, attack) pairs with every option that takes a step; unroll=1 keeps compiles small."""
  return [
      ("pgd", functools.partial(A.pgd, eps=eps, step_size=eps / 2, steps=3, norm=norm, unroll=1,
                                key=jax.random.key(0))),
      ("fgsm", functools.partial(A.fgsm, eps=eps, norm=norm, random_start=True,
                                 key=jax.random.key(0))),
      ("apgd", functools.partial(A.apgd, eps=eps, steps=3, norm=norm, unroll=1,
                                 key=jax.random.key(0))),
  ]


def _assert_guarantees(xa, x, eps, norm, mask=None, name=""):
  xa = np.asarray(xa)
  assert np.all(np.isfinite(xa)), name
  assert xa.min() >= 0.0 and xa.max() <= 1.0, name
  d = (xa - x).reshape(len(x), -1)
  dist = np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)
  assert np.all(dist <= eps + 1e-6), (name, dist.max())
  if mask is not None:
    out = np.broadcast_to(mask == 0, x.shape)
    assert np.array_equal(xa[out], x[out]), name


def test_nan_model_keeps_the_guarantees(setup):
  f, x, y, mask = setup["f"], setup["x"], setup["y"], setup["mask"]
  odd = np.arange(N) % 2 == 1
  # NaN logits on the odd examples (so NaN gradients there), finite ones elsewhere.
  nan_f = jax.jit(lambda v: f(v) + jnp.where(jnp.asarray(odd)[:, None],
                                             jnp.log(v[:, :1, 0, 0] - 2.0), 0.0))
  # Every attack in Linf, PGD in L2 too (the L2 projection divides by a norm).
  for norm, eps, attacks in (("linf", 0.1, _attacks(0.1)), ("l2", 0.5, _attacks(0.5, "l2")[:1])):
    for name, attack in attacks:
      xa = np.asarray(attack(nan_f, x, y, mask=mask))
      _assert_guarantees(xa, x, eps, norm, mask, name)
      # The finite examples are still attacked (the NaN ones do not poison the batch).
      moved = np.abs(xa - x).reshape(N, -1).max(1) > 0
      assert np.all(moved[~odd]), (name, norm)
  all_nan = jax.jit(lambda v: f(v) * jnp.nan)
  _assert_guarantees(_attacks(0.1)[0][1](all_nan, x, y), x, 0.1, "linf", None, "pgd all NaN")


def test_traced_negative_or_nan_eps_does_not_perturb(setup):
  f, x, y = setup["f"], setup["x"], setup["y"]
  # Per example: a negative (example 0) or NaN (example 1) radius leaves its example alone.
  e = jnp.asarray(np.where(np.arange(N) == 0, -0.2, np.where(np.arange(N) == 1, np.nan, 0.2)),
                  jnp.float32)
  for norm, pick in (("linf", (0, 1, 2)), ("l2", (0,))):
    for i in pick:
      name = _attacks(0.1)[i][0]
      run = jax.jit(lambda x, e, i=i, norm=norm: _attacks(e, norm)[i][1](f, x, y))
      xa = np.asarray(run(x, e))
      assert np.array_equal(xa[:2], x[:2]), (name, norm)
      assert np.all(np.abs(xa[2:] - x[2:]).reshape(N - 2, -1).max(1) > 0), (name, norm)


def test_traced_half_mask_acts_as_zero(setup):
  f, x, y = setup["f"], setup["x"], setup["y"]
  half = np.where(setup["mask"] > 0, 1.0, 0.5).astype(np.float32)  # 1 or 0.5
  for name, attack in _attacks(0.2):
    xa = np.asarray(jax.jit(lambda x, m, attack=attack: attack(f, x, y, mask=m))(x, half))
    fixed = np.broadcast_to(half == 0.5, x.shape)
    assert np.array_equal(xa[fixed], x[fixed]), name
    assert np.abs(xa - x)[~fixed].max() > 0.1, name
    # The same mask given concretely is refused with a clear message.
    with pytest.raises(ValueError, match="0 and 1"):
      attack(f, x, y, mask=half)


def test_checked_raises_inside_jit(setup):
  f, x, y, mask = setup["f"], setup["x"], setup["y"], setup["mask"]
  attack = A.checked(A.pgd)

  @functools.partial(checkify.checkify, errors=checkify.user_checks)
  @jax.jit
  def run(x, y, eps, m):
    return attack(f, x, y, eps=eps, step_size=0.05, steps=2, mask=m, random_start=False,
                  unroll=1)

  err, xa = run(x, y, jnp.float32(0.1), mask)
  assert err.get() is None
  _assert_guarantees(xa, x, 0.1, "linf", mask)
  for args, msg in [((x, y, jnp.float32(-0.1), mask), "eps must be >= 0"),
                    ((x, y, jnp.float32(0.1), mask * 0.5), "mask must contain only 0 and 1"),
                    ((x, (y + 7) % 9, jnp.float32(0.1), mask), r"y must lie in \[0, 4\)"),
                    ((x * 3.0, y, jnp.float32(0.1), mask), r"x must lie in \[0, 1\]")]:
    err, _ = run(*args)
    assert err.get() is not None and msg.replace("\\", "") in err.get(), (msg, err.get())
  # A wrapped attack that breaks a guarantee is caught too.
  bad = A.checked(lambda fn, x, y, *, eps, norm, mask, **kw: jnp.clip(x + 2 * eps, 0, 1))
  err, _ = checkify.checkify(jax.jit(lambda x: bad(f, x, y, eps=0.1)),
                             errors=checkify.user_checks)(x)
  assert "farther than eps" in err.get()


def test_scalar_types_are_uniform(setup):
  f, x, y = setup["f"], setup["x"], setup["y"]
  ref = np.asarray(A.pgd(f, x, y, eps=0.1, step_size=0.05, steps=2, random_start=False,
                         unroll=1))
  same = A.pgd(f, x, y.astype(np.int64), eps=np.float32(0.1), step_size=np.float64(0.05),
               steps=np.int64(2), restarts=np.int32(1), random_start=np.bool_(False),
               unroll=np.int64(1))
  np.testing.assert_array_equal(np.asarray(same), ref)
  A.apgd(f, x, y, eps=np.float32(0.1), steps=np.int64(2), rho=np.float32(0.75),
         momentum=np.float16(0.75), random_start=False, unroll=1)
  A.fgsm(f, x, list(y), eps=np.float32(0.1))
  base = dict(eps=0.1, step_size=0.05, steps=2, random_start=False)
  for kw, msg in [(dict(steps=True), "steps must be an integer"),
                  (dict(steps=2.0), "steps must be an integer"),
                  (dict(steps=np.int64(0)), "steps must be an integer >= 1"),
                  (dict(restarts=False), "restarts"),
                  (dict(eps=True), "eps must be a number"),
                  (dict(eps=np.inf), "eps must be finite"),
                  (dict(eps=np.float32(np.nan)), "eps must be finite"),
                  (dict(eps="0.1"), "eps must be a number"),
                  (dict(eps=[0.1] * N), "eps must be a number or an array"),
                  (dict(step_size=np.int64(0)), "step_size must be finite and > 0"),
                  (dict(random_start=1), "random_start must be True or False"),
                  (dict(early_stop="yes"), "early_stop must be True or False"),
                  (dict(targeted=0), "targeted must be True or False")]:
    with pytest.raises(ValueError, match=msg):
      A.pgd(f, x, y, **{**base, **kw})
  for kw, msg in [(dict(rho=True), "rho must be a number"), (dict(rho=np.nan), "rho"),
                  (dict(momentum=1.5), "momentum must be > 0 and <= 1"),
                  (dict(steps=np.float64(3)), "steps must be an integer")]:
    with pytest.raises(ValueError, match=msg):
      A.apgd(f, x, y, eps=0.1, random_start=False, **kw)


@pytest.mark.parametrize("attack", ["pgd", "fgsm", "apgd"])
def test_empty_batch_and_labels_out_of_range(setup, attack):
  f, x, y = setup["f"], setup["x"], setup["y"]
  fn = {"pgd": functools.partial(A.pgd, step_size=0.05, steps=2), "fgsm": A.fgsm,
        "apgd": functools.partial(A.apgd, steps=2)}[attack]
  with pytest.raises(ValueError, match=r"x is an empty batch \(shape \(0, 8, 8, 3\)\)"):
    fn(f, x[:0], y[:0], eps=0.1, random_start=False)
  for bad, shown in ((99, "99 at index 1"), (-1, "-1 at index 1")):
    yb = y.copy()
    yb[1] = bad
    with pytest.raises(ValueError, match=rf"y must lie in \[0, 4\) .*got {shown}"):
      fn(f, x, yb, eps=0.1, random_start=False)
  with pytest.raises(ValueError, match="y must be integer class labels, got dtype bool"):
    fn(f, x, y > 1, eps=0.1, random_start=False)


def test_library_errors_name_the_argument_before_tracing(setup):
  f, x, y = setup["f"], setup["x"], setup["y"]
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="cannot take images of shape"):
    A.pgd(f, x[..., :1], y, key=key, eps=0.1, step_size=0.05, steps=1)
  with pytest.raises(ValueError, match="step_size is needed"):
    A.pgd(f, x, y, key=key, eps=0.1, step_size=None, steps=1)
  with pytest.raises(ValueError, match="key must be a jax.random key"):
    A.pgd(f, x, y, key=np.zeros(2, np.float32), eps=0.1, step_size=0.05, steps=1)
  with pytest.raises(ValueError, match="steps"):
    A.step_size(8 / 255, 0)
  with pytest.raises(TypeError, match="mesh"):
    A.robust_accuracy(f, x, y, {"pgd": A.Attack("pgd", steps=1)}, key=key, mesh="cpu")
  with pytest.raises(ValueError, match="key"):
    A.diagnostics.run_all(f, x, y, key=None, eps=0.1)
  with pytest.raises(TypeError, match="results"):
    A.diagnostics.summary("all good")
