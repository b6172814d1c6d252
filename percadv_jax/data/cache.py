"""The on-disk cache of prepared datasets (GTSRB-IC, COCO-IC): sharded ``.npz``, no pickle.

Layout of one prepared split::

    <data_dir>/<dataset>/<split>_<image_size>px[-<variant>]/
      prep.json                      the preparation's parameters (written first)
      shard-00000.npz ...            one per chunk of ``shard_size`` raw inputs
      meta.json                      written last: info, shard list with counts and SHA-256

Each shard is an uncompressed ``.npz`` (read with ``allow_pickle=False``) holding

* ``images``  uint8 ``[n, S, S, 3]`` RGB,
* ``masks``   uint8 ``[n, S, S]`` in {0, 1},
* ``labels``  int64 ``[n]``,
* ``ids``     unicode ``[n]`` (where each example came from: file name, COCO annotation id),
* ``stats``   uint8 bytes of a JSON object (counts of skipped inputs and why),
* ``skipped_files`` uint8 bytes of a JSON object ``{reason: [path, ...]}`` naming the skipped
  inputs (at most :data:`MAX_NAMED` per reason and shard; absent in caches written before it).

``<variant>`` names preparation options other than a dataset's defaults (e.g. COCO-IC's year,
class list and crop mode), so differently prepared caches never share a folder.

Reading (:func:`load_cached`): since the members are stored uncompressed, a loaded split is a
:class:`CachedSource` whose ``images`` and ``masks`` stay on disk: their headers give each
array's offset in the shard (:func:`open_npz`) and a batch reads only its rows (``os.preadv``),
so a split larger than memory (COCO-IC's ~15 GB of training images at 224 px) trains in a few
GB. Labels, ids and the JSON records are read into memory whole (their zip CRC checked).
Every cache of format 1 has this layout.

A corrupt shard or JSON file is reported as a ``ValueError`` naming the file. Every load checks
each shard as it is opened against this format and ``meta.json`` without reading its images:
the zip directory and the array headers (shapes, dtypes, the image size, members inside the
file), every label in ``[0, num_classes)``, and the masks of a sample (each shard's first,
middle and last example) in {0, 1}; every gathered batch's masks are checked as they are read.
``verify`` also compares each shard's SHA-256 with ``meta.json`` and checks every mask (it reads
the whole split).
Re-running the preparation recomputes shards whose SHA-256 no longer matches ``meta.json`` (or
that cannot be read), so ``prepare_data`` repairs a damaged cache.

Crash safety: every file is written to a temporary file and renamed (``percadv_jax.io``), and a
split loads only once ``meta.json`` exists, which is written after every shard. A preparation
killed at any point leaves no loadable cache; re-running it keeps the finished shards (same
parameters, checked against ``prep.json``) and computes the rest. Shards are written with fixed
zip timestamps, so a resumed preparation produces byte-identical files to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import io as _io
import dataclasses
import json
import os
import struct
import zipfile
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from percadv_jax import checks, io as pio
from percadv_jax.data.source import DatasetInfo, IndexOutOfRangeError

FORMAT_VERSION = 1
MAX_NAMED = 20  # skipped inputs named per reason (per shard, and in meta.json)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def split_dir(data_dir: str, dataset: str, split: str, image_size: int, variant: str = "") -> str:
  """``<data_dir>/<dataset>/<split>_<image_size>px`` (``-<variant>`` appended when given)."""
  if variant and (os.sep in variant or variant.startswith(".")):
    raise ValueError(f"cache variant {variant!r} must be a plain folder-name suffix")
  return os.path.join(data_dir, dataset,
                      f"{split}_{int(image_size)}px" + (f"-{variant}" if variant else ""))


def write_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
  """Atomically writes an uncompressed, deterministic ``.npz`` (no pickled objects)."""
  buf = _io.BytesIO()
  with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
    for name in sorted(arrays):
      a = np.ascontiguousarray(arrays[name])
      if a.dtype.hasobject:
        raise ValueError(f"array {name!r} holds Python objects; the cache stores no pickles")
      member = _io.BytesIO()
      np.lib.format.write_array(member, a, allow_pickle=False)
      zf.writestr(zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE), member.getvalue())
  with pio.atomic_open(path, "wb") as f:
    f.write(buf.getvalue())


def read_npz(path: str, *, required: Sequence[str] = (), only: Sequence[str] | None = None
             ) -> dict[str, np.ndarray]:
  """Reads the arrays of an ``.npz``; ``ValueError`` naming ``path`` if it is corrupt.

  Args:
    path: the file.
    required: array names that must be present.
    only: read just these arrays (those present); ``None`` = every array.
  """
  try:
    with np.load(path, allow_pickle=False) as z:
      out = {k: z[k] for k in z.files if only is None or k in only}
      present = set(z.files)
  except FileNotFoundError:
    raise
  except Exception as e:  # BadZipFile, truncated members, zlib/CRC errors, bad headers ...
    raise ValueError(f"cache shard {path} is corrupt or truncated ({type(e).__name__}: {e}); "
                     "re-run experiments.prepare_data with the same arguments to rebuild it"
                     ) from None
  missing = [k for k in required if k not in present]
  if missing:
    raise ValueError(f"cache shard {path} lacks the arrays {missing}; re-run "
                     "experiments.prepare_data with the same arguments to rebuild it")
  return out


_SHARD_KEYS = ("images", "masks", "labels", "ids", "stats")


def _read_json(path: str, what: str) -> Any:
  """``pio.read_json`` with a ``ValueError`` naming the file when it is not valid JSON."""
  try:
    return pio.read_json(path)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{what} {path} is corrupt ({e}); re-run experiments.prepare_data with the "
                     "same arguments to rebuild it") from None


def _shard_json(z: Mapping[str, np.ndarray], key: str, path: str) -> dict:
  if key not in z:
    return {}
  try:
    out = json.loads(z[key].tobytes().decode() or "{}")
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"cache shard {path}: its {key!r} record is corrupt ({e})") from None
  if not isinstance(out, dict):
    raise ValueError(f"cache shard {path}: its {key!r} record is not a JSON object")
  return out


def _json_bytes(obj: Any) -> np.ndarray:
  return np.frombuffer(json.dumps(obj, sort_keys=True).encode(), np.uint8)


def _shard_ok(path: str, sha256: str | None = None) -> bool:
  """Whether a shard exists, reads back whole and (when given) matches its SHA-256."""
  if not os.path.exists(path):
    return False
  if sha256 is not None:
    return _sha256(path) == sha256
  try:
    read_npz(path, required=_SHARD_KEYS)
  except ValueError:
    return False
  return True


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _shard_name(k: int) -> str:
  return f"shard-{k:05d}.npz"


Sample = tuple[np.ndarray, np.ndarray, int, str]  # image, mask, label, id


def prepare(out_dir: str, items: Sequence[Any], process: Callable[[Any], tuple],
            *, params: Mapping[str, Any], image_size: int, shard_size: int = 1000,
            info: Callable[[dict[str, int], int], dict[str, Any]],
            on_shard: Callable[[int, int], None] | None = None,
            progress: bool = True, workers: int = 1) -> str:
  """Prepares (or resumes preparing) one split into ``out_dir``.

  Args:
    out_dir: the split's cache directory (see :func:`split_dir`).
    items: raw inputs in a fixed order; shard ``k`` holds the samples of
      ``items[k*shard_size:(k+1)*shard_size]``.
    process: ``item -> (samples, skipped_counts)`` or ``(samples, skipped_counts,
      skipped_files)`` with ``skipped_files`` a ``{reason: [path, ...]}`` naming the inputs
      left out; deterministic.
    params: everything the output depends on (JSON); a mismatch with an existing ``prep.json``
      discards the old shards.
    image_size: side of the cached images.
    shard_size: raw inputs per shard.
    info: ``(total_skipped_counts, num_examples) -> dict`` of :class:`DatasetInfo` fields
      (``name, split, num_classes, class_names, mask_source, source, extra``).
    on_shard: called as ``on_shard(k, num_shards)`` after shard ``k`` is on disk.
    progress: show a progress bar over raw inputs.
    workers: processes (spawned) that run ``process`` on a shard's items in parallel; ``process``
      must then be picklable. Results are gathered in order, so the cache is the same.

  Returns:
    ``out_dir``.

  Skipped inputs named by ``process`` are recorded (``meta.json`` ``skipped_files``, and
  ``info.extra["skipped_files"]`` when loaded) and named in a ``UserWarning``.
  """
  from percadv_jax.data import raw
  shard_size = checks.check_int(shard_size, "shard_size", minimum=1)
  checks.check_int(workers, "workers", minimum=1)
  raw.check_image_size(image_size, allow_none=False, minimum=1)
  parent = os.path.dirname(os.path.dirname(os.path.abspath(out_dir)))
  raw.check_dir(parent, "data_dir", must_exist=False)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise raw.DataPathError(f"cache folder {out_dir} is a file, not a folder")
  os.makedirs(out_dir, exist_ok=True)
  params = json.loads(json.dumps(dict(params), sort_keys=True))
  params["format_version"] = FORMAT_VERSION
  params["num_items"] = len(items)
  params["shard_size"] = int(shard_size)
  prep_path, meta_path = os.path.join(out_dir, "prep.json"), os.path.join(out_dir, "meta.json")
  try:
    old = pio.read_json(prep_path) if os.path.exists(prep_path) else None
  except (json.JSONDecodeError, UnicodeDecodeError):
    old = None  # damaged: start this split afresh
  num_shards = max(1, -(-len(items) // shard_size))
  if old != params:
    for name in os.listdir(out_dir):  # another preparation's leftovers
      if name.startswith("shard-") or name == "meta.json" or name.endswith(".tmp"):
        os.remove(os.path.join(out_dir, name))
    pio.write_json(prep_path, params)
  elif os.path.exists(meta_path):
    try:
      meta = pio.read_json(meta_path)
      listed = {sh["file"]: sh["sha256"] for sh in meta["shards"]}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
      listed = {}
    bad = [k for k in range(num_shards)
           if not _shard_ok(os.path.join(out_dir, _shard_name(k)),
                            listed.get(_shard_name(k), ""))]
    if not bad:
      return out_dir
    import warnings
    warnings.warn(f"{out_dir}: rebuilding damaged cache shards "
                  f"{[_shard_name(k) for k in bad]}", UserWarning, stacklevel=2)
    os.remove(meta_path)
    for k in bad:
      if os.path.exists(os.path.join(out_dir, _shard_name(k))):
        os.remove(os.path.join(out_dir, _shard_name(k)))
  for name in os.listdir(out_dir):  # temporaries of a write cut short by a kill
    if name.endswith(".tmp"):
      os.remove(os.path.join(out_dir, name))
  for k in range(num_shards):  # shards damaged after they were written are recomputed
    path = os.path.join(out_dir, _shard_name(k))
    if os.path.exists(path) and not _shard_ok(path):
      os.remove(path)
  bar = pio.progress(total=len(items), desc=os.path.basename(out_dir), unit="img"
                     ) if progress else None
  pool = None
  if workers > 1:
    import multiprocessing
    pool = multiprocessing.get_context("spawn").Pool(workers)
  try:
    for k in range(num_shards):
      chunk = items[k * shard_size:(k + 1) * shard_size]
      path = os.path.join(out_dir, _shard_name(k))
      if os.path.exists(path):
        if bar is not None:
          bar.update(len(chunk))
        continue
      samples: list[Sample] = []
      stats: dict[str, int] = {}
      named: dict[str, list[str]] = {}
      results = pool.imap(process, chunk) if pool is not None else map(process, chunk)
      for result in results:
        got, skipped = result[0], result[1]
        samples.extend(got)
        for key, v in skipped.items():
          stats[key] = stats.get(key, 0) + int(v)
        for key, paths in (result[2] if len(result) > 2 else {}).items():
          room = MAX_NAMED - len(named.setdefault(key, []))
          named[key].extend(str(p) for p in list(paths)[:max(0, room)])
        if bar is not None:
          bar.update(1)
      s = int(image_size)
      write_npz(path, {
          "images": np.stack([x[0] for x in samples]).astype(np.uint8) if samples
          else np.zeros((0, s, s, 3), np.uint8),
          "masks": np.stack([x[1] for x in samples]).astype(np.uint8) if samples
          else np.zeros((0, s, s), np.uint8),
          "labels": np.asarray([x[2] for x in samples], np.int64),
          "ids": np.asarray([x[3] for x in samples], dtype=str) if samples
          else np.zeros((0,), "<U1"),
          "stats": _json_bytes(stats),
          "skipped_files": _json_bytes({k: v for k, v in named.items() if v}),
      })
      if on_shard is not None:
        on_shard(k, num_shards)
  finally:
    if pool is not None:
      pool.terminate()
    if bar is not None:
      bar.close()
  shards, total, skipped, named_all = [], 0, {}, {}
  for k in range(num_shards):
    path = os.path.join(out_dir, _shard_name(k))
    z = read_npz(path, required=_SHARD_KEYS, only=("labels", "stats", "skipped_files"))
    for key, v in _shard_json(z, "stats", path).items():
      skipped[key] = skipped.get(key, 0) + int(v)
    for key, paths in _shard_json(z, "skipped_files", path).items():
      room = MAX_NAMED - len(named_all.setdefault(key, []))
      named_all[key].extend(list(paths)[:max(0, room)])
    shards.append({"file": _shard_name(k), "num_examples": int(len(z["labels"])),
                   "sha256": _sha256(path)})
    total += len(z["labels"])
  meta = {"format_version": FORMAT_VERSION, "image_size": int(image_size), "shards": shards,
          "num_examples": total, "skipped": dict(sorted(skipped.items())),
          "skipped_files": dict(sorted(named_all.items())),
          "info": info(skipped, total), "params": params}
  pio.write_json(meta_path, meta)
  raw.warn_skipped(os.path.basename(os.path.dirname(out_dir)) + "/" + os.path.basename(out_dir),
                   skipped, named_all)
  return out_dir


def cached_sizes(data_dir: str, dataset: str, split: str, variant: str = "") -> list[int]:
  """Image sizes with a complete cache of ``dataset``/``split`` (and ``variant``)."""
  root = os.path.join(data_dir, dataset)
  if not os.path.isdir(root):
    return []
  out = []
  tail = "px" + (f"-{variant}" if variant else "")
  for name in os.listdir(root):
    if name.startswith(split + "_") and name.endswith(tail) and os.path.exists(
        os.path.join(root, name, "meta.json")):
      try:
        out.append(int(name[len(split) + 1:-len(tail)]))
      except ValueError:
        pass
  return sorted(out)


def cached_variants(data_dir: str, dataset: str, split: str, image_size: int | None = None
                    ) -> list[str]:
  """Folder names of complete caches of ``dataset``/``split``, any variant (and any size unless
  ``image_size`` is given), sorted."""
  root = os.path.join(data_dir, dataset)
  if not os.path.isdir(root):
    return []
  out = []
  for name in sorted(os.listdir(root)):
    if not name.startswith(split + "_") or not os.path.exists(
        os.path.join(root, name, "meta.json")):
      continue
    size, px, _ = name[len(split) + 1:].partition("px")
    rest = name[len(split) + 1 + len(size) + len(px):]
    if size.isdigit() and px and (rest == "" or rest.startswith("-")) and (
        image_size is None or int(size) == int(image_size)):
      out.append(name)
  return out


def load_only_cache(*, dataset: str, title: str, split: str, data_dir: str | None,
                    image_size: int | None, verify: bool = False) -> "CachedSource | None":
  """Loads the split's only cache whatever its preparation options; ``None`` when there is none.

  Raises:
    ValueError: several caches match (the message lists their folders).
  """
  from percadv_jax.data import raw
  root = raw.check_dir(data_dir or raw.default_data_dir(), "data_dir", must_exist=False)
  found = cached_variants(root, dataset, split, image_size)
  if len(found) > 1:
    raise ValueError(f"{title} {split} has several caches under {os.path.join(root, dataset)} "
                     f"({', '.join(found)}); pass image_size or the preparation options to "
                     "choose one")
  if not found:
    return None
  return load_cached(os.path.join(root, dataset, found[0]), verify=verify)


def load_cached(out_dir: str, *, verify: bool = False) -> "CachedSource":
  """Opens a complete cached split: a :class:`CachedSource` reading its shards' rows on demand.

  Cheap checks run on every load and read no image: each shard's zip directory and array
  headers against ``meta.json``, every label, and the masks of each shard's first, middle and
  last example (:func:`_check_shard`); a gathered batch's masks are checked as it is read.
  ``verify`` also compares every shard's SHA-256 with ``meta.json`` and checks every mask,
  reading the whole split once.

  Raises:
    FileNotFoundError: no ``meta.json`` (never prepared, or the preparation did not finish);
      a :class:`percadv_jax.data.raw.DataPathError`, so also a ``ValueError``.
    ValueError: ``meta.json`` or a shard is missing, corrupt, truncated, inconsistent with
      ``meta.json`` (shapes, dtypes, image size, example counts), holds a label outside
      ``[0, info.num_classes)`` or a (checked) mask value other than 0 and 1, stores its images
      compressed, or (with ``verify``) differs from the SHA-256 in ``meta.json``; the message
      names the file and the problem.
  """
  from percadv_jax.data import raw
  meta_path = os.path.join(out_dir, "meta.json")
  if not os.path.exists(meta_path):
    partial = os.path.isdir(out_dir) and any(n.startswith("shard-") for n in os.listdir(out_dir))
    raise raw.DataPathError(
        f"no complete prepared cache at {out_dir} (missing {meta_path})"
        + ("; a preparation was interrupted there: re-run experiments.prepare_data with the same "
           "arguments to resume it" if partial else ""))
  meta = _read_json(meta_path, "cache index")
  if not isinstance(meta, dict) or not isinstance(meta.get("shards"), list) or not all(
      k in meta for k in ("image_size", "num_examples", "info", "params", "skipped")):
    raise ValueError(f"cache index {meta_path} is incomplete; re-run experiments.prepare_data "
                     "with the same arguments to rebuild it")
  if meta.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{meta_path} has cache format {meta.get('format_version')}, expected "
                     f"{FORMAT_VERSION}; re-run experiments.prepare_data")
  size, num_classes = _meta_numbers(meta, meta_path)
  shards = []
  for sh in meta["shards"]:
    if not isinstance(sh, dict) or not isinstance(sh.get("file"), str):
      raise ValueError(f"cache index {meta_path} lists a shard without a file name ({sh!r}); "
                       "re-run experiments.prepare_data with the same arguments to rebuild it")
    path = os.path.join(out_dir, sh["file"])
    if not os.path.exists(path):
      raise ValueError(f"cache shard {path} listed in {meta_path} is missing")
    if verify and _sha256(path) != sh.get("sha256"):
      raise ValueError(f"cache shard {path} does not match the SHA-256 in {meta_path}")
    shard = _Shard(path)
    _check_shard(shard, meta_path, size=size, num_classes=num_classes,
                 num_examples=sh.get("num_examples"), all_masks=verify)
    shards.append(shard)
  total = sum(len(s.labels) for s in shards)
  if total != meta["num_examples"]:
    raise ValueError(f"cache index {meta_path} says num_examples={meta['num_examples']} but its "
                     f"shards hold {total}; re-run experiments.prepare_data with the same "
                     "arguments to rebuild it")
  return CachedSource(shards, _info_from_meta(meta, out_dir), image_size=size,
                      meta_path=meta_path)


_REBUILD = "re-run experiments.prepare_data with the same arguments to rebuild it"
_LAZY = ("images", "masks")  # the members read row by row, when a batch asks for them


@dataclasses.dataclass(frozen=True)
class StoredArray:
  """Where an array of an uncompressed ``.npz`` lies in the file: C-order rows from ``offset``."""
  shape: tuple[int, ...]
  dtype: np.dtype
  offset: int

  @property
  def row_bytes(self) -> int:
    """Bytes of one row (one example): the product of ``shape[1:]`` times the item size."""
    return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def open_npz(path: str, *, required: Sequence[str] = (), lazy: Sequence[str] = _LAZY
             ) -> tuple[dict[str, np.ndarray], dict[str, StoredArray]]:
  """Opens an uncompressed ``.npz``: the ``lazy`` arrays' places in the file, the others read.

  The ``lazy`` members (those present) are not read: their header gives shape, dtype and the
  file offset of their data (:class:`StoredArray`), so rows can be read with ``os.preadv``. The
  other members are read whole through ``zipfile`` (CRC checked). ``.npz`` files of
  :func:`write_npz` (stored members, C order, no objects) qualify.

  Returns:
    ``(arrays, stored)``: the read arrays and the lazy ones' places, by name.

  Raises:
    ValueError: naming ``path``: not a readable zip, truncated (a member past the end of the
      file), a missing ``required`` array, a bad array header, or a ``lazy`` member stored
      compressed, in Fortran order or holding objects (with how to rebuild the cache).
  """
  def corrupt(problem: str) -> ValueError:
    return ValueError(f"cache shard {path} is corrupt or truncated ({problem}); " + _REBUILD)

  with open(path, "rb") as f:
    try:
      with zipfile.ZipFile(f) as zf:
        members = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}
        out = {k: np.lib.format.read_array(_io.BytesIO(zf.read(i)), allow_pickle=False)
               for k, i in members.items() if k not in lazy}
    except Exception as e:  # BadZipFile, CRC errors, truncated members, bad headers ...
      raise corrupt(f"{type(e).__name__}: {e}") from None
    missing = [k for k in required if k not in members]
    if missing:
      raise ValueError(f"cache shard {path} lacks the arrays {missing}; " + _REBUILD)
    size = os.fstat(f.fileno()).st_size
    stored = {}
    for k in lazy:
      if k not in members:
        continue
      info = members[k]
      if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(
            f"cache shard {path} stores {k!r} compressed, so its rows cannot be read alone; "
            f"delete {os.path.dirname(path)} and re-run experiments.prepare_data to rebuild it")
      try:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
          raise ValueError(f"no local header of member {k!r}")
        start = info.header_offset + 30 + sum(struct.unpack("<HH", local[26:30]))
        f.seek(start)
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
      except ValueError as e:
        raise corrupt(f"member {k!r}: {e}") from None
      if fortran or dtype.hasobject or not shape:
        raise ValueError(f"cache shard {path}: {k!r} is not a C-order array of numbers with "
                         f"rows; delete {os.path.dirname(path)} and re-run "
                         "experiments.prepare_data")
      arr = StoredArray(tuple(shape), dtype, f.tell())
      end = arr.offset + shape[0] * arr.row_bytes
      if end > start + info.file_size or end > size:
        raise corrupt(f"member {k!r} ends at byte {end}, past its member or the file's "
                      f"{size} bytes")
      stored[k] = arr
  return out, stored


def _meta_numbers(meta: Mapping[str, Any], meta_path: str) -> tuple[int, int]:
  """``(image_size, num_classes)`` of a cache index; ``ValueError`` naming it if they are bad."""
  info = meta["info"]
  got = {"image_size": meta.get("image_size"), "num_examples": meta.get("num_examples"),
         "info.num_classes": info.get("num_classes") if isinstance(info, dict) else None}
  for key, v in got.items():
    if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "num_examples" else 1):
      raise ValueError(f"cache index {meta_path} has {key}={v!r}, expected a positive integer; "
                       + _REBUILD)
  return got["image_size"], got["info.num_classes"]


def _shard_problem(path: str, meta_path: str, problem: str) -> ValueError:
  return ValueError(f"cache shard {path} does not hold what {meta_path} lists: {problem}; "
                    + _REBUILD)


def _check_masks(masks: np.ndarray, path: str, meta_path: str) -> None:
  """``ValueError`` naming ``path`` when ``masks`` hold a value other than 0 and 1."""
  if masks.size and masks.max() > 1:
    raise _shard_problem(path, meta_path,
                         f"masks hold values up to {masks.max()}, expected only 0 and 1")


def _check_shard(shard: "_Shard", meta_path: str, *, size: int, num_classes: int,
                 num_examples: Any, all_masks: bool = False) -> None:
  """Checks one opened shard against the format (module docstring) and ``meta.json``.

  Cheap checks, run on every load, reading no image: shapes and dtypes (images uint8
  ``[n,S,S,3]``, masks uint8 ``[n,S,S]``, integer labels ``[n]``, ids ``[n]``, with ``S`` the
  index's ``image_size`` and ``n`` its count for the shard), every label in
  ``[0, num_classes)``, and the masks of the first, middle and last example (every mask with
  ``all_masks``, read 256 examples at a time) in {0, 1}.

  Raises:
    ValueError: naming the shard's path and the first problem found.
  """
  def bad(problem: str) -> ValueError:
    return _shard_problem(shard.path, meta_path, problem)

  labels = shard.labels
  if labels.ndim != 1:
    raise bad(f"labels have shape {labels.shape}, expected [n]")
  n = len(labels)
  if num_examples is not None and n != num_examples:
    raise bad(f"{n} examples, the index lists {num_examples}")
  shapes = {"images": shard.stored["images"].shape, "masks": shard.stored["masks"].shape,
            "ids": shard.ids.shape}
  for key, shape in (("images", (n, size, size, 3)), ("masks", (n, size, size)), ("ids", (n,))):
    if shapes[key] != shape:
      raise bad(f"{key} have shape {shapes[key]}, expected {shape} ({n} examples of "
                f"{size}x{size})")
  for key in ("images", "masks"):
    if shard.stored[key].dtype != np.uint8:
      raise bad(f"{key} have dtype {shard.stored[key].dtype}, expected uint8")
  if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
    raise bad(f"labels have dtype {labels.dtype}, expected integers")
  out = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if out.size:
    i = int(out[0])
    raise bad(f"label {labels[i]} at index {i} is outside [0, {num_classes}) "
              f"({out.size} label(s) out of range)")
  rows = (range(n) if all_masks else sorted({0, n // 2, n - 1}) if n else [])
  rows = np.asarray(list(rows), np.int64)
  for start in range(0, len(rows), 256):
    _check_masks(shard.read("masks", rows[start:start + 256]), shard.path, meta_path)


class _Shard:
  """One opened shard: its labels and ids in memory, its images and masks read by row.

  Holds a file descriptor of the shard (closed when the object is collected or ``close``d).
  """

  def __init__(self, path: str):
    self._fd: int | None = None
    arrays, self.stored = open_npz(path, required=_SHARD_KEYS[:4])
    self.path = path
    self.labels = arrays["labels"]
    self.ids = arrays["ids"]
    self._fd = os.open(path, os.O_RDONLY)

  def read(self, name: str, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Rows ``rows`` of the stored array ``name`` (``[len(rows), *shape[1:]]``), into ``out``.

    Raises:
      ValueError: the file ends before a row (truncated after it was opened), naming it.
    """
    arr = self.stored[name]
    if out is None:
      out = np.empty((len(rows),) + arr.shape[1:], arr.dtype)
    if self._fd is None:
      raise ValueError(f"cache shard {self.path} is closed")
    size = arr.row_bytes
    for j, r in enumerate(rows):
      view = memoryview(out[j]).cast("B")
      got = os.preadv(self._fd, [view], arr.offset + int(r) * size)
      if got != size:
        raise ValueError(f"cache shard {self.path} is truncated: {name} row {int(r)} read "
                         f"{got} of {size} bytes; " + _REBUILD)
    return out

  def close(self) -> None:
    """Closes the file descriptor (idempotent)."""
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None

  def __del__(self):
    self.close()


class CachedSource:
  """A prepared split whose images and masks stay on disk (what :func:`load_cached` returns).

  :meth:`get_batch` and ``src[i]`` read only the rows asked for, one ``os.preadv`` per
  example and array straight into the batch's buffer: nothing of a shard is mapped or held, so
  iterating over a split larger than memory keeps the resident set to a few batches (the
  operating system's page cache keeps what it can). Shards are opened at load; the cache
  writer replaces files by renaming, so a re-preparation never changes an opened source. Every
  gathered batch's masks are checked to be in {0, 1}, and a file shortened after the load is
  reported (``ValueError`` naming the shard). Thread-safe for reading.

  Attributes:
    info: the :class:`DatasetInfo`.
    labels: int64 ``[N]`` (in memory).
    ids: ``[N]`` strings, where each example came from (in memory).
    image_size: the side ``S`` of the square images.
    shards: the opened shards (``path``, ``labels``, ``stored``: the places of ``images``
      uint8 ``[n,S,S,3]`` and ``masks`` uint8 ``[n,S,S]`` in the file).
  """

  def __init__(self, shards: Sequence[_Shard], info: DatasetInfo, *, image_size: int,
               meta_path: str):
    self.shards = list(shards)
    self.info = info
    self.image_size = int(image_size)
    self.meta_path = meta_path
    counts = [len(s.labels) for s in self.shards]
    self._starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    self.labels = (np.concatenate([s.labels for s in self.shards]).astype(np.int64)
                   if self.shards else np.zeros((0,), np.int64))
    self.ids = (np.concatenate([s.ids for s in self.shards]) if self.shards
                else np.zeros((0,), "<U1"))

  def __len__(self) -> int:
    return len(self.labels)

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Reads the rows ``indices`` (integers ``[B]`` in ``[-N, N)``, any order, repeats allowed).

    Returns:
      ``{"image": uint8 [B,S,S,3], "mask": uint8 [B,S,S], "label": int64 [B]}`` (new arrays).

    Raises:
      IndexOutOfRangeError: an index outside ``[-N, N)``.
      ValueError: a gathered mask value other than 0 and 1, or a shard shortened since the
        load (naming the shard).
    """
    idx = np.asarray(indices, np.int64).reshape(-1)
    n = len(self)
    bad = idx[(idx < -n) | (idx >= n)]
    if bad.size:
      raise IndexOutOfRangeError(f"index {int(bad[0])} out of range for a source of {n} "
                                 "examples")
    idx = idx % max(n, 1)
    shard = np.searchsorted(self._starts, idx, side="right") - 1
    row = idx - self._starts[shard]
    s = self.image_size
    images = np.empty((len(idx), s, s, 3), np.uint8)
    masks = np.empty((len(idx), s, s), np.uint8)
    for k in np.unique(shard):
      sel = np.flatnonzero(shard == k)
      sh = self.shards[int(k)]
      got_images = sh.read("images", row[sel])
      got_masks = sh.read("masks", row[sel])
      _check_masks(got_masks, sh.path, self.meta_path)
      images[sel], masks[sel] = got_images, got_masks
    return {"image": images, "mask": masks, "label": self.labels[idx]}

  def __getitem__(self, i: int) -> dict[str, Any]:
    if not isinstance(i, (int, np.integer)):
      raise TypeError(f"index must be an int, got {type(i).__name__}")
    b = self.get_batch(np.asarray([i]))
    return {"image": b["image"][0], "mask": b["mask"][0], "label": int(b["label"][0])}

  @property
  def images(self) -> np.ndarray:
    """Every image, uint8 ``[N,S,S,3]``, read into memory (for small splits; large ones
    gather batches)."""
    return self.get_batch(np.arange(len(self)))["image"]

  @property
  def masks(self) -> np.ndarray:
    """Every mask, uint8 ``[N,S,S]``, read into memory (for small splits; large ones gather
    batches)."""
    return self.get_batch(np.arange(len(self)))["mask"]

  def close(self) -> None:
    """Closes the shards' files (the source cannot read afterwards)."""
    for sh in self.shards:
      sh.close()

  def __repr__(self) -> str:
    return (f"CachedSource({self.info.name!r}, split={self.info.split!r}, n={len(self)}, "
            f"image_size={self.image_size}, num_classes={self.info.num_classes}, "
            f"shards={len(self.shards)})")


def _info_from_meta(meta: Mapping[str, Any], out_dir: str) -> DatasetInfo:
  info = dict(meta["info"])
  extra = dict(info.get("extra", {}))
  extra["cache_dir"] = out_dir
  extra["skipped_files"] = dict(meta.get("skipped_files", {}))
  extra["preparation"] = meta["params"]
  return DatasetInfo(
      name=info["name"], split=info["split"], num_classes=int(info["num_classes"]),
      class_names=tuple(info["class_names"]), image_size=int(meta["image_size"]),
      num_examples=int(meta["num_examples"]), has_masks=bool(info.get("has_masks", True)),
      mask_source=info["mask_source"], source=info["source"], skipped=dict(meta["skipped"]),
      extra=extra)


def load_or_prepare(*, dataset: str, title: str, download: str, split: str,
                    data_dir: str | None, image_size: int | None, default_size: int,
                    raw_dir: str | None, prepare_split: Callable[..., Any], verify: bool = False,
                    variant: str = "", **prepare_kw) -> "CachedSource":
  """Loads a prepared split of ``dataset``; prepares it first when ``raw_dir`` is given.

  ``image_size=None`` picks the only cached size (``default_size`` when none is cached or when
  preparing). ``prepare_split(raw_dir=, data_dir=, split=, image_size=, **prepare_kw)`` builds
  (or resumes) the cache. Without ``raw_dir`` and without a finished cache, the error names the
  expected folder, where to download ``download`` and the ``prepare_data`` command to run.
  ``variant`` selects the cache of non-default preparation options (see :func:`split_dir`).
  """
  from percadv_jax.data import raw
  image_size = raw.check_image_size(image_size)
  data_dir = raw.check_dir(data_dir or raw.default_data_dir(), "data_dir", must_exist=False)
  if raw_dir is not None:
    raw.check_dir(raw_dir, "raw_dir")
  if image_size is None:
    sizes = cached_sizes(data_dir, dataset, split, variant)
    if len(sizes) > 1:
      raise ValueError(f"{title} {split} is cached at several sizes {sizes} under {data_dir}; "
                       "pass image_size")
    image_size = sizes[0] if sizes else default_size
  out_dir = split_dir(data_dir, dataset, split, image_size, variant)
  if raw_dir is not None:
    prepare_split(raw_dir=raw_dir, data_dir=data_dir, split=split, image_size=image_size,
                  **prepare_kw)
  elif not os.path.exists(os.path.join(out_dir, "meta.json")):
    raise raw.DataPathError(
        f"no prepared {title} cache at {out_dir}. Download {download}, unzip into RAW, then run "
        f"`python -m experiments.prepare_data --dataset={dataset} --raw_dir=RAW "
        f"--data_dir={data_dir} --image_size={image_size} --splits={split}` "
        "(or pass raw_dir= to load)")
  return load_cached(out_dir, verify=verify)
