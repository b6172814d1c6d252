"""End to end on a small model trained on the synthetic signs: its CAMs land on the sign, they
pass the sanity checks (a randomised model's CAMs lose the sign; deleting the CAM's top pixels
lowers the true class's score faster than deleting pixels in random order)."""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

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


@pytest.fixture(scope="module")
def trained():
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
  return model, {"params": params}, test, losses


def test_maps_of_trained_model_land_on_the_sign(trained):
  model, variables, test, losses = trained
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


def test_randomised_model_cams_lose_the_sign(trained):
  """Cascading randomisation: the share of the sign inside the CAM's top 20% falls from the
  trained model to the fully re-initialised one, for every fresh draw."""
  model, variables, test, _ = trained
  x, y, mask = test["image"], test["label"], test["mask"][..., 0]
  order = cam.layer_order(model, variables, x)
  trained_share = cam.top_k_energy(mask, cam.grad_cam_pp(model, variables, x, target=y),
                                   fraction=0.2)
  trained_share = float(np.nanmean(np.asarray(trained_share)))
  assert trained_share > 0.2  # above chance
  for seed in (1, 2, 3):
    fresh = numpy_init(model, x[:2], seed=seed)
    r = cam.randomize_top_layers(variables, fresh, order, len(order))
    share = cam.top_k_energy(mask, cam.grad_cam_pp(model, r, x, target=y), fraction=0.2)
    assert float(np.nanmean(np.asarray(share))) < trained_share, seed


def test_deleting_the_cams_top_pixels_drops_the_logit_faster_than_random(trained):
  model, variables, test, _ = trained
  x, y = test["image"], test["label"]
  logits_fn = jax.jit(lambda z: model.apply(variables, z))
  maps = cam.grad_cam_pp(model, variables, x, target=y)
  top = cam.deletion_curve(logits_fn, x, y, maps, steps=8, key=jax.random.key(0))
  rand = cam.deletion_curve(logits_fn, x, y, np.zeros_like(maps), steps=8,
                            key=jax.random.key(1))
  np.testing.assert_allclose(np.asarray(top["logit"][:, 0]), np.asarray(rand["logit"][:, 0]))
  for k in ("logit", "prob"):
    diff = np.asarray(cam.curve_auc(rand[k]) - cam.curve_auc(top[k]))
    assert diff.mean() > 0 and np.mean(diff > 0) > 0.5, (k, diff.mean())
