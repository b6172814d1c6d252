"""Keras weight files -> Flax variables, with h5py only (no TensorFlow, no Keras import).

``load_keras_weights(name, path)`` reads the weights of ``keras.applications.MobileNetV2`` or
``keras.applications.VGG19`` (``include_top=True``) from either file format Keras writes:

- ``model.save("x.h5")`` (legacy HDF5, Keras 2 and 3; also Keras' official ImageNet weight files):
  group ``model_weights`` (or the root for weights-only Keras 2 files) whose attribute
  ``layer_names`` lists the layers in model order; each layer group's ``weight_names`` attribute
  lists its arrays in order.
- ``model.save_weights("x.weights.h5")`` (Keras 3): ``layers/<class>[_<k>]/vars/<i>``, one group
  per layer named after its class (``conv2d``, ``conv2d_1``, ``depthwise_conv2d``,
  ``batch_normalization_7``, ``dense``), numbered in model order within each class.

Weights are matched by structure, never by layer names: the expected architecture (a list of
layers with their class and array shapes, in model order) is compared with the file's layers in
order (per class for Keras 3 files). Width/alpha, the number of classes and the fc size are
inferred from the array shapes; the first layer whose shapes differ is named in a ValueError.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from typing import Any, Callable

import numpy as np

from percadv_jax import checks
from percadv_jax.models import mobilenet_v2 as mnv2
from percadv_jax.models import vgg
from percadv_jax.models.registry import get_model

# Standard alphas of Keras' ImageNet MobileNetV2 weights, tried first when inferring the width.
_STANDARD_ALPHAS = (1.0, 0.35, 0.5, 0.75, 1.3, 1.4)
_ALPHA_GRID = tuple(round(a, 4) for a in np.arange(0.05, 4.0 + 1e-9, 0.005))


@dataclasses.dataclass(frozen=True)
class _Layer:
  """One weighted Keras layer of the expected architecture.

  ``kind`` is Keras' class name in snake case; ``shapes`` the Keras arrays' shapes in saving
  order (``None`` entries are free dimensions); ``place`` maps the arrays into Flax variables.
  """
  keras_name: str
  kind: str
  shapes: tuple[tuple[int | None, ...], ...]
  place: Callable[[dict, list[np.ndarray]], None]


@dataclasses.dataclass
class _FileLayer:
  where: str                # the h5 path, for error messages
  arrays: list[Any]         # h5py datasets (read lazily) in saving order


def _set(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _conv(name: str, shape, *, bias: bool = False, flax_name: str | None = None) -> _Layer:
  flax_name = flax_name or name

  def place(v, arrays):
    _set(v, ("params", flax_name, "kernel"), arrays[0])
    if bias:
      _set(v, ("params", flax_name, "bias"), arrays[1])
  shapes = (tuple(shape),) + (((shape[-1],),) if bias else ())
  return _Layer(name, "conv2d", shapes, place)


def _depthwise(name: str, channels: int) -> _Layer:
  def place(v, arrays):  # Keras [kh, kw, C, 1] -> Flax grouped conv [kh, kw, 1, C]
    _set(v, ("params", name, "kernel"), np.transpose(arrays[0], (0, 1, 3, 2)))
  return _Layer(name, "depthwise_conv2d", ((3, 3, channels, 1),), place)


def _bn(name: str, channels: int) -> _Layer:
  def place(v, arrays):
    gamma, beta, mean, var = arrays
    _set(v, ("params", name, "scale"), gamma)
    _set(v, ("params", name, "bias"), beta)
    _set(v, ("batch_stats", name, "mean"), mean)
    _set(v, ("batch_stats", name, "var"), var)
  return _Layer(name, "batch_normalization", ((channels,),) * 4, place)


def _dense(name: str, n_in: int | None, n_out: int | None) -> _Layer:
  def place(v, arrays):
    _set(v, ("params", name, "kernel"), arrays[0])
    _set(v, ("params", name, "bias"), arrays[1])
  return _Layer(name, "dense", ((n_in, n_out), (n_out,)), place)


def mobilenet_v2_layers(width: float, num_classes: int | None) -> list[_Layer]:
  """Weighted layers of ``keras.applications.MobileNetV2(alpha=width)`` in model order."""
  plan = mnv2.channel_plan(width)
  layers = [_conv("Conv1", (3, 3, 3, plan["first"])), _bn("bn_Conv1", plan["first"])]
  for i, (c_in, expanded, c_out, _) in enumerate(plan["blocks"]):
    prefix = f"block_{i}_" if i else "expanded_conv_"
    if i:
      layers += [_conv(f"{prefix}expand", (1, 1, c_in, expanded)),
                 _bn(f"{prefix}expand_BN", expanded)]
    layers += [_depthwise(f"{prefix}depthwise", expanded),
               _bn(f"{prefix}depthwise_BN", expanded),
               _conv(f"{prefix}project", (1, 1, expanded, c_out)),
               _bn(f"{prefix}project_BN", c_out)]
  c_last = plan["blocks"][-1][2]
  layers += [_conv("Conv_1", (1, 1, c_last, plan["last"])), _bn("Conv_1_bn", plan["last"]),
             _dense("predictions", plan["last"], num_classes)]
  return layers


def vgg19_layers(width: float, num_classes: int | None, fc_features: int | None) -> list[_Layer]:
  """Weighted layers of ``keras.applications.VGG19`` (include_top) in model order.

  The input size of "fc1" (flatten of the last pool) depends on the image size and is free.
  """
  layers, c_in = [], 3
  for b, (channels, n_convs) in enumerate(vgg.BLOCKS, start=1):
    for k in range(1, n_convs + 1):
      c_out = vgg.scaled(channels, width)
      name = f"block{b}_conv{k}"
      layers.append(_conv(name, (3, 3, c_in, c_out), bias=True, flax_name=f"{name}_conv"))
      c_in = c_out
  layers += [_dense("fc1", None, fc_features), _dense("fc2", fc_features, fc_features),
             _dense("predictions", fc_features, num_classes)]
  return layers


# ---------------------------------------------------------------------------------------------
# Reading the two file formats.


def _decode(names) -> list[str]:
  return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in names]


def _read_legacy(root) -> list[_FileLayer]:
  """Weighted layers of a legacy HDF5 file, in the order of its ``layer_names`` attribute."""
  out = []
  for layer in _decode(root.attrs["layer_names"]):
    group = root[layer]
    names = _decode(group.attrs.get("weight_names", []))
    if names:
      out.append(_FileLayer(f"{group.name}", [group[n] for n in names]))
  return out


_GROUP_RE = re.compile(r"^(.*?)(?:_(\d+))?$")


def _read_keras3(root) -> dict[str, list[_FileLayer]]:
  """Weighted layers of a Keras 3 ``.weights.h5`` file: class -> layers in model order."""
  by_kind: dict[str, list[tuple[int, _FileLayer]]] = {}
  for key, group in root["layers"].items():
    vars_ = group.get("vars")
    if vars_ is None or not len(vars_):
      continue
    kind, index = _GROUP_RE.match(key).groups()
    arrays = [vars_[str(i)] for i in range(len(vars_))]
    by_kind.setdefault(kind, []).append((int(index or 0), _FileLayer(vars_.name, arrays)))
  return {k: [fl for _, fl in sorted(v, key=lambda t: t[0])] for k, v in by_kind.items()}


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# Walks every object and attribute of an HDF5 file and reads one element of each dataset: the
# metadata the loader touches. Run in a child process with a time limit (see ``_probe``).
_PROBE = r"""
import sys
import h5py
def visit(name, obj):
  for k in obj.attrs:
    obj.attrs[k]
  if isinstance(obj, h5py.Dataset) and obj.size:
    obj[(0,) * obj.ndim] if obj.ndim else obj[()]
