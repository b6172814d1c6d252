"""Damaged caches name the file and are repaired by re-preparing; index and argument checks."""

import json
import re
import os

import numpy as np
import pytest

from percadv_jax import data
from percadv_jax.data import cache


def _process(i):
  rng = np.random.default_rng(i)
  img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
  mask = (rng.random((8, 8)) < 0.5).astype(np.uint8)
  if i == 3:
    return [], {"unreadable_image": 1}, {"unreadable_image": [f"/raw/{i}.ppm"]}
  return [(img, mask, i % 2, f"item{i}")], {}


def _info(skipped, n):
  return {"name": "toy", "split": "train", "num_classes": 2, "class_names": ["a", "b"],
          "mask_source": "rendered", "source": "test", "extra": {}}


def _prepare(out, **kw):
  return cache.prepare(out, list(range(7)), _process, params={"p": 1}, image_size=8,
                       shard_size=3, info=_info, progress=False, **kw)


def test_skipped_files_recorded_and_warned(tmp_path):
  out = str(tmp_path / "toy" / "train_8px")
  with pytest.warns(UserWarning, match=r"1 unreadable_image \(/raw/3\.ppm\)"):
    _prepare(out)
  src = cache.load_cached(out)
  assert len(src) == 6 and src.info.skipped == {"unreadable_image": 1}
  assert src.info.extra["skipped_files"] == {"unreadable_image": ["/raw/3.ppm"]}


