"""Golden tests: Keras MobileNetV2 / VGG19 with random weights -> .h5 / .weights.h5 -> Flax logits.

Every Keras weight is randomised (BatchNorm moving means and positive variances included) before
saving, and logits on random images must agree to 1e-4 x max |logit|. Keras builds its models with
initialisers that compile one XLA program per weight shape (about a minute per model on a busy CPU);
since every weight is overwritten right after, the fixture swaps Keras' random draws for NumPy ones
while building.
"""

import os

import jax
import numpy as np
import pytest

import keras  # test-only dependency, KERAS_BACKEND=jax (tests/conftest.py)
import keras.src.backend.jax.random as keras_jax_random

from percadv_jax.models import load_keras_weights

RTOL = 1e-4
_APPLY = {}


def _jitted_apply(module):
  """One jitted apply per model configuration, shared by the tests (compiles are the cost)."""
  key = (type(module).__name__, module.num_classes, module.width)
  if key not in _APPLY:
    _APPLY[key] = jax.jit(module.apply)
  return _APPLY[key]


def _numpy_draws(shape, *args, dtype=None, **kwargs):
  return np.zeros(tuple(shape), np.float32)


def _randomise(model: "keras.Model", rng: np.random.Generator) -> None:
  """Overwrites every weight: He-scaled kernels, BN gamma/variance > 0, nonzero means/biases."""
  for layer in model.layers:
    weights = layer.weights
    if not weights:
      continue
    new = []
    for w in weights:
      shape, path = tuple(w.shape), w.path
      if path.endswith(("moving_variance", "gamma")):
        a = rng.uniform(0.5, 2.0, shape)
      elif path.endswith("moving_mean"):
        a = rng.normal(0.0, 0.5, shape)
      elif len(shape) == 1:
        a = rng.normal(0.0, 0.1, shape)
      else:
        fan_in = np.prod(shape[:2]) if "depthwise" in path else np.prod(shape[:-1])
        a = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
      new.append(a.astype(np.float32))
    layer.set_weights(new)


def _build(factory, rng, tmp_path, tag):
  with pytest.MonkeyPatch.context() as mp:
    for fn in ("uniform", "normal", "truncated_normal"):
      mp.setattr(keras_jax_random, fn, _numpy_draws)
    model = factory()
  _randomise(model, rng)
  full, weights = os.path.join(tmp_path, f"{tag}.h5"), os.path.join(tmp_path, f"{tag}.weights.h5")
  model.save(full)
  model.save_weights(weights)
  return model, full, weights


def _mobilenet(alpha, size):
  return lambda: keras.applications.MobileNetV2(
      weights=None, input_shape=(*size, 3), alpha=alpha, classes=10, classifier_activation=None)


def _vgg19(size):
  return lambda: keras.applications.VGG19(
      weights=None, input_shape=(*size, 3), classes=10, classifier_activation=None)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """Saved Keras models and their logits on random images, per case."""
  tmp = tmp_path_factory.mktemp("keras")
  rng = np.random.default_rng(0)
  cases = {}
  # (96, 96): every stride-2 input even; (75, 61): odd sizes, so both of correct_pad's paddings.
  for alpha in (0.35, 1.0):
    for size in ((96, 96), (75, 61)):
      cases[("mobilenet_v2", alpha, size)] = _mobilenet(alpha, size)
  # VGG19 with its full top at a small odd, non-square size: the five pools floor odd sizes and
  # the flatten sees a 2x1 map, so its (H, W, C) order matters; fc1 has 1024 inputs.
  cases[("vgg19", 1.0, (70, 33))] = _vgg19((70, 33))
  out = {}
  for i, (key, factory) in enumerate(cases.items()):
    model, full, weights = _build(factory, rng, tmp, f"m{i}")
    x = rng.uniform(0.0, 1.0, (2, *key[2], 3)).astype(np.float32)
    pre = (keras.applications.mobilenet_v2.preprocess_input if key[0] == "mobilenet_v2" else
           keras.applications.vgg19.preprocess_input)
    ref = np.asarray(model.predict(pre(x * 255.0), verbose=0))
    out[key] = (full, weights, x, ref)
  return out


