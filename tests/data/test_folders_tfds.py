"""Image folders (class sub-folders or a labels file) and TFDS sources read via data_source."""

import io
import os

import cv2
import numpy as np
import pytest

from percadv_jax import data


def _write(path, value, shape=(20, 30)):
  img = np.zeros(shape + (3,), np.uint8)
  img[..., 0] = value
  img[5:15, 10:20, 1] = 255
  cv2.imwrite(str(path), img)


def test_image_folder_classes_corrupt_and_labels_file(tmp_path):
  root = tmp_path / "imgs"
  for c, name in enumerate(["cat", "dog"]):
    os.makedirs(root / name)
    for k in range(3):
      _write(root / name / f"{k}.{'jpg' if c else 'png'}", 40 * k + c)
  (root / "dog" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
  (root / "cat" / "notes.txt").write_text("ignored")
  src = data.load("image_folder", split="val", root=str(root), image_size=16)
  assert len(src) == 6 and src.info.class_names == ("cat", "dog")
  assert src.info.skipped == {"unreadable_image": 1} and not src.info.has_masks
  ex = src[4]
  assert ex["label"] == 1 and ex["image"].shape == (16, 16, 3) and (ex["mask"] == 1).all()
  b = data.to_arrays(src)
  assert b["image"].shape == (6, 16, 16, 3) and list(b["label"]) == [0, 0, 0, 1, 1, 1]
  # Files plus a labels file (names or integers).
  (root / "labels.txt").write_text("cat/0.png dog\ndog/1.jpg cat\ndog/missing.jpg dog\n")
  src2 = data.load("image_folder", split="x", root=str(root), labels_file="labels.txt",
                   image_size=8, resize="stretch")
  assert len(src2) == 2 and src2.info.class_names == ("cat", "dog")
  assert [src2[i]["label"] for i in range(2)] == [1, 0]
  assert src2.info.skipped == {"missing_file": 1}
  with pytest.raises(FileNotFoundError, match="does not exist"):
    data.load("image_folder", split="val", root=str(tmp_path / "nope"))


@pytest.fixture(scope="module")
def fake_pets(tmp_path_factory):
  """A prepared array_record copy of TFDS's oxford_iiit_pet (its real builder, features and
  version), written without TensorFlow from pre-encoded JPEG/PNG bytes."""
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  real = tfds.builder_cls("oxford_iiit_pet")

  class FakePets(real, skip_registration=True):
    name = "oxford_iiit_pet"
    code_path = None  # no checksums file for this test-defined class

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(5), "test": self._generate_examples(3)}

    def _generate_examples(self, n):
      for i in range(n):
        img = np.full((20, 24, 3), 30 * i, np.uint8)
        tri = np.full((20, 24, 1), 2, np.uint8)  # 1 pet, 2 background, 3 border
        tri[4:16, 4:20] = 3
        tri[5:15, 5:19] = 1
        yield f"k{i}", {"image": io.BytesIO(cv2.imencode(".jpg", img)[1].tobytes()),
                        "label": 7 * i, "species": i % 2, "file_name": f"x{i}.jpg",
                        "segmentation_mask": io.BytesIO(cv2.imencode(".png", tri)[1].tobytes()),
                        "head_bbox": tfds.features.BBox(0.1, 0.1, 0.5, 0.5)}

  d = str(tmp_path_factory.mktemp("tfds"))
  FakePets(data_dir=d, file_format="array_record").download_and_prepare()
  return d


def test_tfds_oxford_pet_via_data_source(fake_pets):
  src = data.load("oxford_iiit_pet", split="train", data_dir=fake_pets, image_size=24,
                  resize="stretch")
  assert len(src) == 5 and src.info.num_classes == 37 and src.info.has_masks
  assert src.info.mask_source == "trimap"
  labels = sorted(src[i]["label"] for i in range(5))
  assert labels == [0, 7, 14, 21, 28]
  for i in range(5):
    ex = src[i]
    assert ex["image"].shape == (24, 24, 3) and ex["image"].dtype == np.uint8
    # trimap != 2 is the 12 x 16 pet-plus-border block; stretched 20x24 -> 24x24.
    want = np.zeros((20, 24), np.uint8)
    want[4:16, 4:20] = 1
    want = cv2.resize(want.astype(np.float32), (24, 24), interpolation=cv2.INTER_LINEAR) >= 0.5
    np.testing.assert_array_equal(ex["mask"], want.astype(np.uint8))
  b = next(data.batches(src, batch_size=4))
  assert b["image"].shape == (4, 24, 24, 3) and b["mask"].shape == (4, 24, 24, 1)
  assert len(data.load("oxford_iiit_pet", split="test", data_dir=fake_pets)) == 3