@pytest.mark.parametrize("damage", ["truncate", "zero", "garbage", "delete_member"])
def test_corrupt_shard_names_file_and_prepare_repairs_it(tmp_path, damage):
  out = str(tmp_path / "toy" / "train_8px")
  with pytest.warns(UserWarning):
    _prepare(out)
  good = cache.load_cached(out).images  # read now: a loaded source reads its rows when asked
  shard = os.path.join(out, "shard-00001.npz")
  blob = open(shard, "rb").read()
  if damage == "truncate":
    blob = blob[:len(blob) // 2]
  elif damage == "zero":
    blob = b"\0" * len(blob)
  elif damage == "garbage":
    blob = b"not a zip file"
  if damage == "delete_member":  # a valid .npz without the images
    cache.write_npz(shard, {k: v for k, v in cache.read_npz(shard).items() if k != "images"})
  else:
    with open(shard, "wb") as f:
      f.write(blob)
  with pytest.raises(ValueError, match=f"cache shard {shard}") as e:
    cache.load_cached(out)
  assert "\n" not in str(e.value)
  with pytest.warns(UserWarning, match=r"rebuilding damaged cache shards \['shard-00001.npz'\]"):
    _prepare(out)
  fixed = cache.load_cached(out, verify=True)
  assert fixed.images.tobytes() == good.tobytes()


def _set(key, fn):
  return lambda z: {**z, key: fn(z[key])}


def _label_at(i, v):
  def fn(a):
    a = a.copy()
    a[i] = v
    return a
  return fn


@pytest.mark.parametrize("damage, problem", [
    (_set("labels", _label_at(0, 99)), r"label 99 at index 0 is outside \[0, 2\)"),
    (_set("labels", _label_at(1, -1)), r"label -1 at index 1 is outside \[0, 2\)"),
    (_set("labels", lambda a: a.astype(np.float32)), "labels have dtype float32, expected int"),
    (_set("labels", lambda a: a[:, None]), r"labels have shape \(2, 1\), expected \[n\]"),
    (_set("masks", lambda a: a * 255), "masks hold values up to 255, expected only 0 and 1"),
    (_set("masks", lambda a: a.astype(np.float32)), "masks have dtype float32, expected uint8"),
    (_set("images", lambda a: np.zeros((2, 16, 16, 3), np.uint8)),
     r"images have shape \(2, 16, 16, 3\), expected \(2, 8, 8, 3\) \(2 examples of 8x8\)"),
    (_set("masks", lambda a: a[:, :, :7]), r"masks have shape \(2, 8, 7\), expected \(2, 8, 8\)"),
    (_set("ids", lambda a: a[:1]), r"ids have shape \(1,\), expected \(2,\)"),
], ids=["label99", "label-1", "float_labels", "2d_labels", "mask255", "float_masks", "16px",
        "mask_shape", "ids"])
def test_valid_npz_with_wrong_content_names_file_and_problem(tmp_path, damage, problem):
  # A well-formed .npz whose arrays break the format or meta.json: loading must refuse it by
  # default (no verify), naming the shard and what is wrong, not return labels 99 or masks 255.
  out = str(tmp_path / "toy" / "train_8px")
  with pytest.warns(UserWarning):
    _prepare(out)
  shard = os.path.join(out, "shard-00001.npz")
  cache.write_npz(shard, damage(cache.read_npz(shard)))
  with pytest.raises(ValueError, match=re.escape(f"cache shard {shard}") + ".*" + problem):
    cache.load_cached(out)
  with pytest.raises(ValueError, match=re.escape(f"cache shard {shard}")):
    cache.load_cached(out, verify=True)  # the SHA-256 differs too


def test_meta_json_counts_must_match_shards(tmp_path):
  out = str(tmp_path / "toy" / "train_8px")
  with pytest.warns(UserWarning):
    _prepare(out)
  meta_path = os.path.join(out, "meta.json")
  meta = json.load(open(meta_path))
  for key, value, match in (("num_examples", 99, "num_examples=99 but its shards hold 6"),
                            ("image_size", "8", "image_size='8', expected a positive integer")):
    with open(meta_path, "w") as f:
      json.dump({**meta, key: value}, f)
    with pytest.raises(ValueError, match=re.escape(f"cache index {meta_path}") + ".*" + match):
      cache.load_cached(out)


def test_corrupt_meta_json_names_file(tmp_path):
  out = str(tmp_path / "toy" / "train_8px")
  with pytest.warns(UserWarning):
    _prepare(out)
  meta = os.path.join(out, "meta.json")
  text = open(meta).read()
  with open(meta, "w") as f:
    f.write(text[:len(text) // 2])
  with pytest.raises(ValueError, match=re.escape(meta) + ".*corrupt"):
    cache.load_cached(out)
  with open(meta, "w") as f:
    json.dump({"format_version": 1}, f)
  with pytest.raises(ValueError, match=f"cache index {meta} is incomplete"):
    cache.load_cached(out)


def test_prepare_rejects_bad_arguments(tmp_path):
  out = str(tmp_path / "toy" / "train_8px")
  with pytest.raises(ValueError, match="shard_size must be an integer >= 1"):
    cache.prepare(out, [1], _process, params={}, image_size=8, shard_size=0, info=_info)
  with pytest.raises(ValueError, match="workers must be an integer >= 1"):
    _prepare(out, workers=0)
  with pytest.raises(ValueError, match="image_size must be an integer >= 1"):
    cache.prepare(out, [1], _process, params={}, image_size=-5, info=_info)
  (tmp_path / "file").write_text("x")
  with pytest.raises(ValueError, match="data_dir .*file is a file"):
    cache.prepare(str(tmp_path / "file" / "toy" / "train_8px"), [1], _process, params={},
                  image_size=8, info=_info)


def test_to_arrays_indices():
  src = data.load("synthetic_signs", split="test", num_examples=10)
  np.testing.assert_array_equal(data.to_arrays(src, indices=[9, -1])["label"], src.labels[[9, 9]])
  for bad, match in (([1.0, 2.0], "must be integers, got dtype float64"),
                     (np.array([0.7]), "must be integers"),
                     ([True], "must be integers, got dtype bool"),
                     (["1"], "must be integers"),
                     ([0, 10], "index 10 is out of range for a source of 10 examples"),
                     ([-11], "index -11 is out of range"),
                     ([], "at least one index")):
    with pytest.raises(ValueError, match=match):
      data.to_arrays(src, indices=bad)
  with pytest.raises(IndexError):  # still an IndexError for code that catches those
    data.to_arrays(src, indices=[10])
  np.testing.assert_array_equal(data.to_arrays(src, indices=np.array([3], np.uint8))["label"],
                                src.labels[[3]])


def test_load_rejects_bad_numbers_and_paths(tmp_path):
  for name in ("synthetic_signs", "gtsrb_ic", "coco_ic", "image_folder", "oxford_iiit_pet"):
    with pytest.raises(ValueError, match="image_size must be an integer >= 8"):
      data.load(name, split="test", image_size=-5, data_dir=str(tmp_path))
  (tmp_path / "f").write_text("x")
  with pytest.raises(ValueError, match="data_dir .*f is a file"):
    data.load("gtsrb_ic", split="test", data_dir=str(tmp_path / "f"))
  with pytest.raises(ValueError, match="image folder .*missing does not exist"):
    data.load("image_folder", split="test", root=str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="no prepared TFDS dataset 'oxford_iiit_pet' under"):
    data.load("oxford_iiit_pet", split="test", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="TFDS data_dir .*nowhere does not exist"):
    data.load("imagenet2012", split="validation", data_dir=str(tmp_path / "nowhere"))


def test_batches_checks_its_arguments_at_the_call():
  """A bad seed is a ValueError naming seed when ``batches`` is called, not a generator that
  fails (or a NumPy TypeError) later; ``batch_indices`` checks its integers the same way."""
  src = data.load("synthetic_signs", split="test", num_examples=10)
  for seed, shown in (("k", "'k' (str)"), (1.5, "1.5 (float)"), (True, "True (bool)"),
                      (None, "None (NoneType)")):
    with pytest.raises(ValueError, match="^seed must be an integer, got " + re.escape(shown)):
      data.batches(src, batch_size=4, seed=seed)
    with pytest.raises(ValueError, match="^seed must be an integer, got " + re.escape(shown)):
      data.batch_indices(10, 4, seed, 0)
  with pytest.raises(ValueError, match=r"^seed must be an integer >= 0, got -1"):
    data.batches(src, batch_size=4, seed=-1)
  with pytest.raises(ValueError, match="^shuffle must be True or False"):
    data.batches(src, batch_size=4, shuffle="no")
  with pytest.raises(ValueError, match=r"^step must be an integer >= 0, got -1"):
    data.batch_indices(10, 4, 0, -1)
  with pytest.raises(ValueError, match=r"^batch_size must be an integer in \[1, 10\], got 11"):
    data.batch_indices(10, 11, 0, 0)
  got = next(data.batches(src, batch_size=4, seed=np.int64(3), prefetch=0))["label"]
  np.testing.assert_array_equal(got, src.labels[data.batch_indices(10, 4, 3, 0)])
