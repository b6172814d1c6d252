"""GTSRB-IC from official-format fixtures; GrabCut accuracy; crash-safe resumable cache."""

import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from percadv_jax import data
from percadv_jax.data import cache, gtsrb, raw, segment, synthetic
from tests.data.gtsrb_fixture import write_gtsrb


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("gtsrb_raw")
  truth = write_gtsrb(str(root))
  return str(root), truth


@pytest.fixture(scope="module")
def prepared(raw_dir, tmp_path_factory):
  root, truth = raw_dir
  data_dir = str(tmp_path_factory.mktemp("gtsrb_cache"))
  for split in ("train", "test"):
    gtsrb.prepare(raw_dir=root, data_dir=data_dir, split=split, image_size=32, shard_size=5,
                  progress=False)
  return data_dir, truth


def test_counts_labels_masks_and_skips(prepared):
  data_dir, truth = prepared
  train = data.load("gtsrb_ic", split="train", data_dir=data_dir)
  test = data.load("gtsrb_ic", split="test", data_dir=data_dir)
  assert len(train) == len(truth["train"]) == 12 and len(test) == 6
  assert train.info.num_classes == 43 and train.info.class_names[14] == "Stop"
  assert train.info.image_size == 32 and train.info.mask_source == "grabcut"
  want = {rel: lab for rel, lab, _ in truth["train"]}
  assert {str(i): int(l) for i, l in zip(train.ids, train.labels)} == want
  assert list(test.labels) == [lab for _, lab, _ in truth["test"]]
  # Defects are counted, not fatal.
  sk = train.info.skipped
  assert sk["missing_file"] == 1 and sk["bad_csv_row"] == 1 and sk["unreadable_image"] == 1
  assert sk["label_mismatch"] == 1 and sk["unlisted_file"] == 1
  for src in (train, test):
    ex = src[0]
    assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
    assert set(np.unique(src.masks)) <= {0, 1}
    assert (src.masks.reshape(len(src), -1).sum(1) > 0).all()  # every mask non-empty
  # Masks agree with the signs' true shapes (resized to 32).
  ious = [segment.iou(m, cv2.resize(t.astype(np.float32), (32, 32),
                                    interpolation=cv2.INTER_AREA) >= 0.5)
          for m, (_, _, t) in zip(test.masks, truth["test"])]
  assert np.mean(ious) >= 0.7, ious


def test_grabcut_iou_on_synthetic_signs():
  """GrabCut seeded by the sign's box vs the rendered mask (the masks paper's segmenter)."""
  res = {}
  for size in (64, 32):
    ious, base = [], []
    for split in ("train", "test"):
      for i in range(8):
        ex = synthetic.render_example(i, seed=11, split=split, image_size=size, num_classes=43)
        ys, xs = np.nonzero(ex["mask"])
        roi = (xs.min(), ys.min(), xs.max(), ys.max())
        m, _ = segment.grabcut_mask(ex["image"], roi)
        ious.append(segment.iou(m, ex["mask"]))
        box = np.zeros_like(ex["mask"])
        box[roi[1]:roi[3] + 1, roi[0]:roi[2] + 1] = 1
        base.append(segment.iou(box, ex["mask"]))
    res[size] = (np.mean(ious), np.mean(base))
  print("GrabCut mean IoU (ROI box baseline): "
        + ", ".join(f"{s}px {a:.3f} ({b:.3f})" for s, (a, b) in res.items()))
  for size, (iou, box_iou) in res.items():
    assert iou >= 0.7 and iou > box_iou, (size, iou, box_iou)


def test_grabcut_deterministic_and_validates():
  ex = synthetic.render_example(3, seed=1, split="test", image_size=48)
  a, _ = segment.grabcut_mask(ex["image"], (8, 8, 40, 40))
  cv2.setRNGSeed(12345)
  b, _ = segment.grabcut_mask(ex["image"], (8, 8, 40, 40))
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="uint8"):
    segment.grabcut_mask(ex["image"].astype(np.float32), None)


def _files(d):
  return {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}


