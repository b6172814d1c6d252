"""The evaluation store: records keyed by what produced them, damaged files named, never reused."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import evaluation
from percadv_jax import attacks

K = 3


def _apply(w, x):
  return x.reshape(x.shape[0], -1) @ w


def _data():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(8, 4, 4, 3)).astype(np.float32)
  return {"image": x, "label": rng.integers(0, K, 8).astype(np.int32),
          "mask": np.ones((8, 4, 4, 1), np.float32)}


def _model(seed):
  w = jnp.asarray(np.random.default_rng(seed).normal(size=(48, K)), jnp.float32)
  return jax.tree_util.Partial(_apply, w)


def test_records_are_keyed_by_the_weights_and_read_back_exactly(tmp_path, monkeypatch):
  store, data = str(tmp_path), _data()
  att = {"pgd": attacks.Attack("pgd", eps=0.05, steps=2)}
  calls = []
  real = attacks.robust_accuracy

  def counting(*a, **kw):
    calls.append(1)
    return real(*a, **kw)
  monkeypatch.setattr(evaluation.attacks_lib, "robust_accuracy", counting)
  spec = {"model": "m", "step": 10}
  first = evaluation.evaluate(store, spec, logits_fn=_model(0), data=data, attacks=att,
                              key=jax.random.key(0), batch_size=8)
  again = evaluation.evaluate(store, spec, logits_fn=_model(0), data=data, attacks=att,
                              key=jax.random.key(0), batch_size=8)
  assert len(calls) == 1  # the same weights: read from disk
  assert again.summary() == first.summary()
  np.testing.assert_array_equal(again.robust, first.robust)
  # Another model under the same description (a checkpoint replaced at the same step).
  other = evaluation.evaluate(store, spec, logits_fn=_model(1), data=data, attacks=att,
                              key=jax.random.key(0), batch_size=8)
  assert len(calls) == 2
  assert not np.array_equal(other.clean, first.clean) or other.summary() != first.summary()
  assert evaluation.weights_hash(_model(0)) != evaluation.weights_hash(_model(1))


def test_damaged_or_foreign_records_are_named(tmp_path):
  store, data = str(tmp_path), _data()
  att = {"pgd": attacks.Attack("pgd", eps=0.05, steps=1)}
  kw = dict(logits_fn=_model(0), data=data, attacks=att, key=jax.random.key(0), batch_size=8)
  evaluation.evaluate(store, {"m": 1}, **kw)
  (npz,) = [os.path.join(store, f) for f in os.listdir(store) if f.endswith(".npz")]
  with open(npz, "wb") as f:
    f.write(b"not a zip")
  with pytest.raises(ValueError, match="corrupt"):
    evaluation.evaluate(store, {"m": 1}, **kw)
  np.savez(npz, something=np.zeros(3))  # a valid npz of another schema
  with pytest.raises(ValueError, match="not an evaluation record"):
    evaluation.evaluate(store, {"m": 1}, **kw)
