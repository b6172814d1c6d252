"""Sanity-check pieces: layer order and cascading randomisation, smooth random maps, deletion
curves, against hand computations and invariants (the trained-model checks are in
test_cam_signs.py)."""

import flax.linen as nn
from flax.traverse_util import flatten_dict
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from percadv_jax import cam
from percadv_jax.models import get_model, random_variables
from percadv_jax.models.common import tap
from tests.cam.cam_testlib import TinyCNN, numpy_init


class Block(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
    x = tap(self, "mid", x)
    return nn.BatchNorm(use_running_average=True, name="bn")(x)


class NestedNet(nn.Module):
  """stem -> inner (conv, tap "inner/mid", bn) -> tap "top" -> head; modules named so that
  alphabetical order ("head" < "inner" < "stem") is not the call order."""
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(3, (3, 3), name="stem")(x)
    x = Block(name="inner")(x)
    x = tap(self, "top", x)
    return nn.Dense(2, name="head")(x.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def tiny():
  m = TinyCNN()
  x = jax.random.uniform(jax.random.key(0), (3, 16, 16, 3))
  return m, numpy_init(m, x, seed=1), x


def test_layer_order_is_the_call_order_with_nested_modules():
  m = NestedNet()
  x = jnp.zeros((1, 8, 8, 3))
  v = random_variables(m, x, seed=0)
  assert set(v) == {"params", "batch_stats"}
  assert cam.layer_order(m, v, x) == ["stem", "inner/conv", "inner/bn", "head"]
  assert cam.layers_after(m, v, x, "inner/mid") == ["inner/bn", "head"]
  assert cam.layers_after(m, v, x, "mid") == ["inner/bn", "head"]  # unique last component
  assert cam.layers_after(m, v, x, "top") == ["head"]
  with pytest.raises(ValueError, match="unknown layer 'nope'"):
    cam.layers_after(m, v, x, "nope")


def test_mobilenet_v2_order_and_layers_above_the_cam_layer():
  m = get_model("mobilenet_v2", num_classes=10, width=0.35)
  x = jnp.zeros((1, 32, 32, 3))
  v = random_variables(m, x)
  order = cam.layer_order(m, v, x)
  owners = set(v["params"]) | set(v["batch_stats"])
  assert sorted(order) == sorted(owners)  # every layer once
  assert order[:3] == ["Conv1", "bn_Conv1", "expanded_conv_depthwise"]
  assert order[-3:] == ["Conv_1", "Conv_1_bn", "predictions"]
  assert cam.layers_after(m, v, x, "out_relu") == ["predictions"]
  above = cam.layers_after(m, v, x, "block_5")
  assert above[0] == "block_6_expand" and above == order[order.index("block_6_expand"):]


def test_randomize_top_layers_changes_exactly_those_layers():
  m = NestedNet()
  x = jnp.zeros((1, 8, 8, 3))
  v = random_variables(m, x, seed=0)
  fresh = jax.tree.map(lambda a: a + 1.0, v)  # every leaf differs from the model's
  order = cam.layer_order(m, v, x)
  for num in range(len(order) + 1):
    r = cam.randomize_top_layers(v, fresh, order, num)
    top = set(order[len(order) - num:])
    for col in v:
      got = flatten_dict(r[col])
      for path, leaf in flatten_dict(v[col]).items():
        if "/".join(path[:-1]) in top:
          np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(leaf) + 1.0)
        else:
          assert got[path] is leaf, (num, col, path)
  assert jax.tree.structure(cam.randomize_top_layers(v, fresh, order, 2)) == \
      jax.tree.structure(v)


def test_randomize_layers_refusals(tiny):
  m, v, x = tiny
  with pytest.raises(ValueError, match="own no variables"):
    cam.randomize_layers(v, v, ["nope"])
  wrong = jax.tree.map(lambda a: a[..., :1], v)
  with pytest.raises(ValueError, match="fresh variable params/head/"):
    cam.randomize_layers(v, wrong, ["head"])
  with pytest.raises(ValueError, match="num_layers"):
    cam.randomize_top_layers(v, v, cam.layer_order(m, v, x), 4)


def test_randomised_head_changes_grad_cam_but_not_the_layers_activations(tiny):
  m, v, x = tiny
  fresh = numpy_init(m, x, seed=7)
  r = cam.randomize_top_layers(v, fresh, cam.layer_order(m, v, x), 1)  # the head only
  _, a = m.apply(v, x, mutable=["intermediates"])
  _, b = m.apply(r, x, mutable=["intermediates"])
  np.testing.assert_array_equal(np.asarray(a["intermediates"]["features"]),
                                np.asarray(b["intermediates"]["features"]))
  before = np.asarray(cam.grad_cam(m, v, x, target=0))
  after = np.asarray(cam.grad_cam(m, r, x, target=0))
  assert np.abs(before - after).max() > 0.1


def test_spatial_autocorrelation_by_hand():
  checker = (np.indices((6, 6)).sum(0) % 2).astype(np.float32)[None]
  np.testing.assert_allclose(np.asarray(cam.spatial_autocorrelation(checker, lag=1)), -1.0,
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(cam.spatial_autocorrelation(checker, lag=2)), 1.0,
                             atol=1e-6)
  rng = np.random.default_rng(0)
  m = rng.random((2, 7, 9)).astype(np.float32)
  for i in range(2):
    rows = np.corrcoef(m[i, 3:].ravel(), m[i, :-3].ravel())[0, 1]
    cols = np.corrcoef(m[i, :, 3:].ravel(), m[i, :, :-3].ravel())[0, 1]
    np.testing.assert_allclose(float(cam.spatial_autocorrelation(m, lag=3)[i]),
                               (rows + cols) / 2, atol=1e-5)
  with pytest.raises(ValueError, match="lag"):
    cam.spatial_autocorrelation(m, lag=7)


def test_smooth_random_maps_shape_range_and_smoothness():
  key = jax.random.key(3)
  white = np.asarray(cam.smooth_random_maps(key, (16, 32, 32), sigma=0.0))
  assert white.shape == (16, 32, 32) and white.dtype == np.float32
  np.testing.assert_allclose(white.min(axis=(1, 2)), 0.0, atol=1e-6)
  np.testing.assert_allclose(white.max(axis=(1, 2)), 1.0, atol=1e-6)
  assert abs(float(np.mean(cam.spatial_autocorrelation(white, lag=1)))) < 0.05
  rho = [float(np.mean(cam.spatial_autocorrelation(
      cam.smooth_random_maps(key, (16, 32, 32), sigma=s), lag=4))) for s in (1.0, 2.0, 4.0)]
  assert rho[0] < rho[1] < rho[2]  # smoother with sigma
  # the population value exp(-lag^2 / (4 sigma^2)) at sigma 4, lag 4 is 0.78; per-map
  # estimates on 32 x 32 maps are lower (each map's own mean is removed)
  assert 0.5 < rho[2] < 0.8
  maps = cam.smooth_random_maps(jax.random.key(4), (16, 32, 32), sigma=3.0)
  assert cam.matched_sigma(maps, lag=4, key=jax.random.key(5)) == pytest.approx(3.0, rel=0.15)
  np.testing.assert_array_equal(np.asarray(cam.smooth_random_maps(key, (2, 8, 8), sigma=1.0)),
                                np.asarray(cam.smooth_random_maps(key, (2, 8, 8), sigma=1.0)))
  with pytest.raises(ValueError, match="sigma"):
    cam.smooth_random_maps(key, (2, 8, 8), sigma=-1.0)
  with pytest.raises(ValueError, match="constant"):
    cam.matched_sigma(np.ones((2, 8, 8), np.float32), lag=2)


def _counting_model(x, saliency):
  """Logits [count of changed pixels, saliency mass of the changed pixels] of an image batch
  against the clean images ``x``: reads off which pixels a deletion step removed."""
  def f(z):
    changed = jnp.any(z != x, axis=-1).astype(jnp.float32)
    return jnp.stack([changed.sum((1, 2)), (changed * saliency).sum((1, 2))], axis=-1)
  return f


def test_deletion_curve_removes_the_top_pixels_in_steps(tiny):
  m, v, _ = tiny
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(0.1, 0.9, (3, 8, 8, 3)), jnp.float32)
  s = jnp.asarray(rng.random((3, 8, 8)), jnp.float32)
  y0 = jnp.zeros(3, jnp.int32)
  out = cam.deletion_curve(_counting_model(x, s), x, y0, s, steps=4)
  np.testing.assert_array_equal(np.asarray(out["fraction"]), [0, 0.25, 0.5, 0.75, 1.0])
  np.testing.assert_array_equal(np.asarray(out["logit"]), [[0, 16, 32, 48, 64]] * 3)
  top = -np.sort(-np.asarray(s).reshape(3, -1), axis=1)
  mass = cam.deletion_curve(_counting_model(x, s), x, jnp.ones(3, jnp.int32), s, steps=4)
  np.testing.assert_allclose(np.asarray(mass["logit"]),
                             np.stack([top[:, :k].sum(1) for k in (0, 16, 32, 48, 64)], 1),
                             rtol=1e-5)
  # a constant map: a random order, one per key; the same pixel count at every step
  flat = jnp.zeros((3, 8, 8))
  a = cam.deletion_curve(_counting_model(x, s), x, jnp.ones(3, jnp.int32), flat, steps=4,
                         key=jax.random.key(0))
  b = cam.deletion_curve(_counting_model(x, s), x, jnp.ones(3, jnp.int32), flat, steps=4,
                         key=jax.random.key(1))
  assert not np.allclose(np.asarray(a["logit"][:, 2]), np.asarray(b["logit"][:, 2]))
  # step 0 is the clean image's logit, the last step the baseline image's
  x16 = jax.random.uniform(jax.random.key(2), (3, 16, 16, 3))
  lf = lambda z: m.apply(v, z)
  y = jnp.array([0, 2, 4], jnp.int32)
  for baseline in ("mean", "blur"):
    out = cam.deletion_curve(lf, x16, y, s.repeat(2, 1).repeat(2, 2), steps=3, baseline=baseline)
    clean = np.asarray(lf(x16))[np.arange(3), y]
    np.testing.assert_allclose(np.asarray(out["logit"][:, 0]), clean, rtol=1e-5, atol=1e-6)
    probs = np.asarray(jax.nn.softmax(lf(x16)))[np.arange(3), y]
    np.testing.assert_allclose(np.asarray(out["prob"][:, 0]), probs, rtol=1e-5)
    base = (jnp.broadcast_to(x16.mean(axis=(1, 2), keepdims=True), x16.shape)
            if baseline == "mean" else cam.sanity._blur(x16, 1.0))
    np.testing.assert_allclose(np.asarray(out["logit"][:, -1]),
                               np.asarray(lf(base))[np.arange(3), y], rtol=1e-5, atol=1e-6)


