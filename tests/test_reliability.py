"""Corrupt files and uneven argument types outside the attacks: checkpoints, models, checks."""

import glob
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from percadv_jax import checks
from percadv_jax.models import get_model
from percadv_jax.train import checkpoint
from percadv_jax.train import state as S


class _Linear(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _corrupt(step_dir: str, how: str) -> None:
  files = [p for p in glob.glob(os.path.join(step_dir, "**"), recursive=True)
           if os.path.isfile(p)]
  assert files
  for p in files:
    n = os.path.getsize(p)
    if how == "zeroed":
      with open(p, "r+b") as f:
        f.write(b"\0" * n)
    elif how == "truncated":
      os.truncate(p, n // 2)
    elif how == "data_zeroed" and f"{os.sep}d{os.sep}" in p:  # array data only, metadata intact
      with open(p, "r+b") as f:
        f.write(b"\0" * n)


@pytest.fixture()
def two_steps(tmp_path):
  st = S.create_train_state(0, _Linear(), optax.adam(1e-3), input_shape=(1, 4, 4, 3))
  later = st.replace(step=st.step + 5, params=jax.tree.map(lambda a: a + 1.0, st.params))
  d = str(tmp_path / "checkpoints")
  m = checkpoint.manager(d)
  checkpoint.save(m, st)
  checkpoint.save(m, later)
  m.close()
  return st, later, d


def _params_equal(a, b):
  return all(np.array_equal(np.asarray(u), np.asarray(v))
             for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)))


@pytest.mark.parametrize("how", ["zeroed", "truncated", "data_zeroed"])
def test_corrupt_latest_step_falls_back_to_the_older_one(two_steps, how):
  st, later, d = two_steps
  m = checkpoint.manager(d)
  assert _params_equal(checkpoint.restore(m, st), later)  # intact: the latest
  m.close()
  _corrupt(os.path.join(d, "5"), how)
  m = checkpoint.manager(d)
  with pytest.warns(UserWarning, match=rf"checkpoint step directory {d}/5 is unreadable .*"
                    rf"moved to {d}/5\.corrupt; restored the older step 0"):
    got = checkpoint.restore(m, st)
  assert int(got.step) == 0 and _params_equal(got, st)
  assert m.all_steps() == [0] and os.path.isdir(os.path.join(d, "5.corrupt"))
  # The resumed run can save step 5 again, and it restores.
  checkpoint.save(m, later)
  m.close()
  m = checkpoint.manager(d)
  assert _params_equal(checkpoint.restore(m, st), later)
  m.close()


def test_no_intact_step_is_one_clear_error(two_steps):
  st, _, d = two_steps
  _corrupt(os.path.join(d, "5"), "zeroed")
  _corrupt(os.path.join(d, "0"), "truncated")
  m = checkpoint.manager(d)
  with pytest.raises(ValueError, match=rf"^no intact checkpoint in {d}: step\(s\) 5, 0 cannot "
                     r"be restored \(step 5: ") as e:
    checkpoint.restore(m, st)
  assert "\n" not in str(e.value) and e.value.__suppress_context__
  with pytest.raises(ValueError, match=rf"^checkpoint step 0 at {d}/0 cannot be restored"):
    checkpoint.restore(m, st, 0)
  m.close()
