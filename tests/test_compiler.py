"""percadv_jax.compiler: same values as plain jax.jit, nesting, XLA_FLAGS, and that every model
program of the library is compiled through it."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from percadv_jax import attacks, cam, compiler, parallel
from percadv_jax.models import get_model, random_variables
from percadv_jax.train import steps
from percadv_jax.train.state import create_train_state


@pytest.fixture(scope="module")
def mnv2():
  module = get_model("mobilenet_v2", num_classes=4, width=0.35)
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)), jnp.float32)
  variables = random_variables(module, x[:1])
  y = jnp.asarray([0, 1, 2, 3], jnp.int32)
  return module, variables, x, y


def _input_grad(module, variables, y):
  def loss(x):
    z = module.apply(variables, x)
    return optax.softmax_cross_entropy_with_integer_labels(z, y).sum()
  return jax.grad(loss)


def test_same_values_as_plain_jit_at_top_level_and_nested(mnv2):
  module, variables, x, y = mnv2
  grad = _input_grad(module, variables, y)
  want = np.asarray(jax.jit(grad)(x))
  tol = 1e-5 * np.abs(want).max()  # float32 summation order only (jit vs eager: ~1.4e-6)
  # The shipped options, whatever XLA_FLAGS the suite runs with (tests/conftest.py).
  tuned = compiler.jit(grad, compiler_options=compiler.OPTIONS)
  np.testing.assert_allclose(np.asarray(tuned(x)), want, rtol=0, atol=tol)
  # Inside an outer jit the plain jit is used (JAX refuses options on a nested jit).
  np.testing.assert_allclose(np.asarray(jax.jit(lambda v: tuned(v) * 1.0)(x)), want,
                             rtol=0, atol=tol)


def test_options_leave_what_xla_flags_name(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "")
  assert compiler.options() == compiler.OPTIONS == {"xla_cpu_use_fusion_emitters": False}
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true --xla_foo=1")
  assert "xla_cpu_use_fusion_emitters" not in compiler.options()
  monkeypatch.setenv("XLA_FLAGS", "")
  assert compiler.options() == compiler.OPTIONS


def _bogus(monkeypatch):
  """An option XLA does not know: any program compiled through ``compiler.jit`` now fails."""
  monkeypatch.setattr(compiler, "OPTIONS", {"xla_percadv_no_such_option": True})
  return pytest.raises(Exception, match="xla_percadv_no_such_option")


def test_attacks_engine_cam_and_training_compile_through_it(monkeypatch):
  module = get_model("vgg19", num_classes=4, variant="small", width=0.0625)
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)), jnp.float32)
  variables = random_variables(module, x[:1])
  y = jnp.asarray([0, 1, 2, 3], jnp.int32)
  logits_fn = jax.tree_util.Partial(module.apply, variables)
  with _bogus(monkeypatch):
    attacks.pgd(logits_fn, x, y, eps=0.01, step_size=0.005, steps=2, key=jax.random.key(0))
  with _bogus(monkeypatch):
    parallel.map_examples(lambda v, batch, _: {"z": module.apply(v, batch["image"])}, variables,
                          {"image": x}, batch_size=4)
  with _bogus(monkeypatch):
    cam.compute_cam("grad_cam", module, variables, x)
  state = create_train_state(0, module, optax.sgd(0.1), input_shape=x.shape)
  step = steps.jit_train_step()
  with _bogus(monkeypatch):
    step(state, {"image": x, "label": y})


_DEVICES = """
import sys
from percadv_jax import compiler
first = compiler.use_cpu_cores(int(sys.argv[1]))
import jax
jax.numpy.zeros(1)  # JAX has started: a second call leaves the count alone
print(first, compiler.use_cpu_cores(5), jax.device_count())
"""


@pytest.mark.parametrize("env,want", [
    ({}, "3 None 3"), ({"JAX_NUM_CPU_DEVICES": "1"}, "None None 1"),
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, "None None 2")])
def test_use_cpu_cores_unless_the_user_chose(env, want):
  full = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
  full.update({"JAX_PLATFORMS": "cpu", **env})
  out = subprocess.run([sys.executable, "-c", _DEVICES, "3"], env=full, capture_output=True,
                       text=True, timeout=120, check=True)
  assert out.stdout.strip() == want
