"""Mixed precision: bf16 compute agrees with float32 within the stated tolerance; dtypes flow."""

import jax
import jax.numpy as jnp
import optax
import pytest

from percadv_jax import precision
from tests.parallel import _tiny


@pytest.fixture(scope="module")
def setup():
  module, variables = _tiny.init_variables(seed=0)
  data = _tiny.toy_data(16, seed=2)
  return module, variables, data


def test_logits_and_input_gradients_agree(setup):
  module, variables, data = setup
  x, y = jnp.asarray(data["image"]), jnp.asarray(data["label"])
  f32 = lambda x: module.apply(variables, x, train=False)  # noqa: E731
  bf16 = precision.mixed_precision_logits_fn(module.apply, variables, train=False)
  l32, l16 = jax.jit(f32)(x), jax.jit(bf16)(x)
  assert l16.dtype == jnp.float32
  rel = float(jnp.max(jnp.abs(l32 - l16)) / jnp.max(jnp.abs(l32)))
  assert rel <= precision.BF16_LOGIT_RTOL
  assert rel > 0  # bf16 really ran: results are not bit-identical to float32

  def loss(fn):
    return lambda x: optax.softmax_cross_entropy_with_integer_labels(fn(x), y).sum()
  g32, g16 = jax.jit(jax.grad(loss(f32)))(x), jax.jit(jax.grad(loss(bf16)))(x)
  assert g16.dtype == jnp.float32
  cos = float(jnp.vdot(g32, g16) / (jnp.linalg.norm(g32) * jnp.linalg.norm(g16)))
  assert cos >= precision.BF16_GRAD_COSINE


def test_training_update_stays_float32_and_close(setup):
  module, variables, data = setup
  x, y = jnp.asarray(data["image"]), jnp.asarray(data["label"])

  @jax.jit
  def step32():
    return step(module.apply)

  @jax.jit
  def step16():
    return step(precision.mixed_precision(module.apply))

  def step(apply_fn):
    def loss_fn(params):
      logits, upd = apply_fn({"params": params, "batch_stats": variables["batch_stats"]}, x,
                             train=True, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd
    (l, upd), g = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    return l, upd, g

  l32, u32, g32 = step32()
  l16, u16, g16 = step16()
  for leaf in jax.tree.leaves((l16, u16, g16)):
    assert leaf.dtype == jnp.float32
  assert abs(float(l32 - l16)) <= precision.BF16_LOGIT_RTOL * float(l32)
  flat32 = jnp.concatenate([a.ravel() for a in jax.tree.leaves(g32)])
  flat16 = jnp.concatenate([a.ravel() for a in jax.tree.leaves(g16)])
  cos = float(jnp.vdot(flat32, flat16) / (jnp.linalg.norm(flat32) * jnp.linalg.norm(flat16)))
  assert cos >= precision.BF16_GRAD_COSINE


def test_bf16_really_computes_in_bf16_and_f32_is_identity(setup):
  module, variables, _ = setup
  seen = []

  def spy(v, x):
    seen.append((x.dtype, jax.tree.leaves(v)[0].dtype))
    return module.apply(v, x, train=False)
  jax.eval_shape(precision.mixed_precision(spy), variables, jnp.zeros((1, 8, 8, 3)))
  assert seen == [(jnp.bfloat16, jnp.bfloat16)]
  apply = module.apply
  assert precision.mixed_precision(apply, dtype="float32") is apply
  labels = jnp.array([1, 2], jnp.int32)
  assert precision.cast_floating(labels, jnp.bfloat16).dtype == jnp.int32
  with pytest.raises(ValueError, match="unknown precision"):
    precision.compute_dtype("int8")
