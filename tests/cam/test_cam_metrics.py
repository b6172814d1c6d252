"""Agreement metrics on hand-built cases, against brute force and SciPy, and figures."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from percadv_jax import cam


def square_region(n=2, h=8, w=8, top=2, left=2, size=4):
  r = np.zeros((n, h, w), np.float32)
  r[:, top:top + size, left:left + size] = 1.0
  return r


def test_identical_maps():
  rng = np.random.default_rng(0)
  m = rng.random((3, 8, 8)).astype(np.float32)
  out = cam.agreement(m, m, top_k=0.2)
  np.testing.assert_allclose(np.asarray(out["pearson"]), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out["spearman"]), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out["top_k_iou"]), 1.0)
  assert out["pearson"].shape == (3,) and float(out["mean"]["top_k_iou"]) == 1.0


def test_disjoint_maps():
  a = square_region(top=0, left=0, size=4)
  b = square_region(top=4, left=4, size=4)
  out = cam.agreement(a, b, top_k=0.25)  # the top 16 pixels of each are its square
  np.testing.assert_array_equal(np.asarray(out["top_k_iou"]), 0.0)
  # two disjoint 16-pixel indicators of 64: r = -p^2 / (p (1 - p)) = -1/3 with p = 1/4
  np.testing.assert_allclose(np.asarray(out["pearson"]), -1.0 / 3.0, atol=1e-5)


def test_map_equal_to_region():
  r = square_region()
  out = cam.agreement(r, None, region=r)
  np.testing.assert_allclose(np.asarray(out["perturbation_energy_in_region"]), 1.0)
  np.testing.assert_allclose(np.asarray(out["perturbation_energy_ratio"]), 64 / 16)
  np.testing.assert_allclose(np.asarray(out["region_area"]), 16 / 64)
  np.testing.assert_array_equal(np.asarray(out["perturbation_pointing_game"]), 1.0)
  np.testing.assert_allclose(np.asarray(out["perturbation_auc"]), 1.0)
  # the complement of the region: nothing inside, argmax outside, AUC 0
  out = cam.agreement(1.0 - r, None, region=r)
  np.testing.assert_allclose(np.asarray(out["perturbation_energy_in_region"]), 0.0)
  np.testing.assert_array_equal(np.asarray(out["perturbation_pointing_game"]), 0.0)
  np.testing.assert_allclose(np.asarray(out["perturbation_auc"]), 0.0)
  # a uniform map is at chance: ratio 1, AUC 1/2 (all ties)
  out = cam.agreement(np.ones_like(r), None, region=r)
  np.testing.assert_allclose(np.asarray(out["perturbation_energy_ratio"]), 1.0, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(out["perturbation_auc"]), 0.5)


def brute_auc(score, label):
  pos, neg = score[label == 1], score[label == 0]
  diff = pos[:, None] - neg[None, :]
  return (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / (len(pos) * len(neg))


def test_auc_and_spearman_with_ties_against_brute_force_and_scipy():
  rng = np.random.default_rng(1)
  m = rng.integers(0, 5, size=(4, 9, 7)).astype(np.float32)   # many ties
  s = rng.integers(0, 3, size=(4, 9, 7)).astype(np.float32)
  r = (rng.random((4, 9, 7)) < 0.3).astype(np.float32)
  out = cam.agreement(m, s, region=r[..., None], top_k=0.1)
  for i in range(4):
    np.testing.assert_allclose(float(out["perturbation_auc"][i]),
                               brute_auc(m[i].ravel(), r[i].ravel()), atol=1e-6)
    np.testing.assert_allclose(float(out["saliency_auc"][i]),
                               brute_auc(s[i].ravel(), r[i].ravel()), atol=1e-6)
    np.testing.assert_allclose(float(out["spearman"][i]),
                               stats.spearmanr(m[i].ravel(), s[i].ravel())[0], atol=1e-5)
    np.testing.assert_allclose(float(out["pearson"][i]),
                               np.corrcoef(m[i].ravel(), s[i].ravel())[0, 1], atol=1e-5)
    frac = (m[i] * r[i]).sum() / m[i].sum()
    np.testing.assert_allclose(float(out["perturbation_energy_in_region"][i]), frac, rtol=1e-5)
    np.testing.assert_allclose(float(out["perturbation_energy_ratio"][i]), frac / r[i].mean(),
                               rtol=1e-5)
    assert float(out["saliency_pointing_game"][i]) == r[i].ravel()[np.argmax(s[i].ravel())]
  np.testing.assert_allclose(float(out["mean"]["perturbation_auc"]),
                             float(np.mean(np.asarray(out["perturbation_auc"]))), rtol=1e-6)


def test_top_k_iou_against_sets():
  rng = np.random.default_rng(2)
  a, b = rng.random((2, 3, 10, 10)).astype(np.float32)
  out = cam.agreement(a, b, top_k=0.3)
  for i in range(3):
    sa = set(np.argsort(-a[i].ravel())[:30])
    sb = set(np.argsort(-b[i].ravel())[:30])
    np.testing.assert_allclose(float(out["top_k_iou"][i]), len(sa & sb) / len(sa | sb))


def test_top_k_energy_by_hand():
  s = np.array([[[4, 3, 3, 3], [1, 0, 0, 2]]], np.float32)      # 8 pixels
  m = np.arange(1, 9, dtype=np.float32).reshape(1, 2, 4)          # total 36
  # k = 2: the 4 and one place shared by the three 3s (1/3 each): (1 + (2 + 3 + 4) / 3) / 36
  np.testing.assert_allclose(np.asarray(cam.top_k_energy(m, s, fraction=0.25)), [4 / 36],
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(cam.top_k_weights(s, 2)),
                             [[1, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0]], rtol=1e-6)
  # k = 4: the 4 and all three 3s
  np.testing.assert_allclose(np.asarray(cam.top_k_energy(m, s, fraction=0.5)), [10 / 36],
                             rtol=1e-6)
  # a uniform map is at chance k / P; a zero map has no energy to place
  np.testing.assert_allclose(np.asarray(cam.top_k_energy(np.ones_like(m), s, fraction=0.25)),
                             [2 / 8], rtol=1e-6)
  assert np.isnan(float(cam.top_k_energy(np.zeros_like(m), s, fraction=0.25)[0]))
  assert cam.top_k_size(1024, 0.1) == 102 and cam.top_k_size(8, 0.01) == 1
  rng = np.random.default_rng(5)
  a, b = rng.random((2, 3, 10, 10)).astype(np.float32)          # no ties: plain top-k sets
  got = np.asarray(cam.top_k_energy(a, b, fraction=0.2))
  for i in range(3):
    idx = np.argsort(-b[i].ravel())[:20]
    np.testing.assert_allclose(got[i], a[i].ravel()[idx].sum() / a[i].sum(), rtol=1e-5)
  with pytest.raises(ValueError, match=">= 0"):
    cam.top_k_energy(m - 5.0, s)
  with pytest.raises(ValueError, match="same shape"):
    cam.top_k_energy(m, s[:, :1])
  with pytest.raises(ValueError, match="fraction"):
    cam.top_k_energy(m, s, fraction=0.0)


def test_empty_region_and_zero_map_give_nan_not_crash():
  r = square_region(n=2)
  r[1] = 0.0
  m = np.ones_like(r)
  m[0] = 0.0
  out = cam.agreement(m, None, region=r)
  assert np.isnan(float(out["perturbation_energy_in_region"][0]))
  assert np.isnan(float(out["perturbation_auc"][1]))
  assert float(out["perturbation_auc"][0]) == 0.5          # a zero map ties everywhere
  assert float(out["perturbation_energy_in_region"][1]) == 0.0
  assert float(out["mean"]["perturbation_auc"]) == 0.5      # NaNs left out of the means
  assert float(out["mean"]["perturbation_energy_in_region"]) == 0.0


def test_perturbation_maps():
  rng = np.random.default_rng(3)
  d = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(cam.perturbation_magnitude(d)),
                             np.linalg.norm(d, axis=-1), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(cam.perturbation_magnitude(d, reduce="max")),
                             np.abs(d).max(-1))
  np.testing.assert_allclose(np.asarray(cam.perturbation_magnitude(d, reduce="l1")),
                             np.abs(d).sum(-1), rtol=1e-5)
  ssim_map = rng.random((2, 22, 22, 3)).astype(np.float32)   # valid 11x11 windows of 32x32
  diss = np.asarray(cam.dissimilarity_map(ssim_map, size=(32, 32)))
  assert diss.shape == (2, 32, 32)
  np.testing.assert_allclose(diss[:, 5:27, 5:27], 1.0 - ssim_map.mean(-1), rtol=1e-6)
  np.testing.assert_allclose(diss[:, 0, 0], 1.0 - ssim_map[:, 0, 0].mean(-1), rtol=1e-6)


def test_bad_inputs_raise():
  m = np.zeros((2, 8, 8), np.float32)
  with pytest.raises(ValueError, match="same shape"):
    cam.agreement(m, np.zeros((2, 8, 9), np.float32))
  with pytest.raises(ValueError, match="same shape"):
    cam.agreement(m, None, region=np.zeros((2, 4, 4), np.float32))
  with pytest.raises(ValueError, match=r"\[N, H, W\]"):
    cam.agreement(np.zeros((8, 8), np.float32), None, region=np.zeros((8, 8)))
  with pytest.raises(ValueError, match="only 0 and 1"):
    cam.agreement(m, None, region=np.full((2, 8, 8), 0.5, np.float32))
  with pytest.raises(ValueError, match=">= 0"):
    cam.agreement(m - 1.0, None, region=square_region())
  with pytest.raises(ValueError, match="NaN"):
    cam.agreement(m + np.nan, m)
  with pytest.raises(ValueError, match="top_k"):
    cam.agreement(m, m, top_k=0.0)
  with pytest.raises(ValueError, match="needs a saliency_map"):
    cam.agreement(m, None)
  with pytest.raises(ValueError, match="unknown reduce"):
    cam.perturbation_magnitude(np.zeros((1, 4, 4, 3)), reduce="l3")
  with pytest.raises(ValueError, match="smaller"):
    cam.dissimilarity_map(np.zeros((1, 8, 8)), size=(4, 4))


def test_metrics_jit_equals_no_jit():
  rng = np.random.default_rng(4)
  a, b = jnp.asarray(rng.random((2, 2, 6, 6)), jnp.float32)
  r = jnp.asarray(square_region(h=6, w=6, size=3))
  fn = lambda a, b, r: (cam.roc_auc(a, r), cam.pearson(a, b))
  for got, want in zip(jax.jit(fn)(a, b, r), fn(a, b, r)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_figure_writes_png(tmp_path):
  rng = np.random.default_rng(5)
  x = rng.random((3, 16, 16, 3)).astype(np.float32)
  maps = rng.random((3, 16, 16)).astype(np.float32)
  path = os.path.join(tmp_path, "maps.png")
  fig = cam.plot_maps(x, maps, perturbation_maps=maps, dissimilarity_maps=maps, path=path,
                      titles=["a", "b", "c"], max_images=2)
  assert len(fig.axes) >= 2 * 4  # 2 rows x 4 panels (+ colour bars)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  fig = cam.plot_maps(x, maps)            # optional columns left out
  assert len(fig.axes) == 3 * 2
  with pytest.raises(ValueError, match="must have shape"):
    cam.plot_maps(x, maps[:, :8])
  over = cam.overlay(x[0], maps[0], alpha=0.0)
  np.testing.assert_allclose(over, x[0], atol=1e-6)
