"""Random-access sources, dataset metadata and the batching helper shared by every dataset.

A *source* is any object with ``len(src)``, ``src[i] -> {"image": uint8 [H,W,3], "mask": uint8
[H,W] in {0,1}, "label": int}`` and ``src.info`` (a :class:`DatasetInfo`). Sources that hold
their data in arrays also implement ``src.get_batch(indices)``, which :func:`batches` and
:func:`to_arrays` use to gather many examples with one fancy-indexing call. The data order of
the library (``batches``, ``percadv_jax.train.fit``) is :func:`batch_indices`.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from percadv_jax import checks


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a source holds and where it came from.

  Attributes:
    name: registry name (``"synthetic_signs"``, ``"gtsrb_ic"``, ...).
    split: the split this source reads (``"train"``, ``"test"``, ...).
    num_classes: labels lie in ``[0, num_classes)``.
    class_names: ``num_classes`` human-readable names.
    image_size: side of the square images (pixels); ``None`` only for variable-size sources.
    num_examples: ``len(src)``.
    has_masks: False when masks are all ones because the data has no foreground masks.
    mask_source: how masks were made: ``"rendered"``, ``"grabcut"`` (ROI-seeded),
      ``"grabcut_centre"`` (centre-seeded), ``"coco_segmentation"``, ``"trimap"`` or ``"none"``
      (all ones).
    source: provenance (file paths, archive names, generator parameters).
    skipped: counts of inputs left out and why (unreadable images, CSV rows without files ...).
    extra: dataset-specific facts (preparation parameters, per-class counts ...).
  """
  name: str
  split: str
  num_classes: int
  class_names: tuple[str, ...]
  image_size: int | None
  num_examples: int
  has_masks: bool
  mask_source: str
  source: str
  skipped: Mapping[str, int] = dataclasses.field(default_factory=dict)
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __getitem__(self, key: str) -> Any:
    """Dict-style access (``info["num_classes"]``) for code that treats info as a mapping."""
    try:
      return getattr(self, key)
    except AttributeError:
      raise KeyError(key) from None

  def get(self, key: str, default: Any = None) -> Any:
    """``Mapping.get``: the attribute ``key``, or ``default`` when there is none."""
    return getattr(self, key, default)

  def to_dict(self) -> dict[str, Any]:
    """The fields as a JSON-ready dict (tuples and mappings as plain lists and dicts)."""
    d = dataclasses.asdict(self)
    d["class_names"] = list(self.class_names)
    d["skipped"] = dict(self.skipped)
    d["extra"] = dict(self.extra)
    return d


