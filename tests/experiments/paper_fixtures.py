"""Inputs of the paper-preset runs: photographs as an image folder, a Keras MobileNetV2 ``.h5``.

- ``write_photo_folder(root)``: scikit-image's bundled colour photographs (astronaut, coffee,
  chelsea, rocket, ...) as JPEG / PNG files in ``root/photos/`` (one class folder: without a
  labels file the study labels each image with the model's own prediction).
- ``write_mobilenet_v2_h5(path, images)``: ``keras.applications.MobileNetV2(weights=None)``
  (width 1.0, 224 px, 1000 classes) saved by Keras as ``.h5``, with its BatchNorm moving
  statistics recalibrated on ``images`` by ``percadv_jax.train.batchnorm.recalibrate`` and
  written back with h5py. Keras' initial statistics (mean 0, variance 1) leave the random
  network input-insensitive (every ReLU6 saturates: equal logits for every photo); recalibrated,
  each layer's activations are normalised on real images and the logits differ.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina")


def write_photo_folder(root: str, *, names: Sequence[str] = PHOTOS[:6]) -> list[str]:
  """Writes ``root/photos/<name>.{jpg,png}`` (alternating formats); returns the file paths."""
  import cv2
  import skimage.data
  folder = os.path.join(root, "photos")
  os.makedirs(folder, exist_ok=True)
  paths = []
  for i, name in enumerate(names):
    rgb = getattr(skimage.data, name)()[..., :3]
    path = os.path.join(folder, f"{name}.{'jpg' if i % 2 == 0 else 'png'}")
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1])):
      raise OSError(f"could not write {path}")
    paths.append(path)
  return paths


def _numpy_random(seed: int):
  """Keras' random draws (normal / uniform / truncated normal, same arguments) from NumPy.

  Keras' initialisers compute their scales and call these; drawn by JAX each shape compiles an
  XLA program (minutes on a busy CPU for MobileNetV2's 150-odd weights)."""
  rng = np.random.default_rng(seed)

  def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    return rng.normal(mean, stddev, tuple(shape)).astype(np.float32)

  def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    return rng.uniform(minval, maxval, tuple(shape)).astype(np.float32)

  def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    a = rng.normal(0.0, 1.0, tuple(shape))
    bad = np.abs(a) > 2
    while bad.any():
      a[bad] = rng.normal(0.0, 1.0, int(bad.sum()))
      bad = np.abs(a) > 2
    return (mean + stddev * a).astype(np.float32)
  return {"normal": normal, "uniform": uniform, "truncated_normal": truncated_normal}


def keras_mobilenet_v2_h5(path: str, *, image_size: int = 224, seed: int = 0) -> str:
  """Saves ``keras.applications.MobileNetV2(weights=None, alpha=1.0)`` (1000 classes, logits
  without softmax) to ``path`` with ``model.save``; returns ``path``."""
  os.environ.setdefault("KERAS_BACKEND", "jax")
  import keras
  import keras.src.backend.jax.random as keras_jax_random
  draws = _numpy_random(seed)
  saved = {k: getattr(keras_jax_random, k) for k in draws}
  try:
    for k, f in draws.items():
      setattr(keras_jax_random, k, f)
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(image_size, image_size, 3), alpha=1.0, classes=1000,
        classifier_activation=None)
  finally:
    for k, f in saved.items():
      setattr(keras_jax_random, k, f)
  model.save(path)
  return path


def recalibrate_h5(path: str, images: np.ndarray, *, batch_size: int = 8) -> dict:
  """Replaces the BatchNorm moving statistics in the Keras ``.h5`` at ``path`` by the
  population statistics of ``images`` (float32 [N,H,W,3] in [0, 1]).

  Uses the project's loader (``load_keras_weights``: Flax BatchNorm layers carry the Keras
  layer names) and ``recalibrate``; writes ``moving_mean`` / ``moving_variance`` of each layer
  with h5py. Returns ``{layer name: number of channels}`` of the layers rewritten.
  """
  import h5py
  import jax

  from percadv_jax.models import load_keras_weights
  from percadv_jax.train import batchnorm
  module, variables = load_keras_weights("mobilenet_v2", path)
  batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
  stats = batchnorm.recalibrate(module.apply, variables["params"], variables["batch_stats"],
                                batches)
  stats = jax.tree.map(np.asarray, stats)
  written = {}
  with h5py.File(path, "r+") as f:
    root = f["model_weights"] if "model_weights" in f else f
    for layer, s in stats.items():
      group = root[layer]
      names = [n.decode() if isinstance(n, bytes) else str(n)
               for n in group.attrs["weight_names"]]
      for key, suffix in (("mean", "moving_mean"), ("var", "moving_variance")):
        (name,) = [n for n in names if n.split(":")[0].endswith(suffix)]
        ds = group[name]
        if ds.shape != s[key].shape:
          raise ValueError(f"{path}: {layer}/{name} has shape {ds.shape}, statistics "
                           f"{s[key].shape}")
        ds[...] = s[key].astype(ds.dtype)
      written[layer] = int(s["mean"].shape[0])
  return written


def write_mobilenet_v2_h5(path: str, images: np.ndarray, *, seed: int = 0) -> str:
  """A Keras MobileNetV2 1.0 ``.h5`` (224 px, random weights) made input-sensitive by BatchNorm
  statistics recalibrated on ``images`` (float32 [N,224,224,3] in [0, 1])."""
  keras_mobilenet_v2_h5(path, image_size=int(images.shape[1]), seed=seed)
  recalibrate_h5(path, images)
  return path


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_binary(*args: str, timeout: int = 1500):
  """``python -m <args>`` from the repository root (CPU, quiet); the CompletedProcess."""
  import subprocess
  import sys
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.setdefault("JAX_PLATFORMS", "cpu")
  env["PERCADV_QUIET"] = "1"
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)
