"""The perceptual study's direct answer and its baselines, on hand-built maps and statistics (the
end-to-end run is in test_binaries.py)."""

import jax
import numpy as np
import pytest

from experiments.configs import perceptual_cam
from experiments import perceptual_study
from experiments.perceptual_study import agreement, question, sanity
from percadv_jax import cam

NULLS = {"random_model": "cascade:all", "smooth_random": "smooth_random",
         "other_image": "other_image"}


def _maps(n=6, size=16, seed=0):
  rng = np.random.default_rng(seed)
  cam_map = np.asarray(cam.smooth_random_maps(jax.random.key(seed), (n, size, size), sigma=2.0))
  white = rng.random((n, size, size)).astype(np.float32)
  rand_model = np.asarray(cam.smooth_random_maps(jax.random.key(seed + 1), (n, size, size),
                                                 sigma=2.0))
  return cam_map, white, rand_model


def _direct(maps, cam_map, refs, success, key=0):
  return agreement.direct(maps, cam_map, refs, success, fractions=(0.1, 0.2), nulls=NULLS,
                          smooth_sigma=2.0, random_maps=8, key=jax.random.key(key),
                          batch_size=4)


def test_direct_measures_equal_the_library_metrics_with_nulls_beside_them():
  cam_map, white, rand_model = _maps()
  maps = {"one_minus_ssim": cam_map, "abs_d": white}  # one map is the CAM itself, one is noise
  refs = {"cascade:all": rand_model, "other_image": agreement.other_image(cam_map)}
  success = np.array([True] * 5 + [False])
  out = _direct(maps, cam_map, refs, success)
  ok = slice(0, 5)
  for kind, p in maps.items():
    for f, name in ((0.1, "energy_top10"), (0.2, "energy_top20")):
      want = np.asarray(cam.top_k_energy(p, cam_map, fraction=f))
      np.testing.assert_allclose(out[f"{kind}/{name}"][ok], want[ok], rtol=1e-5)
      assert np.isnan(out[f"{kind}/{name}"][5])  # the attack failed there
      chance = cam.top_k_size(256, f) / 256
      np.testing.assert_allclose(out[f"{kind}/{name}-chance"][ok], want[ok] - chance, atol=1e-6)
      ref = np.asarray(cam.top_k_energy(p, rand_model, fraction=f))
      np.testing.assert_allclose(out[f"{kind}/{name}@cascade:all"][ok], ref[ok], rtol=1e-5)
      np.testing.assert_allclose(out[f"{kind}/{name}-random_model"][ok], want[ok] - ref[ok],
                                 rtol=1e-4, atol=1e-6)
      other = np.asarray(cam.top_k_energy(p, np.roll(cam_map, -1, axis=0), fraction=f))
      np.testing.assert_allclose(out[f"{kind}/{name}@other_image"][ok], other[ok], rtol=1e-5)
    np.testing.assert_allclose(out[f"{kind}/spearman"][ok],
                               np.asarray(cam.spearman(p, cam_map))[ok], atol=1e-5)
  # the map equal to the CAM: the CAM's top-k region holds more of the map than any other
  # region of that size, so it beats every null
  assert np.all(out["one_minus_ssim/spearman"][ok] > 0.99)
  for null in NULLS:
    assert np.all(out[f"one_minus_ssim/energy_top10-{null}"][ok] > 0), null
    assert np.all(out[f"one_minus_ssim/spearman-{null}"][ok] > 0.3), null
  # smooth random maps carry no content: for the CAM map their share is near chance
  smooth = out["one_minus_ssim/energy_top10@smooth_random"][ok]
  assert abs(float(np.mean(smooth)) - 0.1) < 0.05
  # the same key gives the same random maps (so every attack meets the same null)
  again = _direct(maps, cam_map, refs, success)
  np.testing.assert_array_equal(again["abs_d/spearman@smooth_random"],
                                out["abs_d/spearman@smooth_random"])
  other_key = _direct(maps, cam_map, refs, success, key=1)
  assert not np.allclose(other_key["abs_d/spearman@smooth_random"][ok],
                         out["abs_d/spearman@smooth_random"][ok])


def test_another_images_cam_is_undefined_for_one_image():
  cam_map, white, rand_model = _maps(n=1)
  refs = {"cascade:all": rand_model, "other_image": agreement.other_image(cam_map)}
  out = _direct({"one_minus_ssim": cam_map, "abs_d": white}, cam_map, refs, np.array([True]))
  assert np.isnan(out["abs_d/spearman@other_image"][0])
  assert np.isnan(out["abs_d/spearman-other_image"][0])
  assert np.isfinite(out["abs_d/spearman-random_model"][0])
  with pytest.raises(ValueError, match="null references"):
    agreement.direct({"one_minus_ssim": cam_map, "abs_d": white}, cam_map, {},
                     np.array([True]), fractions=(0.1,), nulls=NULLS, smooth_sigma=1.0,
                     random_maps=2, key=jax.random.key(0), batch_size=4)


