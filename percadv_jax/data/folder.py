"""Image folders and TFDS datasets, for the perceptual study on real photographs.

``image_folder``: an ImageNet-style tree ``root/<class_name>/*.{jpg,jpeg,png,ppm,bmp,webp}``
(classes sorted by name), or image files plus a labels file of lines ``<relative path> <label>``
(whitespace or comma separated; the label an integer or a class name). No masks: the mask is all
ones and ``info.has_masks`` is False.

TFDS (``tfds.data_source``, array_record files, no TensorFlow needed), read from a ``data_dir``
where the user has prepared them (``tfds build``) -- nothing is downloaded:

* ``oxford_iiit_pet``: 37 breeds; TFDS's ``segmentation_mask`` is the dataset's trimap: 1 = pet
  (foreground), 2 = background, 3 = "not classified", the band a few pixels wide along the pet's
  outline. ``boundary="foreground"`` (default) gives the mask ``trimap != 2`` (pet and band: the
  band holds the pet's outer fur and edge pixels, so the whole animal is inside the mask);
  ``boundary="background"`` gives ``trimap == 1`` (only pixels surely on the pet).
* ``imagenet2012``: 1000 classes, no masks (all ones).
* ``tfds``: any other TFDS dataset, ``tfds_name=...``, ``image_key``/``label_key``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from percadv_jax.data import raw
from percadv_jax.data.source import DatasetInfo, _check_index

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp")
DEFAULT_IMAGE_SIZE = 224


class ImageFolderSource:
  """Random access over image files; decoding and resizing happen in ``__getitem__``."""

  def __init__(self, paths: list[str], labels: list[int], info: DatasetInfo, resize: str):
    self.paths, self.labels = paths, np.asarray(labels, np.int64)
    self.info, self.resize = info, resize

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = _check_index(i, len(self))
    img = raw.read_rgb(self.paths[i])
    if img is None:
      raise OSError(f"{self.paths[i]} became unreadable after it was verified")
    s = self.info.image_size
    return {"image": raw.resize_square(img, s, mode=self.resize),
            "mask": np.ones((s, s), np.uint8), "label": int(self.labels[i])}


def _read_labels_file(root: str, labels_file: str) -> tuple[list[str], list[Any]]:
  path = labels_file if os.path.isabs(labels_file) else os.path.join(root, labels_file)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"expected the labels file {path} (lines '<relative path> <label>')")
  files, labels = [], []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      parts = line.replace(",", " ").split()
      if len(parts) != 2:
        raise ValueError(f"{path}:{n}: expected '<relative path> <label>', got {line!r}")
      files.append(parts[0])
      labels.append(int(parts[1]) if parts[1].lstrip("-").isdigit() else parts[1])
  return files, labels


def _check_resize(resize: str) -> str:
  if resize not in ("center_crop", "stretch"):
    raise ValueError(f"resize must be 'center_crop' or 'stretch', got {resize!r}")
  return resize


def load_image_folder(*, split: str, data_dir: str | None = None,
                      image_size: int | None = None, root: str | None = None,
                      labels_file: str | None = None, class_names: list[str] | None = None,
                      resize: str = "center_crop", verify: bool = True) -> ImageFolderSource:
  """An image-folder source.

  Args:
    split: a sub-folder of ``root`` (``root/<split>/<class>/...``) when it exists, else ``root``
      itself is read (the split name is then only recorded in info).
    data_dir: used as ``root`` when ``root`` is not given.
    image_size: output side (default 224); ``resize`` = ``"center_crop"`` or ``"stretch"``.
    labels_file: read files and labels from it instead of class sub-folders.
    class_names: with a labels file of integer labels, their names (default ``"0"``, ``"1"``...).
    verify: decode every file once now, so unreadable ones are skipped (counted in
      ``info.skipped["unreadable_image"]``) instead of failing later.
  """
  root = root or data_dir
  if root is None:
    raise ValueError("image_folder needs root= (or data_dir=) pointing at the folder")
  image_size = raw.check_image_size(image_size)
  _check_resize(resize)
  if os.path.exists(root) and not os.path.isdir(root):
    raise raw.DataPathError(f"image folder {root} is a file, not a folder")
  if not os.path.isdir(root):
    raise raw.DataPathError(f"image folder {root} does not exist")
  if os.path.isdir(os.path.join(root, split)):
    root = os.path.join(root, split)
  size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
  skipped: dict[str, int] = {}
  if labels_file is not None:
    files, raw_labels = _read_labels_file(root, labels_file)
    if all(isinstance(v, int) for v in raw_labels):
      n_cls = max(raw_labels) + 1 if raw_labels else 0
      names = list(class_names) if class_names is not None else [str(c) for c in range(n_cls)]
      labels = list(raw_labels)
    else:
      names = list(class_names) if class_names is not None else sorted(set(map(str, raw_labels)))
      index = {n: i for i, n in enumerate(names)}
      labels = [index[str(v)] if not isinstance(v, int) else v for v in raw_labels]
    paths = [os.path.join(root, f) for f in files]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
      skipped["missing_file"] = len(missing)
      keep = [i for i, p in enumerate(paths) if os.path.isfile(p)]
      paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
  else:
    names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not names:
      raise FileNotFoundError(f"no class sub-folders in {root}; expected root/<class>/*.jpg or a "
                              "labels_file")
    paths, labels = [], []
    for c, name in enumerate(names):
      for f in sorted(os.listdir(os.path.join(root, name))):
        if f.lower().endswith(IMAGE_EXTENSIONS):
          paths.append(os.path.join(root, name, f))
          labels.append(c)
  if verify:
    ok = [raw.read_rgb(p) is not None for p in paths]
    if not all(ok):
      skipped["unreadable_image"] = ok.count(False)
      paths = [p for p, k in zip(paths, ok) if k]
      labels = [y for y, k in zip(labels, ok) if k]
  if not paths:
    raise ValueError(f"no readable images found under {root}")
  info = DatasetInfo(
      name="image_folder", split=split, num_classes=len(names), class_names=tuple(names),
      image_size=size, num_examples=len(paths), has_masks=False, mask_source="none",
      source=root + (f" + {labels_file}" if labels_file else ""), skipped=skipped,
      extra={"resize": resize})
  return ImageFolderSource(paths, labels, info, resize)


# ----------------------------------------------------------------------------- TFDS

TFDS_SPECS = {
    "oxford_iiit_pet": {"image_key": "image", "label_key": "label",
                        "mask_key": "segmentation_mask", "mask_source": "trimap"},  # 1 pet,
    # 2 background, 3 boundary band
    "imagenet2012": {"image_key": "image", "label_key": "label", "mask_key": None,
                     "mask_source": "none"},
}


class TfdsSource:
  """Wraps a ``tfds.data_source`` (random access, NumPy decoding, no TensorFlow)."""

  def __init__(self, ds, info: DatasetInfo, *, image_key: str, label_key: str,
               mask_key: str | None, resize: str, foreground: tuple[int, ...] = (1, 3)):
    self.ds, self.info = ds, info
    self.image_key, self.label_key, self.mask_key, self.resize = (image_key, label_key,
                                                                  mask_key, resize)
    self.foreground = tuple(foreground)

  def __len__(self) -> int:
    return len(self.ds)

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = _check_index(i, len(self))
    ex = self.ds[i]
    img = np.asarray(ex[self.image_key])
    if img.ndim == 2:
      img = img[..., None]
    if img.shape[-1] == 1:
      img = np.repeat(img, 3, -1)
    img = np.ascontiguousarray(img[..., :3]).astype(np.uint8)
    s = self.info.image_size
    if self.mask_key is None:
      mask = np.ones((s, s), np.uint8)
    else:
      trimap = np.asarray(ex[self.mask_key]).reshape(img.shape[:2])
      mask = raw.resize_mask(np.isin(trimap, self.foreground).astype(np.uint8), s,
                             mode=self.resize)
    return {"image": raw.resize_square(img, s, mode=self.resize), "mask": mask,
            "label": int(ex[self.label_key])}


def load_tfds(*, split: str, data_dir: str | None = None, image_size: int | None = None,
              tfds_name: str, image_key: str = "image", label_key: str = "label",
              mask_key: str | None = None, mask_source: str = "none",
              resize: str = "center_crop", foreground: tuple[int, ...] = (1, 3)) -> TfdsSource:
  """A TFDS dataset prepared under ``data_dir`` (default: TFDS's own default data dir).

  Args:
    split: a TFDS split string (``"train"``, ``"test[:10%]"`` ...).
    data_dir: the TFDS data dir holding ``<tfds_name>/<version>/``.
    image_size: output side (default 224).
    tfds_name: the TFDS dataset name.
    image_key, label_key: feature names of the image and the class label.
    mask_key: feature holding a label map (e.g. a trimap), or ``None`` for all-ones masks.
    mask_source: recorded in ``info.mask_source``.
    resize: ``"center_crop"`` or ``"stretch"``.
    foreground: values of ``mask_key`` that are foreground.

  Returns:
    a :class:`TfdsSource` (random access; decoding happens in ``__getitem__``).
  """
  import tensorflow_datasets as tfds
  image_size = raw.check_image_size(image_size)
  _check_resize(resize)
  if data_dir is not None:
    raw.check_dir(data_dir, "TFDS data_dir")
  if data_dir is not None and not os.path.isdir(os.path.join(data_dir, tfds_name)):
    raise raw.DataPathError(
        f"no prepared TFDS dataset {tfds_name!r} under {data_dir} (expected "
        f"{os.path.join(data_dir, tfds_name)}/<version>/*.array_record*). Prepare it with "
        f"`tfds build {tfds_name} --data_dir={data_dir} --file_format=array_record` (manual "
        "downloads as TFDS documents); nothing is downloaded here")
  try:
    ds = tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises several types for "not prepared"
    raise raw.DataPathError(
        f"TFDS dataset {tfds_name!r} split {split!r} is not prepared under "
        f"{data_dir or 'the TFDS default data_dir'} ({type(e).__name__}: {e}). Prepare it with "
        f"`tfds build {tfds_name} --data_dir=DIR --file_format=array_record` (manual downloads "
        "as TFDS documents) and pass data_dir=DIR") from e
  feats = ds.dataset_info.features
  label_feat = feats[label_key]
  names = tuple(getattr(label_feat, "names", None) or
                [str(c) for c in range(label_feat.num_classes)])
  info = DatasetInfo(
      name=tfds_name, split=split, num_classes=len(names), class_names=names,
      image_size=DEFAULT_IMAGE_SIZE if image_size is None else int(image_size),
      num_examples=len(ds), has_masks=mask_key is not None, mask_source=mask_source,
      source=f"tfds.data_source({tfds_name!r}, split={split!r}, data_dir={data_dir!r}) "
             f"version {ds.dataset_info.version}",
      skipped={}, extra={"resize": resize, "foreground_values": list(foreground)
                         if mask_key is not None else []})
  return TfdsSource(ds, info, image_key=image_key, label_key=label_key, mask_key=mask_key,
                    resize=resize, foreground=foreground)


def load_oxford_iiit_pet(*, split: str, data_dir: str | None = None,
                         image_size: int | None = None, resize: str = "center_crop",
                         boundary: str = "foreground") -> TfdsSource:
  """TFDS ``oxford_iiit_pet`` through ``tfds.data_source``, trimap foreground masks.

  Args:
    split: ``"train"`` (3,680 images) or ``"test"`` (3,669), or a TFDS split string.
    data_dir: the TFDS data dir where ``tfds build oxford_iiit_pet`` wrote it.
    image_size: output side (default 224).
    resize: ``"center_crop"`` (default) or ``"stretch"``.
    boundary: where the trimap's boundary band (value 3) goes: ``"foreground"`` (default; mask
      = trimap in {1, 3}) or ``"background"`` (mask = trimap == 1).

  Returns:
    a source of uint8 [S,S,3] images, uint8 [S,S] masks and the 37 breed labels.
  """
  if boundary not in ("foreground", "background"):
    raise ValueError(f"boundary must be 'foreground' or 'background', got {boundary!r}")
  return load_tfds(split=split, data_dir=data_dir, image_size=image_size,
                   tfds_name="oxford_iiit_pet", resize=resize,
                   foreground=(1, 3) if boundary == "foreground" else (1,),
                   **TFDS_SPECS["oxford_iiit_pet"])


def load_imagenet2012(*, split: str, data_dir: str | None = None, image_size: int | None = None,
                      resize: str = "center_crop") -> TfdsSource:
  """TFDS ``imagenet2012`` through ``tfds.data_source``; no masks (all ones).

  Args:
    split: ``"train"`` or ``"validation"`` (or a TFDS split string).
    data_dir: the TFDS data dir where ``tfds build imagenet2012`` wrote it (manual download).
    image_size: output side (default 224).
    resize: ``"center_crop"`` (default, the usual ImageNet evaluation crop) or ``"stretch"``.
  """
  return load_tfds(split=split, data_dir=data_dir, image_size=image_size,
                   tfds_name="imagenet2012", resize=resize, **TFDS_SPECS["imagenet2012"])