def test_blur_preserves_constants_and_smooths():
  x = jnp.full((1, 9, 9, 2), 0.3)
  np.testing.assert_allclose(np.asarray(cam.sanity._blur(x, 2.0)), 0.3, rtol=1e-6)
  spike = jnp.zeros((1, 9, 9, 1)).at[0, 4, 4, 0].set(1.0)
  b = np.asarray(cam.sanity._blur(spike, 1.0))[0, :, :, 0]
  assert b.sum() == pytest.approx(1.0, rel=1e-5) and b[4, 4] < 0.2 and b[4, 5] > 0.05


def test_deletion_curve_refusals(tiny):
  x = jnp.zeros((2, 8, 8, 3))
  s = jnp.zeros((2, 8, 8))
  y = jnp.zeros(2, jnp.int32)
  lf = lambda z: jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="saliency must be"):
    cam.deletion_curve(lf, x, y, jnp.zeros((2, 4, 4)))
  with pytest.raises(ValueError, match="steps"):
    cam.deletion_curve(lf, x, y, s, steps=0)
  with pytest.raises(ValueError, match="baseline"):
    cam.deletion_curve(lf, x, y, s, baseline="zero")
  with pytest.raises(ValueError, match="blur_sigma"):
    cam.deletion_curve(lf, x, y, s, baseline="blur", blur_sigma=0.0)


def test_curve_auc_by_hand():
  v = jnp.asarray([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]])
  np.testing.assert_allclose(np.asarray(cam.curve_auc(v)), [0.5, 1.0])
  np.testing.assert_allclose(np.asarray(cam.curve_auc(v, fractions=jnp.asarray([0.0, 0.8, 1.0]))),
                             [0.6 + 0.05, 1.0], rtol=1e-6)
  with pytest.raises(ValueError, match="fractions"):
    cam.curve_auc(v, fractions=jnp.asarray([0.0, 1.0]))
