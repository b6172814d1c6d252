"""End to end: CAMs of a small model trained on the synthetic signs land on the sign."""

import flax.linen as nn
import jax
import numpy as np
import optax

from percadv_jax import cam, data
from percadv_jax.models.common import tap
from tests.cam.cam_testlib import numpy_init

NUM_CLASSES = 4


class SignNet(nn.Module):
  num_classes: int
  cam_layer: str = "features"

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Conv(16, (3, 3))(x))
    x = nn.relu(nn.Conv(32, (3, 3), strides=2)(x))
    x = nn.relu(nn.Conv(32, (3, 3), strides=2)(x))
    x = tap(self, "features", x)                       # 8x8 at 32 px
    return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


def test_maps_of_trained_model_land_on_the_sign():
  train = data.to_arrays(data.load("synthetic_signs", split="train", num_examples=512,
                                   num_classes=NUM_CLASSES))
  test = data.to_arrays(data.load("synthetic_signs", split="test", num_examples=64,
                                  num_classes=NUM_CLASSES))
  model = SignNet(NUM_CLASSES)
  params = numpy_init(model, train["image"][:2])["params"]
  opt = optax.adam(3e-3)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss(p):
      logits = model.apply({"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  rng = np.random.default_rng(0)
  losses = []
  for _ in range(250):
    idx = rng.integers(0, len(train["label"]), 64)
    params, opt_state, value = step(params, opt_state, train["image"][idx], train["label"][idx])
    losses.append(float(value))
  variables = {"params": params}
  assert np.mean(losses[-20:]) < np.log(NUM_CLASSES) - 0.1   # it learned something
  acc = np.mean(np.argmax(np.asarray(model.apply(variables, test["image"])), -1)
                == test["label"])
  assert acc > 1.0 / NUM_CLASSES

  for method in ("grad_cam", "layer_cam", "score_cam"):
    maps = cam.compute_cam(method, model, variables, test["image"])
    out = cam.agreement(maps, None, region=test["mask"])
    ratio = float(out["mean"]["perturbation_energy_ratio"])
    assert ratio > 1.0, (method, ratio)                    # better than chance
    assert float(out["mean"]["perturbation_auc"]) > 0.5, method
