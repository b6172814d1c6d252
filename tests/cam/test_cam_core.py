"""Array-level CAM formulas against a plain NumPy transcription of pytorch-grad-cam (NCHW)."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from percadv_jax.cam import core


# ---- pytorch-grad-cam's formulas, transcribed in NumPy on NCHW arrays (the reference) ----------

def ref_weights(method, a, g):
  if method == "grad_cam":
    return np.mean(g, axis=(2, 3))
  if method == "grad_cam_pp":
    g2 = g ** 2
    g3 = g2 * g
    sum_a = np.sum(a, axis=(2, 3))
    aij = g2 / (2 * g2 + sum_a[:, :, None, None] * g3 + 0.000001)
    aij = np.where(g != 0, aij, 0)
    return np.sum(np.maximum(g, 0) * aij, axis=(2, 3))
  if method == "xgrad_cam":
    sum_a = np.sum(a, axis=(2, 3))
    return (g * a / (sum_a[:, :, None, None] + 1e-7)).sum(axis=(2, 3))
  raise KeyError(method)


def ref_raw(method, a, g):
  if method == "layer_cam":
    return (np.maximum(g, 0) * a).sum(axis=1)
  if method == "hires_cam":
    return (g * a).sum(axis=1)
  w = ref_weights(method, a, g)
  return (w[:, :, None, None] * a).sum(axis=1)


def ref_scale(cam, target_size=None):
  out = []
  for img in cam:
    img = img - np.min(img)
    img = img / (1e-7 + np.max(img))
    if target_size is not None:
      img = cv2.resize(np.float32(img), target_size)
    out.append(img)
  return np.float32(out)


def ref_postprocess(raw, hw):
  cam = np.maximum(raw, 0)
  scaled = ref_scale(cam, (hw[1], hw[0]))  # cv2 sizes are (width, height)
  return ref_scale(np.maximum(scaled, 0))


def random_pair(seed, n=3, h=5, w=6, k=7):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(n, k, h, w))            # negative activations included
  a[rng.random(a.shape) < 0.3] = 0.0           # and zeros
  g = rng.normal(size=(n, k, h, w)) * 0.5
  g[rng.random(g.shape) < 0.3] = 0.0           # zero gradients (alpha must be 0 there)
  g[0, 0] = 0.0                                # a whole channel with no gradient
  return a, g


def nhwc(a):
  return jnp.asarray(np.transpose(a, (0, 2, 3, 1)), jnp.float32)


METHODS = ["grad_cam", "grad_cam_pp", "xgrad_cam", "layer_cam", "hires_cam"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1])
def test_raw_maps_equal_pytorch_grad_cam_formulas(method, seed):
  a, g = random_pair(seed)
  got = np.asarray(core.GRADIENT_METHODS[method](nhwc(a), nhwc(g)))
  want = ref_raw(method, a, g)
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("method", ["grad_cam", "grad_cam_pp", "xgrad_cam"])
def test_channel_weights_equal_reference(method):
  a, g = random_pair(3)
  fn = {"grad_cam": core.grad_cam_weights, "grad_cam_pp": core.grad_cam_pp_weights,
        "xgrad_cam": core.xgrad_cam_weights}[method]
  np.testing.assert_allclose(np.asarray(fn(nhwc(a), nhwc(g))), ref_weights(method, a, g),
                             rtol=2e-4, atol=2e-5)


def test_grad_cam_pp_alpha_is_zero_where_gradient_is_zero():
  a, g = random_pair(4)
  g[:] = 0.0
  g[1, 2, 3, 4] = 0.7
  w = np.asarray(core.grad_cam_pp_weights(nhwc(a), nhwc(g)))
  assert np.all(w[0] == 0) and np.all(w[2] == 0)
  assert np.count_nonzero(w[1]) == 1 and w[1, 2] > 0


@pytest.mark.parametrize("hw,out", [((5, 6), (32, 40)), ((7, 7), (7, 7)), ((9, 12), (4, 5)),
                                    ((1, 3), (8, 8))])
def test_resize_equals_cv2_inter_linear(hw, out):
  rng = np.random.default_rng(0)
  m = rng.random((2,) + hw).astype(np.float32)
  got = np.asarray(core.resize_bilinear(jnp.asarray(m), out))
  want = np.stack([cv2.resize(x, (out[1], out[0]), interpolation=cv2.INTER_LINEAR) for x in m])
  np.testing.assert_allclose(got, want, atol=2e-6)


def upsample_align_corners(m, size):
  """torch.nn.UpsamplingBilinear2d (align_corners=True) on [N, h, w, ...] via SciPy's order-1
  interpolation at the grid i * (in - 1) / (out - 1) (no PyTorch needed in the test stack)."""
  h, w = m.shape[1:3]
  ys = np.linspace(0, h - 1, size[0])
  xs = np.linspace(0, w - 1, size[1])
  yy, xx = np.meshgrid(ys, xs, indexing="ij")
  m2 = np.moveaxis(m, (1, 2), (-2, -1))                           # [N, ..., h, w]
  flat = m2.reshape((-1, h, w))
  out = np.stack([ndimage.map_coordinates(c.astype(np.float64), [yy, xx], order=1) for c in flat])
  return np.moveaxis(out.reshape(m2.shape[:-2] + tuple(size)), (-2, -1), (1, 2))


def test_resize_align_corners_equals_torch_upsampling_bilinear():
  rng = np.random.default_rng(1)
  m = rng.random((2, 5, 6, 3)).astype(np.float32)
  got = np.asarray(core.resize_bilinear(jnp.asarray(m), (17, 20), align_corners=True))
  np.testing.assert_allclose(got, upsample_align_corners(m, (17, 20)), atol=2e-6)


@pytest.mark.parametrize("method", METHODS)
def test_postprocess_equals_pytorch_grad_cam_pipeline(method):
  a, g = random_pair(5)
  raw = ref_raw(method, a, g).astype(np.float32)
  got = np.asarray(core.postprocess(jnp.asarray(raw), size=(20, 24)))
  np.testing.assert_allclose(got, ref_postprocess(raw, (20, 24)), atol=2e-5)
  assert got.shape == (3, 20, 24) and got.min() >= 0 and got.max() <= 1


def test_postprocess_all_zero_or_negative_map_gives_zeros():
  raw = -np.abs(np.random.default_rng(0).normal(size=(2, 4, 4))).astype(np.float32)
  raw[1] = 0.0
  out = np.asarray(core.postprocess(jnp.asarray(raw), size=(8, 8)))
  assert np.all(np.isfinite(out)) and np.all(out == 0)


def test_cam_from_head_weights_and_score_cam_softmax():
  a, _ = random_pair(6)
  w = np.random.default_rng(0).normal(size=(3, 7))
  got = np.asarray(core.class_activation_map(nhwc(a), jnp.asarray(w, jnp.float32)))
  np.testing.assert_allclose(got, np.einsum("nkhw,nk->nhw", a, w), rtol=1e-4, atol=1e-5)
  s = np.random.default_rng(1).normal(size=(3, 7)) * 5
  e = np.exp(s - s.max(axis=1, keepdims=True))
  np.testing.assert_allclose(np.asarray(core.score_cam_weights(jnp.asarray(s, jnp.float32))),
                             e / e.sum(axis=1, keepdims=True), rtol=1e-5)


def test_jit_equals_no_jit():
  a, g = random_pair(7)
  fn = lambda a, g: core.postprocess(core.grad_cam_pp_map(a, g), size=(10, 12))
  np.testing.assert_allclose(np.asarray(jax.jit(fn)(nhwc(a), nhwc(g))),
                             np.asarray(fn(nhwc(a), nhwc(g))), atol=1e-6)


def test_bad_shapes_raise():
  a, g = random_pair(8)
  with pytest.raises(ValueError, match="same shape"):
    core.grad_cam_map(nhwc(a), nhwc(g)[:, :-1])
  with pytest.raises(ValueError, match="NHWC"):
    core.layer_cam_map(nhwc(a)[0], nhwc(g)[0])
  with pytest.raises(ValueError, match="weights must have shape"):
    core.weighted_sum(nhwc(a), jnp.ones((3, 5)))