class ArraySource:
  """A source over in-memory arrays.

  Args:
    images: uint8 ``[N,H,W,3]``.
    masks: uint8 ``[N,H,W]`` with values in {0,1}.
    labels: integer ``[N]`` in ``[0, info.num_classes)``.
    info: the :class:`DatasetInfo` (``num_examples`` must equal ``N``).
  """

  def __init__(self, images: np.ndarray, masks: np.ndarray, labels: np.ndarray,
               info: DatasetInfo):
    images, masks, labels = np.asarray(images), np.asarray(masks), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be uint8 [N,H,W,3], got {images.dtype} {images.shape}")
    if masks.dtype != np.uint8 or masks.shape != images.shape[:3]:
      raise ValueError(f"masks must be uint8 {images.shape[:3]}, got {masks.dtype} {masks.shape}")
    if labels.shape != images.shape[:1]:
      raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
    if info.num_examples != len(images):
      raise ValueError(f"info.num_examples={info.num_examples} but {len(images)} images")
    self.images, self.masks, self.labels = images, masks, labels.astype(np.int64)
    self.info = info

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = _check_index(i, len(self))
    return {"image": self.images[i], "mask": self.masks[i], "label": int(self.labels[i])}

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Returns uint8 images ``[B,H,W,3]``, uint8 masks ``[B,H,W]``, int labels ``[B]``."""
    return {"image": self.images[indices], "mask": self.masks[indices],
            "label": self.labels[indices]}

  def __repr__(self) -> str:
    return (f"ArraySource({self.info.name!r}, split={self.info.split!r}, n={len(self)}, "
            f"image_size={self.info.image_size}, num_classes={self.info.num_classes})")


class IndexOutOfRangeError(ValueError, IndexError):
  """An example index outside the source (both a ``ValueError`` and an ``IndexError``)."""


def _check_index(i: Any, n: int) -> int:
  if not isinstance(i, (int, np.integer)):
    raise TypeError(f"index must be an int, got {type(i).__name__}")
  i = int(i)
  if i < 0:
    i += n
  if not 0 <= i < n:
    raise IndexOutOfRangeError(f"index {i} out of range for a source of {n} examples")
  return i


def _gather(src: Any, indices: np.ndarray) -> dict[str, np.ndarray]:
  """uint8 images/masks and int labels for ``indices`` (fast path for array sources)."""
  if hasattr(src, "get_batch"):
    return src.get_batch(np.asarray(indices))
  items = [src[int(i)] for i in indices]
  if not items:
    raise ValueError("no examples to gather")
  return {"image": np.stack([np.asarray(it["image"]) for it in items]),
          "mask": np.stack([np.asarray(it["mask"]) for it in items]),
          "label": np.asarray([int(it["label"]) for it in items])}


def _to_float(raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  image = np.asarray(raw["image"])
  if image.dtype != np.uint8:
    raise ValueError(f"source images must be uint8, got {image.dtype}")
  return {"image": image.astype(np.float32) * np.float32(1.0 / 255.0),
          "mask": np.asarray(raw["mask"], np.float32)[..., None],
          "label": np.asarray(raw["label"], np.int32)}


def to_arrays(src: Any, *, indices: Sequence[int] | np.ndarray | None = None
              ) -> dict[str, np.ndarray]:
  """Gathers a whole (small) source, or ``indices`` of it, into batch arrays.

  Returns:
    ``{"image": float32 [N,H,W,3] in [0,1], "mask": float32 [N,H,W,1] in {0,1},
    "label": int32 [N]}`` (NumPy arrays).

  Raises:
    ValueError: ``indices`` are not integers (floats are never truncated) or lie outside
      ``[-N, N)`` (the latter is :class:`IndexOutOfRangeError`, also an ``IndexError``).
  """
  n = len(src)
  if indices is None:
    idx = np.arange(n)
  else:
    raw_idx = np.asarray(indices)
    if raw_idx.size == 0:
      raise ValueError("to_arrays needs at least one index")
    if raw_idx.dtype == object or not np.issubdtype(raw_idx.dtype, np.integer):
      raise ValueError(f"to_arrays indices must be integers, got dtype {raw_idx.dtype}"
                       + (f" (e.g. {raw_idx.reshape(-1)[0]!r})" if raw_idx.size else ""))
    idx = raw_idx.astype(np.int64).reshape(-1)
  if idx.size == 0:
    raise ValueError("to_arrays needs at least one index")
  bad = idx[(idx < -n) | (idx >= n)]
  if bad.size:
    raise IndexOutOfRangeError(f"to_arrays index {int(bad[0])} is out of range for a source of "
                               f"{n} examples (valid: {-n}..{n - 1})")
  return _to_float(_gather(src, idx % n))


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Indices of the batch at ``step``: a function of ``(n, batch_size, seed, step)`` only.

  The one data order of the library (``batches`` and ``percadv_jax.train.fit`` use it).

  Returns int64 indices ``[batch_size]`` into the ``n`` examples: rows
  ``[i * batch_size, (i + 1) * batch_size)`` of epoch ``e``'s permutation
  ``numpy.random.default_rng([seed, e]).permutation(n)`` (``e, i = divmod(step, n // batch_size)``).
  NumPy draws the order (no JAX random numbers), so ``seed`` is an integer, not a key. With
  ``batch_size = n`` the batch at ``step = e`` is epoch ``e``'s whole permutation.

  Raises:
    ValueError: naming the argument: ``n`` < 1, ``batch_size`` outside ``[1, n]``, or a
      ``seed`` / ``step`` that is not an integer >= 0 (NumPy integers are accepted).
  """
  n = checks.check_int(n, "n", minimum=1)
  batch_size = checks.check_int(batch_size, "batch_size", minimum=1, maximum=n)
  seed = checks.check_int(seed, "seed", minimum=0)
  step = checks.check_int(step, "step", minimum=0)
  steps_per_epoch = n // batch_size
  epoch, i = divmod(step, steps_per_epoch)
  perm = np.random.default_rng([seed, epoch]).permutation(n)
  return perm[i * batch_size:(i + 1) * batch_size]


def host_rows(global_size: int, process_index: int = 0, process_count: int = 1) -> slice:
  """The rows of a global batch of ``global_size`` that host ``process_index`` of
  ``process_count`` reads: ``[p * global_size / count, (p + 1) * global_size / count)``.

  The hosts' slices partition the batch in order (``percadv_jax.parallel.local_slice`` is this
  for JAX's process).

  Raises:
    ValueError: naming the argument: a negative ``global_size``, ``process_count`` < 1,
      ``process_index`` outside ``[0, process_count)``, or a ``global_size`` that is not a
      multiple of ``process_count``.
  """
  global_size = checks.check_int(global_size, "global_size", minimum=0)
  process_count = checks.check_int(process_count, "process_count", minimum=1)
  process_index = checks.check_int(process_index, "process_index", minimum=0,
                                   maximum=process_count - 1)
  if global_size % process_count:
    raise ValueError(f"global batch size {global_size} does not split over {process_count} "
                     "processes")
  n = global_size // process_count
  return slice(process_index * n, (process_index + 1) * n)