with h5py.File(sys.argv[1], "r") as f:
  for k in f.attrs:
    f.attrs[k]
  f.visititems(visit)
print("ok")
"""


def _check_superblock(path: str) -> None:
  """Checks the HDF5 signature and superblock of ``path`` without parsing the file with h5py.

  Raises:
    ValueError: no HDF5 signature, an unknown superblock version or field sizes, or a file
      shorter than the end-of-file address its superblock records (truncated).
  """
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    base = None
    for offset in (0, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536):
      if offset + 8 > size:
        break
      f.seek(offset)
      if f.read(8) == _HDF5_SIGNATURE:
        base = offset
        break
    if base is None:
      raise ValueError(f"{path!r} is not an HDF5 file (Keras .h5 / .weights.h5): no HDF5 "
                       "signature")
    f.seek(base)
    head = f.read(64)
  version = head[8] if len(head) > 8 else -1
  if version in (0, 1):
    sizes, eof_at = (head[13], head[14]), 40 + (4 if version == 1 else 0)
  elif version in (2, 3):
    sizes, eof_at = (head[9], head[10]), 28
  else:
    raise ValueError(f"{path!r} is a corrupt HDF5 file: unknown superblock version {version}")
  if sizes[0] not in (2, 4, 8, 16) or sizes[1] not in (2, 4, 8, 16):
    raise ValueError(f"{path!r} is a corrupt HDF5 file: bad superblock (offset/length sizes "
                     f"{sizes[0]}/{sizes[1]})")
  w = sizes[0]
  if len(head) < eof_at + w:
    raise ValueError(f"{path!r} is a truncated HDF5 file ({size} bytes; no complete superblock)")
  eof = int.from_bytes(head[eof_at:eof_at + w], "little")
  if eof != (1 << (8 * w)) - 1 and base + eof > size:
    raise ValueError(f"{path!r} is a truncated HDF5 file: {size} bytes, its superblock says "
                     f"{base + eof}")


def _probe(path: str, timeout: float) -> None:
  """Reads the structure of ``path`` in a child process killed after ``timeout`` seconds.

  Damaged HDF5 metadata can make the HDF5 library loop for many minutes (or crash): the child
  takes that risk, the caller gets a ValueError.
  """
  cmd = [sys.executable, "-c", _PROBE, path]
  try:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
  except subprocess.TimeoutExpired:
    raise ValueError(f"{path!r} is a corrupt HDF5 file: reading its structure did not finish "
                     f"within {timeout:g} s (damaged metadata)") from None
  if r.returncode == 0 and r.stdout.strip().endswith("ok"):
    return
  if r.returncode < 0:
    raise ValueError(f"{path!r} is a corrupt HDF5 file: reading it crashed the HDF5 library "
                     f"(signal {-r.returncode})")
  lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
  reason = lines[-1].strip() if lines else f"exit status {r.returncode}"
  if len(reason) > 200:
    reason = reason[:200] + "..."
  raise ValueError(f"{path!r} is a corrupt HDF5 file: {reason}")


def _read(path: str, timeout: float | None = 30.0) -> tuple[Any, str, Any]:
  """Opens ``path``: (h5py file, "legacy", [layers]) or (file, "keras3", {kind: [layers]}).

  The file's superblock is checked first and, unless ``timeout`` is None, its whole structure is
  read once in a child process with that time limit (see ``_probe``).
  """
  import h5py  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise ValueError(f"Keras weight file {path!r} does not exist")
  if not os.path.isfile(path):
    raise ValueError(f"Keras weight file {path!r} is not a file")
  _check_superblock(path)
  if timeout is not None:
    _probe(path, timeout)
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise ValueError(f"{path!r} is not an HDF5 file (Keras .h5 / .weights.h5): {e}") from None
  try:
    if "layers" in f and isinstance(f["layers"], h5py.Group):
      return f, "keras3", _read_keras3(f)
    root = f["model_weights"] if "model_weights" in f else f
    if "layer_names" not in root.attrs:
      raise ValueError(f"{path!r} is an HDF5 file but not a Keras weight file (neither a "
                       "'layers' group nor a 'layer_names' attribute)")
    return f, "legacy", _read_legacy(root)
  except ValueError:
    f.close()
    raise
  except Exception as e:  # pylint: disable=broad-except
    f.close()
    raise ValueError(f"{path!r} is a corrupt Keras weight file ({type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''})") from None


# ---------------------------------------------------------------------------------------------
# Matching.


def _shape_ok(expected, found) -> bool:
  return len(expected) == len(found) and all(e is None or e == f for e, f in zip(expected, found))


def _match(expected: list[_Layer], fmt: str, content) -> tuple[list[tuple[_Layer, _FileLayer]],
                                                               str | None, int]:
  """Pairs expected layers with file layers; returns (pairs, first mismatch message, #matched)."""
  pairs = []
  if fmt == "legacy":
    queue = list(content)
    take = lambda kind: queue.pop(0) if queue else None  # noqa: E731
  else:
    queues = {k: list(v) for k, v in content.items()}
    take = lambda kind: queues[kind].pop(0) if queues.get(kind) else None  # noqa: E731
  for i, layer in enumerate(expected):
    fl = take(layer.kind)
    desc = f"layer #{i} ({layer.keras_name!r}, a {layer.kind})"
    if fl is None:
      what = "weighted layers" if fmt == "legacy" else f"{layer.kind} layers"
      return pairs, f"{desc}: the file has no more {what}", i
    found = [tuple(a.shape) for a in fl.arrays]
    if len(found) != len(layer.shapes) or not all(
        _shape_ok(e, f) for e, f in zip(layer.shapes, found)):
      exp = [tuple("?" if d is None else d for d in s) for s in layer.shapes]
      return pairs, (f"{desc}: expected arrays of shapes {exp}, found {found} at "
                     f"{fl.where!r}"), i
    pairs.append((layer, fl))
  rest = (queue if fmt == "legacy" else [fl for v in queues.values() for fl in v])
  if rest:
    return pairs, (f"the file has {len(rest)} more weighted layer(s) than expected, the first at "
                   f"{rest[0].where!r}"), len(expected)
  return pairs, None, len(expected)


def _first_shape(fmt: str, content, kind: str, index: int, legacy_pos: int) -> tuple | None:
  """Shape of the first array of a given layer, for inferring hyper-parameters."""
  if fmt == "legacy":
    if -len(content) <= legacy_pos < len(content):
      return tuple(content[legacy_pos].arrays[0].shape)
    return None
  layers = content.get(kind, [])
  if -len(layers) <= index < len(layers):
    return tuple(layers[index].arrays[0].shape)
  return None


def _mobilenet_candidates(fmt, content, width) -> tuple[list[float], int | None]:
  head = _first_shape(fmt, content, "dense", -1, -1)
  num_classes = head[-1] if head is not None and len(head) == 2 else None
  if width is not None:
    return [width], num_classes
  first = _first_shape(fmt, content, "conv2d", 0, 0)
  alphas = list(_STANDARD_ALPHAS) + [a for a in _ALPHA_GRID if a not in _STANDARD_ALPHAS]
  if first is not None and len(first) == 4:
    fitting = [a for a in alphas if mnv2.make_divisible(32 * a, 8) == first[-1]]
    alphas = fitting or alphas
  return alphas, num_classes


def load_keras_weights(name: str, path: str | os.PathLike, *, timeout: float | None = 30.0,
                       **kw) -> tuple[Any, dict]:
  """Loads a Keras MobileNetV2 / VGG19 weight file into the matching Flax module.

  Args:
    name: "mobilenet_v2" (``keras.applications.MobileNetV2``) or "vgg19"
      (``keras.applications.VGG19``, include_top=True; gives ``variant="imagenet"``).
    path: a ``.h5`` file written by ``model.save`` (or a Keras 2 weight file such as Keras'
      ImageNet downloads) or a ``.weights.h5`` file written by Keras 3 ``model.save_weights``.
    timeout: seconds allowed to read the file's structure once in a child process before it is
      trusted in this one (damaged HDF5 metadata can make the HDF5 library loop for many
      minutes); None skips that check (the HDF5 signature and superblock are still checked).
    **kw: optional ``width`` to fix the width multiplier instead of inferring it.
  Returns:
    ``(module, variables)``: ``module.apply(variables, x)`` on RGB inputs in [0, 1] gives the
    logits Keras gives on the preprocessed inputs (without the final softmax). The width, the
    number of classes and (VGG) the fc size are read off the array shapes; VGG's fc1 fixes the
    input size (224 px for ImageNet weights).
  Raises:
    ValueError: unknown name or keyword, a missing, truncated or corrupt file (named, within
      about ``timeout`` seconds), a file that holds no classifier head or another architecture
      (the first mismatching layer and its shapes are named).
  """
  if name not in ("mobilenet_v2", "vgg19"):
    raise ValueError(f"unknown model {name!r}; load_keras_weights knows ['mobilenet_v2', "
                     "'vgg19']")
  unknown = sorted(set(kw) - {"width"})
  if unknown:
    raise ValueError(f"unknown keyword(s) {unknown}; load_keras_weights accepts only 'width'")
  width = kw.get("width")
  if width is not None:
    width = checks.check_float(width, "width", minimum=0.0, min_inclusive=False)
  if timeout is not None:
    timeout = checks.check_float(timeout, "timeout", minimum=0.0, min_inclusive=False)
  f, fmt, content = _read(os.fspath(path), timeout)
  try:
    if name == "mobilenet_v2":
      alphas, num_classes = _mobilenet_candidates(fmt, content, width)
      build = lambda a: mobilenet_v2_layers(a, num_classes)  # noqa: E731
    else:
      first = _first_shape(fmt, content, "conv2d", 0, 0)
      head = _first_shape(fmt, content, "dense", -1, -1)
      fc = _first_shape(fmt, content, "dense", 0, -3)
      num_classes = head[-1] if head is not None and len(head) == 2 else None
      fc_features = fc[-1] if fc is not None and len(fc) == 2 else None
      if width is not None:
        alphas = [width]
      elif first is not None and len(first) == 4:
        alphas = [first[-1] / 64]
      else:
        alphas = [1.0]
      build = lambda a: vgg19_layers(a, num_classes, fc_features)  # noqa: E731
    best = None
    for alpha in alphas:
      pairs, error, n_ok = _match(build(alpha), fmt, content)
      if error is None:
        best = (alpha, pairs, None, n_ok)
        break
      if best is None or n_ok > best[3]:
        best = (alpha, pairs, error, n_ok)
    alpha, pairs, error, _ = best
    if error is not None:
      model = "keras.applications.MobileNetV2" if name == "mobilenet_v2" else \
          "keras.applications.VGG19 (include_top=True)"
      raise ValueError(f"{os.fspath(path)!r} does not hold the weights of {model} "
                       f"(closest width {alpha:g}): first mismatch at {error}"
                       + ("; the file has no Dense classifier head (saved with include_top=False?)"
                          if num_classes is None else ""))
    variables: dict = {}
    for layer, fl in pairs:
      try:
        arrays = [np.asarray(a[()], dtype=np.float32) for a in fl.arrays]
      except (OSError, RuntimeError, KeyError) as e:
        raise ValueError(f"{os.fspath(path)!r} is a corrupt Keras weight file: cannot read "
                         f"{fl.where!r} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
      layer.place(variables, arrays)
  finally:
    f.close()
  if name == "mobilenet_v2":
    module = get_model("mobilenet_v2", num_classes=int(num_classes), width=float(alpha))
  else:
    module = get_model("vgg19", num_classes=int(num_classes), width=float(alpha),
                       variant="imagenet", fc_features=int(fc_features))
  return module, variables