def test_interrupted_preparation_resumes_to_identical_cache(raw_dir, tmp_path):
  root, _ = raw_dir
  full = str(tmp_path / "full")  # uninterrupted, GrabCut in two worker processes
  gtsrb.prepare(raw_dir=root, data_dir=full, split="train", image_size=24, shard_size=3,
                progress=False, workers=2)

  class Killed(Exception):
    pass

  def kill_after_two(k, n):
    if k == 1:
      raise Killed

  part = str(tmp_path / "part")
  with pytest.raises(Killed):
    gtsrb.prepare(raw_dir=root, data_dir=part, split="train", image_size=24, shard_size=3,
                  on_shard=kill_after_two, progress=False)
  out = cache.split_dir(part, "gtsrb_ic", "train", 24)
  assert sorted(n for n in os.listdir(out) if n.startswith("shard-")) == [
      "shard-00000.npz", "shard-00001.npz"]
  # A stray temporary from a write cut short must not matter either.
  open(os.path.join(out, ".shard-00002.npz.abc.tmp"), "wb").write(b"partial")
  with pytest.raises(FileNotFoundError, match="interrupted"):
    data.load("gtsrb_ic", split="train", data_dir=part, image_size=24)
  done = []
  gtsrb.prepare(raw_dir=root, data_dir=part, split="train", image_size=24, shard_size=3,
                on_shard=lambda k, n: done.append(k), progress=False)
  assert done == [2, 3, 4]  # finished shards were kept, only the rest computed
  assert _files(out) == _files(cache.split_dir(full, "gtsrb_ic", "train", 24))
  src = data.load("gtsrb_ic", split="train", data_dir=part, image_size=24, verify=True)
  assert len(src) == 12


def test_killed_subprocess_then_resume(raw_dir, tmp_path):
  """A real SIGKILL of ``experiments.prepare_data`` mid-run, then a re-run."""
  root, _ = raw_dir
  data_dir = str(tmp_path / "c")
  out = cache.split_dir(data_dir, "gtsrb_ic", "train", 16)
  cmd = [sys.executable, "-m", "experiments.prepare_data",
         "--config=experiments/configs/prepare_data.py:gtsrb", f"--config.raw_dir={root}",
         f"--config.data.data_dir={data_dir}", "--config.data.image_size=16",
         "--config.splits=('train',)", "--config.shard_size=1",
         f"--workdir={tmp_path / 'artefacts'}"]
  env = dict(os.environ, PERCADV_QUIET="1")
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.Popen(cmd, cwd=repo, env=env, stderr=subprocess.DEVNULL)
  deadline = time.time() + 60
  while time.time() < deadline:
    if os.path.isdir(out) and sum(n.startswith("shard-") for n in os.listdir(out)) >= 3:
      break
    time.sleep(0.02)
  proc.kill()
  proc.wait()
  assert not os.path.exists(os.path.join(out, "meta.json"))  # killed before finishing
  with pytest.raises(FileNotFoundError, match="interrupted"):
    cache.load_cached(out)
  subprocess.run(cmd, cwd=repo, env=env, check=True, stderr=subprocess.DEVNULL)
  ref = str(tmp_path / "ref")
  gtsrb.prepare(raw_dir=root, data_dir=ref, split="train", image_size=16, shard_size=1,
                progress=False)
  assert _files(out) == _files(cache.split_dir(ref, "gtsrb_ic", "train", 16))


def test_missing_files_name_path_and_download(tmp_path, raw_dir):
  with pytest.raises(FileNotFoundError, match=r"Final_Training.*benchmark\.ini\.rub\.de"):
    gtsrb.prepare(raw_dir=str(tmp_path), data_dir=str(tmp_path / "d"), split="train")
  with pytest.raises(FileNotFoundError, match=r"prepare_data --dataset=gtsrb_ic"):
    data.load("gtsrb_ic", split="train", data_dir=str(tmp_path / "empty"))
  # Test images present but the separate ground-truth archive missing.
  root = tmp_path / "r"
  write_gtsrb(str(root), classes=(0,), per_class=1, num_test=1, defects=False)
  os.remove(root / "GT-final_test.csv")
  with pytest.raises(FileNotFoundError, match="GT-final_test.csv.*GTSRB_Final_Test_GT.zip"):
    gtsrb.prepare(raw_dir=str(root), data_dir=str(tmp_path / "d"), split="test")
  # A class folder without its CSV.
  os.remove(root / "GTSRB" / "Final_Training" / "Images" / "00000" / "GT-00000.csv")
  with pytest.raises(FileNotFoundError, match="GT-00000.csv"):
    gtsrb.prepare(raw_dir=str(root), data_dir=str(tmp_path / "d"), split="train")