def prefetch(items: Iterator[Any], depth: int) -> Iterator[Any]:
  """Runs the iterator ``items`` on a background thread, ``depth`` items ahead of the caller.

  Yields ``items``' values in order; an exception raised by ``items`` is raised at the caller's
  ``next``. Closing the returned generator (or dropping it) stops the thread after at most the
  item it is computing. ``depth=0`` iterates ``items`` in the caller's thread.
  """
  depth = checks.check_int(depth, "depth", minimum=0)
  return _prefetch(items, depth)


def _prefetch(items: Iterator[Any], depth: int) -> Iterator[Any]:
  if depth == 0:
    yield from items
    return
  q: queue.Queue = queue.Queue(maxsize=depth)
  stop_event = threading.Event()
  done = object()

  def worker():
    try:
      for item in items:
        while not stop_event.is_set():
          try:
            q.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if stop_event.is_set():
          return
      q.put(done)
    except BaseException as e:  # handed to the consumer, re-raised there
      q.put(e)

  thread = threading.Thread(target=worker, daemon=True, name="percadv-prefetch")
  thread.start()
  try:
    while True:
      item = q.get()
      if item is done:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop_event.set()
    while thread.is_alive():  # unblock a worker waiting on a full queue
      try:
        q.get_nowait()
      except queue.Empty:
        pass
      thread.join(timeout=0.05)


def batches(src: Any, *, batch_size: int, seed: int = 0, shuffle: bool = True,
            drop_remainder: bool = True, epochs: int | None = 1, prefetch: int = 2,
            process_index: int = 0, process_count: int = 1
            ) -> Iterator[dict[str, np.ndarray]]:
  """Batches of a source in :func:`batch_indices`' order, gathered on a background thread.

  Args:
    src: a source (``len``, ``__getitem__``; ``get_batch`` is used when present).
    batch_size: examples per global batch (> 0).
    seed: the data order's integer seed: with ``shuffle``, the ``s``-th full batch holds the
      examples ``batch_indices(len(src), batch_size, seed, s)``, as ``train.fit`` would use them.
    shuffle: permute the examples every epoch (else every epoch is in index order).
    drop_remainder: drop the last incomplete batch of every epoch (else yield it smaller: the
      rest of the epoch's order).
    epochs: passes over the data; ``None`` repeats forever.
    prefetch: batches prepared ahead by a background thread (0 = gather in the caller's thread).
    process_index, process_count: this host and the number of hosts (e.g. ``jax.process_index()``
      and ``jax.process_count()``): each yielded batch holds only this host's rows
      :func:`host_rows` of the global batch, and only they are read.

  Returns:
    A generator of ``{"image": float32 [B,H,W,3] in [0,1], "mask": float32 [B,H,W,1] in {0,1},
    "label": int32 [B]}`` (NumPy arrays, ready for ``jax.device_put`` or a jitted step), with
    ``B = batch_size / process_count``.

  Raises:
    ValueError: naming the argument, at the call (not at the first ``next``): a non-integer or
      negative ``seed``, a bad ``batch_size`` / ``epochs`` / ``prefetch``, a non-bool flag, an
      empty source, ``batch_size`` above the source's size with ``drop_remainder``, a bad
      ``process_index`` / ``process_count``, or ``process_count > 1`` with a ``batch_size``
      that is not a multiple of it or without ``drop_remainder``.
  """
  batch_size = checks.check_int(batch_size, "batch_size", minimum=1)
  seed = checks.check_int(seed, "seed", minimum=0)
  shuffle = checks.check_bool(shuffle, "shuffle")
  drop_remainder = checks.check_bool(drop_remainder, "drop_remainder")
  epochs = checks.check_int(epochs, "epochs", minimum=0, allow_none=True)
  prefetch = checks.check_int(prefetch, "prefetch", minimum=0)
  host = host_rows(batch_size, process_index, process_count)
  if process_count > 1 and not drop_remainder:
    raise ValueError(f"drop_remainder=False with process_count={process_count}: the last, "
                     "smaller batch would not split evenly over the hosts; pass "
                     "drop_remainder=True")
  n = len(src)
  if n == 0:
    raise ValueError("the source is empty")
  if drop_remainder and n < batch_size:
    raise ValueError(f"batch_size={batch_size} exceeds the {n} examples of the source and "
                     "drop_remainder=True would yield nothing; lower batch_size or pass "
                     "drop_remainder=False")
  # The checks above run at the call; the generator below only starts at the first ``next``.

  def index_batches() -> Iterator[np.ndarray]:
    epoch = 0
    while epochs is None or epoch < epochs:
      order = batch_indices(n, n, seed, epoch) if shuffle else np.arange(n)
      stop = n - n % batch_size if drop_remainder else n
      for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield idx[host] if process_count > 1 else idx
      epoch += 1

  return _prefetch((_to_float(_gather(src, idx)) for idx in index_batches()), prefetch)