def _stat(mean, lo, hi, n=20):
  return {"mean": mean, "lo": lo, "hi": hi, "n": n}


def _stats(chance_lo, null_lo, measures=("energy_top10", "spearman"), n=20):
  st = {}
  for i, m in enumerate(measures):
    key = f"one_minus_ssim/{m}"
    st[key] = _stat(0.3, 0.2, 0.4, n)
    st[f"{key}-chance"] = _stat(0.1, chance_lo[i], 0.2, n)
    for null in NULLS:
      st[f"{key}-{null}"] = _stat(0.05, null_lo[i], 0.1, n)
  return st


def test_verdict_rules():
  ms, nulls = ("energy_top10", "spearman"), tuple(NULLS)
  v = lambda st, faithful=True: question.verdict(st, "one_minus_ssim", ms, nulls, faithful)
  assert v(_stats([0.01, 0.01], [0.01, 0.01])) == "yes"
  assert v(_stats([0.01, 0.01], [0.01, 0.01]), faithful=None) == "yes"  # no deletion check
  assert v(_stats([0.01, 0.01], [0.01, 0.01]), faithful=False) == "not established"
  assert v(_stats([0.01, 0.01], [0.01, -0.01])) == "partly"
  assert v(_stats([0.01, 0.01], [-0.01, -0.01])) == "no, not beyond the null baselines"
  assert v(_stats([-0.01, -0.01], [0.01, 0.01])) == "no"  # beating a null below chance is no
  assert v(_stats([0.01, 0.01], [0.01, 0.01], n=1)) == "too few images"  # no interval
  assert v(_stats([0.01, 0.01], [0.01, 0.01], n=0)) == "nothing to compare"
  st = _stats([0.01, 0.01], [0.01, 0.01])
  del st["one_minus_ssim/spearman-other_image"]  # a null that was not computed is not beaten
  assert v(st) == "partly"


def test_faithful_reads_the_deletion_gain():
  assert question.faithful(None) is None
  good = {"grad_cam_pp/prob_auc_gain": _stat(0.1, 0.05, 0.15)}
  bad = {"grad_cam_pp/prob_auc_gain": _stat(0.1, -0.05, 0.15)}
  assert question.faithful(good) is True and question.faithful(bad) is False


def test_lp_differences_are_paired_over_images_both_attacks_fooled():
  direct = {name: {f"{k}/{m}": np.array(v, float) for k in ("one_minus_ssim", "abs_d")
                   for m in agreement.measure_names((0.1,))}
            for name, v in (("ssim", [0.5, 0.4, np.nan]), ("linf", [0.2, np.nan, 0.1]),
                            ("l2", [0.1, 0.3, 0.2]))}
  out = question.lp_differences(direct, (0.1,))
  np.testing.assert_allclose(out["linf"]["abs_d/spearman-diff"], [0.3, np.nan, np.nan])
  np.testing.assert_allclose(out["l2"]["abs_d/energy_top10-diff"], [0.4, 0.1, np.nan])
  np.testing.assert_allclose(out["l2"]["abs_d/energy_top10@lp"], [0.1, 0.3, np.nan])


def test_null_refs_and_stages_follow_the_config():
  c = perceptual_cam.get_config("quick")
  assert sanity.null_refs(c) == NULLS
  assert sanity.stages(c) == ("logits", "above_cam", "all")
  c.sanity.cascade, c.sanity.null_stage = ("logits",), "above_cam"
  assert sanity.stages(c) == ("logits", "above_cam")
  assert sanity.null_refs(c)["random_model"] == "cascade:above_cam"
  c.sanity.nulls = ("smooth_random",)
  assert sanity.stages(c) == ("logits",)


def test_checklist_fields_are_validated():
  c = perceptual_cam.get_config("quick")
  perceptual_study.validate(c)
  assert perceptual_study.checklist.options(c).examples == 8
  for field, value in (("examples", 0), ("restarts", 1), ("square_queries", 0)):
    bad = perceptual_cam.get_config("quick")
    bad.attack.checklist[field] = value
    with pytest.raises(ValueError, match=rf"^attack\.checklist\.{field} "):
      perceptual_study.validate(bad)
