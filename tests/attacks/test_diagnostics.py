"""The reliability checks: each trips on a model built to trip it and stays quiet on a normal one.

Models: the trained TinyCNN (normal), its input quantised to 4 levels (zero gradient almost
everywhere), its logits scaled by 1000 (a saturated softmax: cross-entropy gradients underflow to
exactly 0, the scale-invariant DLR loss still works), a model adding fresh noise to the logits on
every call (random), and a model normalising by batch statistics (batch dependent).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from percadv_jax import attacks as A
from percadv_jax.attacks import core as C
from percadv_jax.attacks import diagnostics as D
from tests.attacks import attack_models as M

N = 64
EPS = 0.06


@pytest.fixture(scope="module")
def setup():
  _, _, f, (x, y) = M.trained_model(steps=200)
  x, y = x[:N], y[:N]
  # A strong reported evaluation: PGD-CE, 40 steps, 3 random restarts.
  xa = A.pgd(f, x, y, key=jax.random.key(1), eps=EPS, step_size=0.25 * EPS, steps=40,
             restarts=3, unroll=1)
  reported = np.asarray(C.correct(f, x, y)) & np.asarray(C.correct(f, xa, y))
  return dict(f=f, x=x, y=y, reported=reported)


def _check_result(r, name):
  assert r["name"] == name and isinstance(r["tripped"], bool) and r["evidence"]
  json.dumps(r)  # plain numbers only: the result goes into results.json files


def test_normal_model_trips_nothing(setup):
  f, x, y = setup["f"], setup["x"], setup["y"]
  res = D.run_all(f, x, y, key=jax.random.key(0), eps=EPS, reported=setup["reported"],
                  options=D.Options(stronger_steps=20, unroll=1))
  assert list(res) == list(D.NAMES)
  for name, r in res.items():
    _check_result(r, name)
    assert not r["tripped"], r["evidence"]
  assert res["large_eps"]["accuracy"] <= 0.02 and res["large_eps"]["clean_accuracy"] > 0.95
  assert res["gradients"]["n_zero"] == 0 and res["gradients"]["n_checked"] == N
  assert res["randomness"]["max_diff"] == 0.0
  assert D.summary(res).startswith("reliability checks passed")


def test_quantised_input_trips_gradients_and_large_eps(setup):
  f, x, y = setup["f"], setup["x"], setup["y"]
  quant = jax.jit(lambda v: f(jnp.round(v * 4) / 4))
  g = D.gradient_check(quant, x, y)
  _check_result(g, "gradients")
  assert g["tripped"] and g["zero_share"] == 1.0 and g["n_nonfinite"] == 0
  big = D.large_eps_check(quant, x, y, unroll=1)
  _check_result(big, "large_eps")
  assert big["tripped"] and big["eps"] == 0.5
  assert big["accuracy"] == big["clean_accuracy"] > 0.5  # PGD cannot move a single example
  line = D.summary([g, big])
  assert line.startswith("reliability flags: gradients:") and "large_eps:" in line


def test_saturated_softmax_trips_gradients_and_stronger_attack(setup):
  f, x, y = setup["f"], setup["x"], setup["y"]
  sat = jax.jit(lambda v: 1000.0 * f(v))
  g = D.gradient_check(sat, x, y)
  assert g["tripped"] and g["zero_share"] > 0.5
  # The margin loss's gradient does not saturate: the same check with it stays quiet.
  assert not D.gradient_check(sat, x, y, loss="margin")["tripped"]
  xa = A.pgd(sat, x, y, key=jax.random.key(1), eps=EPS, step_size=0.25 * EPS, steps=40,
             restarts=3, unroll=1)
  reported = np.asarray(C.correct(sat, x, y)) & np.asarray(C.correct(sat, xa, y))
  r = D.stronger_attack_check(sat, x, y, key=jax.random.key(2), eps=EPS, reported=reported,
                              losses=("dlr",), steps=20, unroll=1)
  _check_result(r, "stronger_attack")
  assert r["tripped"] and r["stronger"] == "apgd-dlr"
  assert r["gap"] > 0.2 and r["stronger_accuracy"] < r["reported_accuracy"]
  # The normal model under the same strong PGD: APGD finds (almost) nothing more.
  quiet = D.stronger_attack_check(f, x, y, key=jax.random.key(2), eps=EPS,
                                  reported=setup["reported"], losses=("dlr",), steps=20,
                                  unroll=1)
  assert not quiet["tripped"], quiet["evidence"]


def test_compare_attacks_counts_examples():
  reported = np.array([1, 1, 1, 1, 0, 1, 1, 1, 1, 1], bool)
  stronger = np.array([1, 0, 1, 0, 1, 1, 1, 1, 1, 1], bool)
  r = D.compare_attacks(reported, stronger, tolerance=0.1)
  assert r["n_broken_only_by_stronger"] == 2 and r["gap"] == pytest.approx(0.2)
  assert r["reported_accuracy"] == pytest.approx(0.9)
  assert r["stronger_accuracy"] == pytest.approx(0.7)
  assert r["tripped"]
  assert not D.compare_attacks(reported, stronger, tolerance=0.2)["tripped"]
  assert not D.compare_attacks(reported, reported)["tripped"]
  with pytest.raises(ValueError, match="same shape"):
    D.compare_attacks(reported, stronger[:5])
  with pytest.raises(ValueError, match="bool"):
    D.compare_attacks(reported.astype(np.float32), stronger)
  with pytest.raises(ValueError, match="tolerance"):
    D.compare_attacks(reported, stronger, tolerance=np.nan)


def test_random_and_batch_dependent_models_trip_randomness(setup):
  f, x = setup["f"], setup["x"]
  rng = np.random.default_rng(0)

  def noisy(v):  # dropout-like: a fresh draw on every call
    return f(v) + jnp.asarray(rng.normal(0.0, 0.5, (v.shape[0], M.NUM_CLASSES)), jnp.float32)

  r = D.randomness_check(noisy, x)
  _check_result(r, "randomness")
  assert r["tripped"] and r["random"] and r["max_diff"] > 0.1

  def batch_norm_train(v):  # BatchNorm in training mode: normalised by the batch's statistics
    z = f(v)
    return (z - z.mean(0)) / (z.std(0) + 1e-3)

  b = D.randomness_check(batch_norm_train, x)
  assert b["tripped"] and not b["random"] and b["batch_dependent"]
  assert "batch" in b["evidence"]
  ok = D.randomness_check(f, x)
  assert not ok["tripped"] and ok["batch_max_diff"] <= 1e-5 * ok["scale"]


def test_nan_model_trips_gradients(setup):
  f, x, y = setup["f"], setup["x"], setup["y"]
  odd = lambda v: (jnp.arange(v.shape[0]) % 2 == 1)[:, None]  # noqa: E731
  # NaN logits (log of a negative number) on the odd examples.
  nan_on_half = jax.jit(lambda v: f(v) + jnp.where(odd(v), jnp.log(v[:, 0, 0, :1] - 2.0), 0.0))
  g = D.gradient_check(nan_on_half, x, y, threshold=0.3)
  assert g["tripped"] and g["n_nonfinite"] == N // 2


def test_diagnostics_bad_input(setup):
  f, x, y = setup["f"], setup["x"], setup["y"]
  with pytest.raises(ValueError, match="y must lie in"):
    D.gradient_check(f, x, np.full(N, 99))
  with pytest.raises(ValueError, match="empty batch"):
    D.gradient_check(f, x[:0], y[:0])
  with pytest.raises(ValueError, match="threshold"):
    D.gradient_check(f, x, y, threshold=1.5)
  with pytest.raises(ValueError, match="max_examples"):
    D.randomness_check(f, x, max_examples=True)
  with pytest.raises(ValueError, match="reported"):
    D.stronger_attack_check(f, x, y, key=jax.random.key(0), eps=EPS, reported=np.ones(3, bool))
