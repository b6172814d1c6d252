"""Model-level CAMs on a tiny tapped Flax CNN and on the project's models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from percadv_jax import cam
from percadv_jax.cam import core
from percadv_jax.models import get_model
from tests.cam.test_cam_core import upsample_align_corners
from percadv_jax.models.common import tap
from tests.cam.cam_testlib import TinyCNN, numpy_init


class Block(nn.Module):
  @nn.compact
  def __call__(self, x):
    return tap(self, "out", nn.relu(nn.Conv(4, (3, 3))(x)))


class NestedCNN(nn.Module):
  """A tap inside a submodule (path "inner/out"); no cam_layer."""
  @nn.compact
  def __call__(self, x, train=False):
    x = Block(name="inner")(x)
    return nn.Dense(3)(x.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def tiny():
  m = TinyCNN()
  x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
  v = numpy_init(m, x, seed=1)
  return m, v, x


def reference_acts_grads(m, v, x, layer, target):
  """Activations from intermediates and gradients by differentiating a re-run of the model's
  head: independent of the library's perturbation plumbing."""
  _, state = m.apply(v, x, mutable=["intermediates"])
  acts = state["intermediates"][layer]
  if layer == "features":
    w = v["params"]["head"]["kernel"]  # [K, C]
    b = v["params"]["head"]["bias"]
    score = lambda a: jnp.sum((a.mean(axis=(1, 2)) @ w + b)[jnp.arange(len(target)), target])
    return acts, jax.grad(score)(acts)
  raise KeyError(layer)


def test_grad_cam_equals_cam_from_head_weights(tiny):
  m, v, x = tiny
  g = cam.grad_cam(m, v, x, upsample=False)
  logits = m.apply(v, x)
  pred = np.argmax(np.asarray(logits), axis=-1)
  _, state = m.apply(v, x, mutable=["intermediates"])
  w = v["params"]["head"]["kernel"][:, pred].T          # [N, K]: the head's class weights
  c = core.postprocess(core.class_activation_map(state["intermediates"]["features"], w),
                      size=None)
  np.testing.assert_allclose(np.asarray(g), np.asarray(c), atol=2e-6)
  np.testing.assert_allclose(np.asarray(cam.cam(m, v, x, upsample=False)), np.asarray(c),
                             atol=2e-6)
  assert float(jnp.max(c)) > 0.9  # a real map, not all zeros


@pytest.mark.parametrize("method", ["grad_cam", "grad_cam_pp", "xgrad_cam", "layer_cam",
                                    "hires_cam"])
def test_model_maps_equal_array_formulas_on_reference_gradients(tiny, method):
  m, v, x = tiny
  target = jnp.array([0, 1, 4, 2], jnp.int32)
  acts, grads = reference_acts_grads(m, v, x, "features", target)
  want = core.postprocess(core.GRADIENT_METHODS[method](acts, grads), size=(16, 16))
  got, aux = cam.compute_cam(method, m, v, x, target=target, return_aux=True)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(aux["target"]), np.asarray(target))
  assert got.shape == (4, 16, 16) and got.dtype == jnp.float32


def test_score_cam_equals_loop_of_forward_passes(tiny):
  m, v, x = tiny
  got = cam.score_cam(m, v, x, score_chunk=3)  # 8 channels in chunks of 3 (padding exercised)
  logits, state = m.apply(v, x, mutable=["intermediates"])
  acts = np.asarray(state["intermediates"]["features"])         # [N, h, w, K]
  pred = np.argmax(np.asarray(logits), axis=-1)
  up = upsample_align_corners(acts, (16, 16)).transpose(0, 3, 1, 2)  # [N, K, H, W]
  lo = up.reshape(4, 8, -1).min(-1)[:, :, None, None]
  hi = up.reshape(4, 8, -1).max(-1)[:, :, None, None]
  up = (up - lo) / (hi - lo + 1e-8)
  scores = np.zeros((4, 8))
  for i in range(4):
    masked = np.asarray(x[i])[None] * up[i][..., None]            # [K, H, W, 3]
    scores[i] = np.asarray(m.apply(v, jnp.asarray(masked)))[:, pred[i]]
  e = np.exp(scores - scores.max(1, keepdims=True))
  weights = e / e.sum(1, keepdims=True)
  raw = np.einsum("nhwk,nk->nhw", acts, weights).astype(np.float32)
  want = core.postprocess(jnp.asarray(raw), size=(16, 16))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4)