@pytest.mark.parametrize("key", [("mobilenet_v2", a, s) for a in (0.35, 1.0)
                                 for s in ((96, 96), (75, 61))] + [("vgg19", 1.0, (70, 33))],
                         ids=lambda k: f"{k[0]}-{k[1]}-{k[2][0]}x{k[2][1]}")
def test_logits_match_keras(files, key):
  name, alpha, _ = key
  full, weights, x, ref = files[key]
  # The random network is not degenerate: logits differ between classes and images.
  assert np.std(ref, axis=1).min() > 1e-3 * np.abs(ref).max()
  assert np.abs(ref[0] - ref[1]).max() > 1e-3 * np.abs(ref).max()
  for path in (full, weights):
    module, variables = load_keras_weights(name, path)
    assert module.num_classes == 10
    assert module.width == pytest.approx(alpha)
    if name == "vgg19":
      assert module.variant == "imagenet" and module.fc_features == 4096
    logits = np.asarray(_jitted_apply(module)(variables, x))
    assert logits.shape == ref.shape
    np.testing.assert_array_less(np.abs(logits - ref).max(), RTOL * np.abs(ref).max())


def _to_keras2_weights_file(src: str, dst: str) -> None:
  """Rewrites a Keras 3 ``model.save`` file in the layout of Keras 2 weight files (Keras'
  ImageNet downloads): ``layer_names`` at the root, arrays named ``<layer>/<weight>:0`` and
  depthwise kernels named ``depthwise_kernel``."""
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
    root = f["model_weights"]
    layer_names = [n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]]
    g.attrs["layer_names"] = np.array([n.encode() for n in layer_names])
    for layer in layer_names:
      group = g.create_group(layer)
      names = [n.decode() if isinstance(n, bytes) else n
               for n in root[layer].attrs.get("weight_names", [])]
      new_names = []
      for n in names:
        leaf = n.rsplit("/", 1)[-1]
        if leaf == "kernel" and "depthwise" in layer:
          leaf = "depthwise_kernel"
        new = f"{layer}/{leaf}:0"
        group[new] = root[layer][n][()]
        new_names.append(new.encode())
      group.attrs["weight_names"] = np.array(new_names, dtype="S")


def test_keras2_layout_weight_file(files, tmp_path):
  full, _, x, ref = files[("mobilenet_v2", 1.0, (75, 61))]
  path = str(tmp_path / "keras2.h5")
  _to_keras2_weights_file(full, path)
  module, variables = load_keras_weights("mobilenet_v2", path)
  assert module.width == 1.0 and module.num_classes == 10
  logits = np.asarray(_jitted_apply(module)(variables, x))
  np.testing.assert_array_less(np.abs(logits - ref).max(), RTOL * np.abs(ref).max())


def test_wrong_architecture_names_first_mismatch(files):
  vgg_full, vgg_weights = files[("vgg19", 1.0, (70, 33))][:2]
  mnv2_full, mnv2_weights = files[("mobilenet_v2", 0.35, (96, 96))][:2]
  # A VGG file read as MobileNetV2: its first conv has 64 filters (a width near 2) but a bias.
  for path in (vgg_full, vgg_weights):
    with pytest.raises(ValueError, match=r"first mismatch at layer #0 \('Conv1', a conv2d\): "
                                         r"expected arrays of shapes \[\(3, 3, 3, 64\)\], "
                                         r"found \[\(3, 3, 3, 64\), \(64,\)\]"):
      load_keras_weights("mobilenet_v2", path)
  # A MobileNetV2 file read as VGG19: block1_conv1 is expected with a bias; Conv1 has none.
  for path in (mnv2_full, mnv2_weights):
    with pytest.raises(ValueError, match=r"layer #0 \('block1_conv1', a conv2d\): expected arrays "
                                         r"of shapes \[\(3, 3, 3, 16\), \(16,\)\], found "
                                         r"\[\(3, 3, 3, 16\)\]"):
      load_keras_weights("vgg19", path)
  # A width that contradicts the file names the first layer whose shapes differ.
  with pytest.raises(ValueError, match=r"'Conv1'.*\(3, 3, 3, 32\).*\(3, 3, 3, 16\)"):
    load_keras_weights("mobilenet_v2", mnv2_weights, width=1.0)