def test_segmenters_compared(tmp_path):
  """Both GTSRB segmenters against the fixture's true sign masks; the default is the better.

  The measured values are quoted in percadv_jax/data/segment.py's docstring.
  """
  root = str(tmp_path / "raw")
  truth = write_gtsrb(root, classes=range(0, 43, 4), per_class=2, num_test=2, defects=False)
  items, _, _ = gtsrb.list_items(root, "train")
  assert len(items) == 22
  masks = {rel: m for rel, _, m in truth["train"]}
  ious = {"roi": [], "centre": []}
  box = []
  for it in items:
    img = raw.read_rgb(it["path"])
    want = masks[it["id"]]
    assert img.shape[:2] == want.shape
    ious["roi"].append(segment.iou(segment.grabcut_mask(img, it["roi"])[0], want))
    ious["centre"].append(segment.iou(segment.centre_grabcut_mask(img)[0], want))
    x1, y1, x2, y2 = it["roi"]
    b = np.zeros_like(want)
    b[y1:y2 + 1, x1:x2 + 1] = 1
    box.append(segment.iou(b, want))
  mean = {k: float(np.mean(v)) for k, v in ious.items()}
  print(f"GTSRB fixture mean IoU: roi {mean['roi']:.3f}, centre {mean['centre']:.3f}, "
        f"ROI box {np.mean(box):.3f}")
  assert gtsrb.DEFAULT_SEGMENTER == max(mean, key=mean.get)
  assert mean["roi"] >= 0.8 and mean["centre"] >= 0.65, mean
  assert mean["centre"] > 0.5 * np.mean(box)  # a real segmentation, not a trivial blob


def test_centre_segmenter_cache_and_skipped_files(raw_dir, tmp_path):
  root, truth = raw_dir
  d = str(tmp_path / "c")
  gtsrb.prepare(raw_dir=root, data_dir=d, split="test", image_size=16, segmenter="centre",
                progress=False)
  gtsrb.prepare(raw_dir=root, data_dir=d, split="test", image_size=16, progress=False)
  names = sorted(os.listdir(os.path.join(d, "gtsrb_ic")))
  assert names[0] == "test_16px" and names[1].startswith("test_16px-centre-"), names
  c = data.load("gtsrb_ic", split="test", data_dir=d, segmenter="centre")
  r = data.load("gtsrb_ic", split="test", data_dir=d, segmenter="roi")
  assert c.info.mask_source == "grabcut_centre" and r.info.mask_source == "grabcut"
  assert len(c) == len(r) == 6 and c.images.tobytes() == r.images.tobytes()
  with pytest.raises(ValueError, match="several caches.*test_16px-centre"):
    data.load("gtsrb_ic", split="test", data_dir=d)
  # Skipped training files are named in info and in the warning.
  with pytest.warns(UserWarning, match=r"missing_file \(.*missing_00000\.ppm\).*"
                                       r"unreadable_image \(.*trunc\.ppm\)"):
    train = gtsrb.load(split="train", data_dir=d, raw_dir=root, image_size=16, progress=False)
  named = train.info.extra["skipped_files"]
  assert named["unreadable_image"][0].endswith("00000/trunc.ppm")
  assert named["missing_file"][0].endswith("00000/missing_00000.ppm")
  assert named["bad_csv_row"][0].endswith("GT-00000.csv:7")
  assert named["label_mismatch"][0].endswith("wrong.ppm")
  assert named["unlisted_file"][0].endswith("unlisted.ppm")
  assert {k: train.info.skipped[k] for k in named} == {k: 1 for k in named}


@pytest.mark.parametrize("kw, match", [
    ({"image_size": -5}, "image_size must be an integer >= 8"),
    ({"image_size": 32.5}, "image_size must be an integer"),
    ({"shard_size": 0}, "shard_size must be an integer >= 1"),
    ({"workers": 0}, "workers must be an integer >= 1"),
    ({"segmenter": "magic"}, "unknown segmenter 'magic'"),
    ({"grabcut": {"iterations": 0}}, "iterations must be an integer >= 1"),
    ({"grabcut": {"bogus": 1}}, r"unknown options \['bogus'\]"),
    ({"segmenter": "centre", "grabcut": {"spread": 0}}, "spread must be > 0"),
])
def test_bad_arguments(raw_dir, tmp_path, kw, match):
  root, _ = raw_dir
  args = dict(raw_dir=root, data_dir=str(tmp_path / "d"), split="test", progress=False)
  with pytest.raises(ValueError, match=match):
    gtsrb.prepare(**{**args, **kw})


def test_bad_paths_are_one_line_value_errors(tmp_path, raw_dir):
  root, _ = raw_dir
  for kw, match in (({"raw_dir": str(tmp_path / "nope")}, "raw_dir .*nope does not exist"),
                    ({"raw_dir": __file__}, "raw_dir .*test_gtsrb_ic.py is a file")):
    with pytest.raises(ValueError, match=match) as e:
      gtsrb.prepare(data_dir=str(tmp_path / "d"), split="test", progress=False, **kw)
    assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="data_dir .*test_gtsrb_ic.py is a file"):
    gtsrb.prepare(raw_dir=root, data_dir=__file__, split="test", progress=False)
  with pytest.raises(ValueError, match="no prepared GTSRB-IC cache at .*empty"):
    data.load("gtsrb_ic", split="test", data_dir=str(tmp_path / "empty"))