def test_default_target_is_prediction_and_int_target_broadcasts(tiny):
  m, v, x = tiny
  pred = jnp.argmax(m.apply(v, x), axis=-1)
  np.testing.assert_allclose(np.asarray(cam.layer_cam(m, v, x)),
                             np.asarray(cam.layer_cam(m, v, x, target=pred)), atol=0)
  a = cam.hires_cam(m, v, x, target=3)
  b = cam.hires_cam(m, v, x, target=jnp.full((4,), 3, jnp.int32))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_jit_equals_no_jit(tiny):
  m, v, x = tiny
  want = cam.grad_cam_pp(m, v, x, layer="conv1")
  with jax.disable_jit():
    eager = cam.grad_cam_pp(m, v, x, layer="conv1")
  outer = jax.jit(lambda v, x: cam.grad_cam_pp(m, v, x, layer="conv1"))(v, x)
  np.testing.assert_allclose(np.asarray(eager), np.asarray(want), atol=1e-5)
  np.testing.assert_allclose(np.asarray(outer), np.asarray(want), atol=1e-5)


def test_layer_names_nested_and_errors(tiny):
  m, v, x = tiny
  assert cam.tap_names(m, v, x) == ["conv1", "features"]
  with pytest.raises(ValueError, match=r"unknown layer 'nope'.*conv1.*features"):
    cam.grad_cam(m, v, x, layer="nope")
  with pytest.raises(ValueError, match="target must lie in"):
    cam.grad_cam(m, v, x, target=5)
  with pytest.raises(ValueError, match="target must lie in"):
    cam.grad_cam(m, v, x, target=jnp.array([0, 1, -1, 2]))
  with pytest.raises(ValueError, match="target must have shape"):
    cam.grad_cam(m, v, x, target=jnp.array([0, 1]))
  with pytest.raises(ValueError, match="unknown method"):
    cam.compute_cam("gradcam", m, v, x)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    cam.grad_cam(m, v, x * 3.0)
  nested = NestedCNN()
  vn = numpy_init(nested, x, seed=2)
  assert cam.tap_names(nested, vn, x) == ["inner/out"]
  with pytest.raises(ValueError, match="no cam_layer"):
    cam.grad_cam(nested, vn, x)
  full = cam.grad_cam(nested, vn, x, layer="inner/out")
  np.testing.assert_array_equal(np.asarray(cam.grad_cam(nested, vn, x, layer="out")),
                                np.asarray(full))


@pytest.mark.parametrize("name,kw,size", [
    ("vgg19", dict(variant="small", width=0.0625, batch_norm=True), 32),
    ("mobilenet_v2", dict(width=0.35), 32),
])
def test_project_models_default_layer(name, kw, size):
  m = get_model(name, num_classes=4, **kw)
  x = jax.random.uniform(jax.random.key(3), (2, size, size, 3))
  v = numpy_init(m, x, seed=4)
  assert m.cam_layer in cam.tap_names(m, v, x)
  maps, aux = cam.grad_cam(m, v, x, return_aux=True)
  assert maps.shape == (2, size, size)
  assert np.all(np.isfinite(np.asarray(maps)))
  assert float(maps.min()) >= 0 and float(maps.max()) <= 1
  np.testing.assert_array_equal(np.asarray(aux["target"]), np.argmax(np.asarray(aux["logits"]), -1))
  assert aux["logits"].shape == (2, 4)


def test_taps_come_in_the_models_order():
  """``tap_names`` lists the layers as the model calls them (block_2 before block_10), so "the
  deepest tap of at least 4x4" is really the deepest."""
  m = get_model("mobilenet_v2", num_classes=3, width=0.35)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32)
  v = jax.eval_shape(lambda k, z: m.init(k, z, train=False), jax.random.key(0), x)
  names = cam.tap_names(m, v, x)
  blocks = [int(n.split("_")[1]) for n in names if n.startswith("block_")]
  assert names[0] == "Conv1_relu" and names[-1] == "out_relu"
  assert blocks == sorted(blocks) == list(range(17))