def test_bad_files_and_names(tmp_path, files):
  junk = tmp_path / "junk.h5"
  junk.write_bytes(b"not an hdf5 file")
  with pytest.raises(ValueError, match="not an HDF5 file"):
    load_keras_weights("mobilenet_v2", junk)
  with pytest.raises(ValueError, match="does not exist"):
    load_keras_weights("mobilenet_v2", tmp_path / "missing.h5")
  with pytest.raises(ValueError, match="unknown model 'resnet50'"):
    load_keras_weights("resnet50", files[("vgg19", 1.0, (70, 33))][0])
  with pytest.raises(ValueError, match="unknown keyword"):
    load_keras_weights("vgg19", files[("vgg19", 1.0, (70, 33))][0], depth=19)


def _tiny_keras_h5(tmp_path) -> str:
  """A small legacy .h5 written by Keras (conv, BatchNorm, pooling, dense; 22 kB)."""
  with pytest.MonkeyPatch.context() as mp:
    for fn in ("uniform", "normal", "truncated_normal"):
      mp.setattr(keras_jax_random, fn, _numpy_draws)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.BatchNormalization(),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
  path = str(tmp_path / "tiny.h5")
  model.save(path)
  return path


def test_zeroed_metadata_gives_a_named_error_not_a_hang(tmp_path):
  """Zeroing 256 bytes of this file's metadata makes h5py loop for minutes reading an attribute.

  The load runs in a child process with a generous limit, so a regression cannot hang the suite.
  """
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  path = _tiny_keras_h5(tmp_path)
  data = bytearray(open(path, "rb").read())
  assert len(data) == 22568  # the layout the zeroed range below was found in
  data[5120:5376] = b"\0" * 256
  bad = str(tmp_path / "zeroed_metadata.h5")
  with open(bad, "wb") as f:
    f.write(data)
  code = ("from percadv_jax.models import load_keras_weights\n"
          "try:\n"
          f"  load_keras_weights('mobilenet_v2', {bad!r}, timeout=5)\n"
          "except ValueError as e:\n"
          "  print('ValueError:', e)\n")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                     env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=False)
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.strip() == (f"ValueError: {bad!r} is a corrupt HDF5 file: reading its "
                              "structure did not finish within 5 s (damaged metadata)")


def test_truncated_and_zeroed_files_are_named(tmp_path, files):
  full, weights = files[("mobilenet_v2", 0.35, (96, 96))][:2]
  for src in (full, weights):
    data = open(src, "rb").read()
    cases = {"truncated": data[:len(data) // 2], "head_zeroed": b"\0" * 64 + data[64:],
             "all_zeroed": b"\0" * len(data), "empty": b""}
    for name, content in cases.items():
      path = tmp_path / f"{name}{os.path.basename(src)}"
      path.write_bytes(content)
      expected = ("is a truncated HDF5 file" if name == "truncated" else
                  r"is not an HDF5 file \(Keras .h5 / .weights.h5\): no HDF5 signature")
      with pytest.raises(ValueError, match=rf"^'{path}' {expected}"):
        load_keras_weights("mobilenet_v2", path)
  with pytest.raises(ValueError, match="not a file"):
    load_keras_weights("mobilenet_v2", tmp_path)
  with pytest.raises(ValueError, match="width must be a finite number"):
    load_keras_weights("mobilenet_v2", full, width=float("inf"))
  with pytest.raises(ValueError, match="timeout must be > 0"):
    load_keras_weights("mobilenet_v2", full, timeout=0)