def test_tfds_not_prepared_says_how(tmp_path):
  with pytest.raises(FileNotFoundError, match="tfds build imagenet2012"):
    data.load("imagenet2012", split="validation", data_dir=str(tmp_path))


def test_tfds_oxford_pet_boundary_choice_and_stats(fake_pets):
  from percadv_jax.data import stats
  inner = data.load("oxford_iiit_pet", split="train", data_dir=fake_pets, image_size=24,
                    resize="stretch", boundary="background")
  assert inner.info.extra["foreground_values"] == [1]
  want = np.zeros((20, 24), np.uint8)
  want[5:15, 5:19] = 1  # trimap == 1 only: the pet without its boundary band
  want = cv2.resize(want.astype(np.float32), (24, 24), interpolation=cv2.INTER_LINEAR) >= 0.5
  for i in range(len(inner)):
    np.testing.assert_array_equal(inner[i]["mask"], want.astype(np.uint8))
  outer = data.load("oxford_iiit_pet", split="train", data_dir=fake_pets, image_size=24,
                    resize="stretch")
  share_in = stats.foreground_share(inner)["mean"]
  share_out = stats.foreground_share(outer)
  assert share_out["mask_source"] == "trimap" and share_out["examples"] == 5
  np.testing.assert_allclose(share_in, want.mean())
  assert share_out["mean"] > share_in and share_out["std"] == 0.0
  rows = stats.class_counts({"train": outer, "test": data.load(
      "oxford_iiit_pet", split="test", data_dir=fake_pets)})
  assert len(rows) == 38 and rows[-1] == {"label": "", "class": "total", "train": 5, "test": 3,
                                          "total": 8}
  assert rows[7]["train"] == 1 and rows[7]["test"] == 1  # labels 0, 7, 14 in both splits
  with pytest.raises(ValueError, match="boundary must be"):
    data.load("oxford_iiit_pet", split="train", data_dir=fake_pets, boundary="both")


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory):
  """A prepared array_record copy of TFDS's imagenet2012 (its real builder, 1000 class names),
  written without TensorFlow."""
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  real = tfds.builder_cls("imagenet2012")

  class FakeImagenet(real, skip_registration=True):
    name = "imagenet2012"
    code_path = None  # no checksums file for this test-defined class

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples_n(4), "validation": self._generate_examples_n(3)}

    def _generate_examples_n(self, n):
      for i in range(n):
        img = np.zeros((30, 40, 3), np.uint8)
        img[:, 4:36] = (40 * i, 100, 200)  # holds the centre crop (30 x 30 of 30 x 40)
        yield f"k{i}", {"image": io.BytesIO(cv2.imencode(".png", img[..., ::-1])[1].tobytes()),
                        "label": 100 * i + 1, "file_name": f"n{i}.JPEG"}

  d = str(tmp_path_factory.mktemp("tfds_imagenet"))
  FakeImagenet(data_dir=d, file_format="array_record").download_and_prepare()
  return d


def test_tfds_imagenet2012_via_data_source(fake_imagenet):
  src = data.load("imagenet2012", split="validation", data_dir=fake_imagenet, image_size=15)
  assert len(src) == 3 and src.info.num_classes == 1000 and not src.info.has_masks
  assert src.info.class_names[1] == "n01443537" and src.info.mask_source == "none"
  got = sorted((src[i]["label"], tuple(src[i]["image"][7, 7])) for i in range(3))
  assert got == [(1, (0, 100, 200)), (101, (40, 100, 200)), (201, (80, 100, 200))]
  for i in range(3):  # the centre crop removed the black side bands
    ex = src[i]
    assert ex["image"].shape == (15, 15, 3) and (ex["image"][..., 2] > 150).all()
    assert (ex["mask"] == 1).all()
  b = data.to_arrays(src)
  assert b["image"].shape == (3, 15, 15, 3) and b["mask"].min() == 1.0
  assert len(data.load("imagenet2012", split="train", data_dir=fake_imagenet)) == 4
