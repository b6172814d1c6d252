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


def test_check_labels_range_and_types():
  y = np.array([0, 3, 4, 1])
  checks.check_labels(y, 4, 5)
  checks.check_labels(y, np.int64(4), np.int64(5))  # NumPy integers wherever ints are
  checks.check_labels([0, 3, 4, 1], 4, 5)  # a list of ints
  checks.check_labels(jnp.asarray(y), 4, 5)
  with pytest.raises(ValueError, match=r"y must lie in \[0, 4\) \(the model has 4 classes\), "
                     r"got 4 at index 2 \(1 label\(s\) out of range\)"):
    checks.check_labels(y, 4, 4)
  with pytest.raises(ValueError, match=r"target must lie in \[0, 5\) .*got -1 at index 1"):
    checks.check_labels([8 % 5, -1], 2, 5, "target")
  with pytest.raises(ValueError, match=r"y must have shape \(3,\)"):
    checks.check_labels(y, 3, 5)
  with pytest.raises(ValueError, match="integer class labels, got dtype float"):
    checks.check_labels(y.astype(np.float32), 4, 5)
  with pytest.raises(ValueError, match="integer class labels, got dtype bool"):
    checks.check_labels(y > 1, 4, 5)
  with pytest.raises(ValueError, match="num_classes must be an integer"):
    checks.check_labels(y, 4, True)
  with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
    checks.check_labels(y, 4, 0)
  # Under jit only shapes and dtypes can be checked.
  jax.jit(lambda y: checks.check_labels(y, 4, 2) or y)(jnp.asarray(y))


def test_scalar_checks_are_uniform():
  assert checks.check_int(np.int64(3), "steps", minimum=1) == 3
  assert type(checks.check_int(np.int32(3), "steps")) is int
  assert checks.check_int(np.array(3), "steps") == 3
  for bad in (True, np.bool_(True), 3.0, "3", None, np.float32(3)):
    with pytest.raises(ValueError, match="steps must be an integer"):
      checks.check_int(bad, "steps")
  assert checks.check_float(np.float32(0.5), "tol") == 0.5
  assert checks.check_float(np.int64(2), "tol") == 2.0 and checks.check_float(1, "tol") == 1.0
  for bad, msg in ((True, "a number"), ("0.1", "a number"), (np.nan, "a finite"),
                   (np.float32(np.inf), "a finite"), (-1.0, ">= 0")):
    with pytest.raises(ValueError, match=f"tol must be {msg}"):
      checks.check_float(bad, "tol", minimum=0.0)
  assert checks.check_float(np.inf, "eps", allow_inf=True) == np.inf
  with pytest.raises(ValueError, match=r"rho must be > 0 and <= 1, got 0"):
    checks.check_float(0.0, "rho", minimum=0.0, maximum=1.0, min_inclusive=False)
  assert checks.check_bool(np.bool_(False), "flag") is False
  for bad in (1, 0, "yes", None):
    with pytest.raises(ValueError, match="flag must be True or False"):
      checks.check_bool(bad, "flag")
  checks.check_positive(np.float32(0.1), "tol")
  checks.check_positive(np.int64(2), "n")
  for bad in (True, "1", np.nan, np.inf, 0, -1):
    with pytest.raises(ValueError, match="n must be"):
      checks.check_positive(bad, "n")
  with pytest.raises(ValueError, match=r"x is an empty batch \(shape \(0, 4, 4, 3\)\)"):
    checks.check_images(np.zeros((0, 4, 4, 3), np.float32), allow_empty=False)


def test_get_model_number_types():
  m = get_model("mobilenet_v2", num_classes=np.int64(7), width=np.float32(0.5))
  assert m.num_classes == 7 and type(m.num_classes) is int
  assert m.width == 0.5 and type(m.width) is float
  v = get_model("vgg19", num_classes=3, width=np.int64(1), variant="small",
                batch_norm=np.bool_(True), fc_features=np.int32(16))
  assert type(v.fc_features) is int and v.batch_norm is True
  for kw, msg in [(dict(width=float("inf")), "width must be a finite number"),
                  (dict(width=float("nan")), "width must be a finite number"),
                  (dict(width=True), "width must be a number"),
                  (dict(width=0), "width must be > 0"),
                  (dict(num_classes=True), "num_classes must be an integer"),
                  (dict(num_classes=10.0), "num_classes must be an integer"),
                  (dict(num_classes=0), "num_classes must be an integer >= 1")]:
    with pytest.raises(ValueError, match=msg):
      get_model("mobilenet_v2", **{"num_classes": 10, **kw})
  with pytest.raises(ValueError, match="fc_features must be an integer >= 1"):
    get_model("vgg19", num_classes=3, fc_features=0)
  with pytest.raises(ValueError, match="batch_norm must be True or False"):
    get_model("vgg19", num_classes=3, variant="small", batch_norm=1)


def test_precision_names_and_dtypes():
  from percadv_jax import precision  # pylint: disable=g-import-not-at-top
  assert precision.compute_dtype("bf16") == jnp.bfloat16
  assert precision.compute_dtype(np.float32) == jnp.float32
  assert precision.compute_dtype(jnp.dtype("float16")) == jnp.float16
  for bad in (np.int32, "int8", True, None, object()):
    with pytest.raises(ValueError, match="precision"):
      precision.compute_dtype(bad)
