"""Argument types of the CAM entry points: NumPy scalars accepted, bools and bad numbers refused."""

import jax
import numpy as np
import pytest

from percadv_jax import cam
from percadv_jax.cam import figures, metrics
from tests.cam.cam_testlib import TinyCNN, numpy_init


@pytest.fixture(scope="module")
def tiny():
  m = TinyCNN()
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  return m, numpy_init(m, x, seed=1), x


def test_cam_numpy_scalars_and_refusals(tiny):
  m, v, x = tiny
  a = np.asarray(cam.grad_cam(m, v, x, target=3))
  b = np.asarray(cam.grad_cam(m, v, x, target=np.int64(3)))
  np.testing.assert_array_equal(a, b)
  s1 = np.asarray(cam.score_cam(m, v, x, target=1, score_chunk=4))
  s2 = np.asarray(cam.score_cam(m, v, x, target=1, score_chunk=np.int64(4)))
  np.testing.assert_array_equal(s1, s2)
  for kw, msg in [(dict(target=True), "target must be a class index"),
                  (dict(target=5), r"target must lie in \[0, 5\)"),
                  (dict(target=np.array([0, -1])), r"target must lie in \[0, 5\).*-1 at index 1"),
                  (dict(target=np.array([0.0, 1.0])), "integer class labels"),
                  (dict(score_chunk=True), "score_chunk must be an integer"),
                  (dict(score_chunk=0), "score_chunk must be an integer >= 1"),
                  (dict(upsample=1), "upsample must be True or False")]:
    with pytest.raises(ValueError, match=msg):
      cam.compute_cam("grad_cam", m, v, x, **kw)


def test_metrics_and_figures_fractions():
  rng = np.random.default_rng(0)
  a, b = rng.uniform(size=(2, 8, 8)), rng.uniform(size=(2, 8, 8))
  np.testing.assert_array_equal(np.asarray(metrics.top_k_iou(a, b, fraction=np.float32(0.25))),
                                np.asarray(metrics.top_k_iou(a, b, fraction=0.25)))
  for bad in (0.0, 1.5, np.nan, True):
    with pytest.raises(ValueError, match="fraction must be"):
      metrics.top_k_iou(a, b, fraction=bad)
    with pytest.raises(ValueError, match="top_k"):
      metrics.agreement(a, b, top_k=bad)
  img = rng.uniform(size=(8, 8, 3))
  assert figures.overlay(img, a[0], alpha=np.float32(0.3)).shape == (8, 8, 3)
  with pytest.raises(ValueError, match="alpha must be"):
    figures.overlay(img, a[0], alpha=2.0)
