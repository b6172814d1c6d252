"""``attacks.bpda_masked_logits``: the pipeline that masks its input with a host segmenter.

Golden comparisons: its forward equals the model on ``x * segment(x)``, its gradient (BPDA)
equals the gradient of the model on ``x * m`` with ``m`` fixed, under ``jit`` and ``vmap``;
an end-to-end PGD run through ``robust_accuracy`` re-evaluated by hand; the batch segmenter of
``percadv_jax.data.segment`` against its per-image segmenters; bad input.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from percadv_jax import attacks
from percadv_jax.attacks import losses
from percadv_jax.data import segment

N, S, K = 6, 8, 4


def brightness_mask(images: np.ndarray) -> np.ndarray:
  """A host segmenter that depends on the image: pixels brighter than their image's mean."""
  g = np.asarray(images, np.float32).mean(-1, keepdims=True)
  return (g > g.mean(axis=(1, 2, 3), keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(S * S * 3, K)).astype(np.float32))
  b = jnp.asarray(rng.normal(size=(K,)).astype(np.float32))
  f = jax.tree_util.Partial(lambda w, b, x: jnp.tanh(x.reshape(x.shape[0], -1) @ w) * 3 + b, w, b)
  x = rng.uniform(size=(N, S, S, 3)).astype(np.float32)
  y = rng.integers(0, K, N).astype(np.int32)
  return f, x, y


def _loss(f, x, y):
  return losses.cross_entropy(f(x), y).sum()


def test_forward_is_the_model_on_the_segmented_input(model):
  f, x, _ = model
  p = attacks.bpda_masked_logits(f, brightness_mask)
  want = f(x * brightness_mask(x))
  np.testing.assert_allclose(p(x), want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.jit(lambda z: p(z))(x), want, rtol=1e-5, atol=1e-5)
  # The mask follows the input: another image gets its own mask.
  x2 = 1.0 - x
  np.testing.assert_allclose(p(x2), f(x2 * brightness_mask(x2)), rtol=1e-6, atol=1e-6)
  assert not np.array_equal(brightness_mask(x), brightness_mask(x2))


def test_gradient_is_bpda_the_mask_held_fixed(model):
  f, x, y = model
  p = attacks.bpda_masked_logits(f, brightness_mask)
  m = brightness_mask(x)
  want = jax.grad(lambda z: _loss(f, z * m, y))(x)
  got = jax.jit(jax.grad(lambda z: _loss(p, z, y)))(x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.abs(want).sum() > 0 and np.all(np.asarray(got)[np.broadcast_to(m, x.shape) == 0] == 0)
  # Under vmap (the segmenter called per mapped element) the same, example by example.
  per = jax.vmap(jax.grad(lambda z, t: _loss(p, z[None], t[None])))(x, y)
  np.testing.assert_allclose(per, want, rtol=1e-5, atol=1e-6)


def test_pgd_end_to_end_through_robust_accuracy(model):
  f, x, y = model
  p = attacks.bpda_masked_logits(f, brightness_mask)
  eps = 0.1
  ev = attacks.robust_accuracy(p, x, y, {"pgd": attacks.Attack("pgd", eps=eps, steps=3)},
                               key=jax.random.key(0), batch_size=4, return_adversarial=True)
  clean = np.argmax(f(x * brightness_mask(x)), -1) == y
  np.testing.assert_array_equal(ev.clean, clean)  # clean accuracy: masks of the clean images
  xa = ev.x_adv["pgd"]
  assert np.abs(xa - x).max() <= eps + 1e-6 and xa.min() >= 0 and xa.max() <= 1
  assert (np.abs(xa - x) > 1e-6).any()  # the whole image is free, background included
  again = np.argmax(f(xa * brightness_mask(xa)), -1) == y  # masks of the attacked images
  np.testing.assert_array_equal(ev.survived["pgd"], clean & again)
  assert ev.survived["pgd"].sum() < clean.sum()


def test_segment_images_is_the_segmenters_per_image():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (2, 16, 16, 3)).astype(np.uint8)
  images[:, 4:12, 4:12] = (220, 30, 30)
  got = segment.segment_images(images, "centre", work_size=32)
  assert got.shape == (2, 16, 16, 1) and got.dtype == np.float32
  for i, image in enumerate(images):
    np.testing.assert_array_equal(got[i, ..., 0],
                                  segment.centre_grabcut_mask(image, work_size=32)[0])
    np.testing.assert_array_equal(segment.segment_images(images[i:i + 1], "roi", work_size=32)[0,
                                  ..., 0], segment.grabcut_mask(image, None, work_size=32)[0])
  np.testing.assert_array_equal(segment.segment_images(images / 255.0, "centre", work_size=32),
                                got)
  fn = segment.batch_segmenter("centre", work_size=32)
  assert fn is segment.batch_segmenter("centre", work_size=32)  # one object: one compile
  np.testing.assert_array_equal(fn(images), got)


def test_bad_input():
  f = lambda x: x.reshape(x.shape[0], -1)[:, :2]  # noqa: E731
  with pytest.raises(TypeError, match="segment_fn must be callable"):
    attacks.bpda_masked_logits(f, None)
  with pytest.raises(TypeError, match="logits_fn must be callable"):
    attacks.bpda_masked_logits(1, brightness_mask)
  with pytest.raises(ValueError, match="unknown segmenter"):
    segment.segment_images(np.zeros((1, 4, 4, 3), np.uint8), "nope")
  with pytest.raises(ValueError, match=r"images must be \[N,H,W,3\]"):
    segment.segment_images(np.zeros((4, 4, 3), np.uint8))
  bad = attacks.bpda_masked_logits(f, lambda im: np.ones(im.shape[:3], np.float32))
  with pytest.raises(Exception, match="segment_fn returned masks of shape"):
    jax.block_until_ready(bad(np.zeros((2, 4, 4, 3), np.float32)))
