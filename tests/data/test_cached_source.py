"""Prepared caches read batch by batch from disk: same data as in memory, only the batch's rows
read, per-host slices, prefetching, and damage named by path."""

import hashlib
import json
import os
import threading
import zipfile

import jax
import numpy as np
import pytest

from percadv_jax import data, train
from percadv_jax.data import cache
from percadv_jax.data.source import ArraySource, host_rows, prefetch

SIZE = 32  # the small VGG-19's smallest input


def _process(i):
  rng = np.random.default_rng(i)
  img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
  mask = (rng.random((SIZE, SIZE)) < 0.5).astype(np.uint8)
  return [(img, mask, i % 3, f"item{i}")], {}


def _info(skipped, n):
  return {"name": "toy", "split": "train", "num_classes": 3, "class_names": ["a", "b", "c"],
          "mask_source": "rendered", "source": "test", "extra": {}}


def _prepare(tmp_path, n=23, shard_size=5):
  out = str(tmp_path / "toy" / f"train_{SIZE}px")
  return cache.prepare(out, list(range(n)), _process, params={"p": 1}, image_size=SIZE,
                       shard_size=shard_size, info=_info, progress=False)


def _in_memory(out):
  """The split as an in-memory ArraySource, from the shards read whole."""
  shards = [cache.read_npz(os.path.join(out, f)) for f in sorted(os.listdir(out))
            if f.startswith("shard-")]
  src = cache.load_cached(out)
  return ArraySource(np.concatenate([z["images"] for z in shards]),
                     np.concatenate([z["masks"] for z in shards]),
                     np.concatenate([z["labels"] for z in shards]), src.info)


def _equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    assert a[k].dtype == b[k].dtype, k
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_cached_source_gives_the_in_memory_batches(tmp_path):
  out = _prepare(tmp_path)
  src, mem = cache.load_cached(out), _in_memory(out)
  assert isinstance(src, cache.CachedSource) and len(src) == len(mem) == 23
  assert len(src.shards) == 5
  np.testing.assert_array_equal(src.labels, mem.labels)
  assert [str(i) for i in src.ids] == [f"item{i}" for i in range(23)]
  idx = np.array([22, 0, 4, 5, 5, -1, 13, 9])  # across shards, repeats, a negative index
  _equal(src.get_batch(idx), mem.get_batch(idx))
  item, want = src[7], mem[7]
  assert item["label"] == want["label"]
  np.testing.assert_array_equal(item["image"], want["image"])
  for kw in ({"seed": 3, "epochs": 2}, {"seed": 0, "shuffle": False, "drop_remainder": False}):
    got = list(data.batches(src, batch_size=4, **kw))
    ref = list(data.batches(mem, batch_size=4, **kw))
    assert len(got) == len(ref) > 0
    for g, r in zip(got, ref):
      _equal(g, r)
  # The s-th batch holds batch_indices' examples: the one data order.
  first = next(data.batches(src, batch_size=4, seed=3))
  _equal(first, data.to_arrays(mem, indices=data.batch_indices(23, 4, 3, 0)))
  with pytest.raises(data.IndexOutOfRangeError, match="index 23 out of range"):
    src.get_batch(np.array([1, 23]))


def test_only_the_rows_of_a_batch_are_read(tmp_path, monkeypatch):
  out = _prepare(tmp_path)
  src = cache.load_cached(out)
  # Nothing of the images or masks is held in memory: only labels and ids.
  held = [v for obj in [src, *src.shards] for v in vars(obj).values()
          if isinstance(v, np.ndarray) and v.dtype == np.uint8]
  assert held == []
  reads = []
  real = os.preadv

  def counting(fd, buffers, offset):
    reads.append((offset, sum(memoryview(b).nbytes for b in buffers)))
    return real(fd, buffers, offset)

  monkeypatch.setattr(os, "preadv", counting)
  idx = np.array([3, 11, 17])
  batch = src.get_batch(idx)
  # One read per example and array, of exactly one row each.
  assert sorted(n for _, n in reads) == [SIZE * SIZE] * 3 + [SIZE * SIZE * 3] * 3
  # Rows are read when gathered: a row rewritten on disk after the load is what a batch gets.
  shard = src.shards[2]  # examples 10..14
  offset = shard.stored["images"].offset + 1 * shard.stored["images"].row_bytes
  with open(shard.path, "r+b") as f:
    f.seek(offset)
    f.write((np.arange(SIZE * SIZE * 3) % 251).astype(np.uint8).tobytes())
  again = src.get_batch(idx)["image"]
  np.testing.assert_array_equal(again[1].reshape(-1), np.arange(SIZE * SIZE * 3) % 251)
  np.testing.assert_array_equal(again[[0, 2]], batch["image"][[0, 2]])


@pytest.mark.parametrize("count", [1, 2, 4])
def test_per_host_slices_partition_the_global_batch(tmp_path, count):
  src = cache.load_cached(_prepare(tmp_path))
  whole = list(data.batches(src, batch_size=8, seed=5, epochs=2, prefetch=0))
  hosts = [list(data.batches(src, batch_size=8, seed=5, epochs=2, process_index=p,
                             process_count=count)) for p in range(count)]
  assert all(len(h) == len(whole) == 4 for h in hosts)
  for s, w in enumerate(whole):
    parts = [h[s] for h in hosts]
    assert all(len(p["label"]) == 8 // count for p in parts)
    _equal({k: np.concatenate([p[k] for p in parts]) for k in w}, w)
  rows = [host_rows(12, p, 3) for p in range(3)]
  assert [(r.start, r.stop) for r in rows] == [(0, 4), (4, 8), (8, 12)]
  with pytest.raises(ValueError, match="process_index"):
    host_rows(12, 3, 3)
  with pytest.raises(ValueError, match="does not split over 5 processes"):
    data.batches(src, batch_size=8, process_index=0, process_count=5)
  with pytest.raises(ValueError, match="drop_remainder"):
    data.batches(src, batch_size=8, process_index=0, process_count=2, drop_remainder=False)


def test_prefetching_yields_the_same_sequence_and_stops(tmp_path):
  src = cache.load_cached(_prepare(tmp_path))
  kw = dict(batch_size=4, seed=1, epochs=3)
  plain = list(data.batches(src, prefetch=0, **kw))
  for depth in (1, 2):
    ahead = list(data.batches(src, prefetch=depth, **kw))
    assert len(ahead) == len(plain) == 15
    for a, p in zip(ahead, plain):
      _equal(a, p)
  # The generic helper: order kept, an error re-raised at the caller, closing stops the thread.
  assert list(prefetch(iter(range(50)), 2)) == list(range(50))

  def failing():
    yield 1
    raise RuntimeError("boom")
  it = prefetch(failing(), 2)
  assert next(it) == 1
  with pytest.raises(RuntimeError, match="boom"):
    next(it)
  before = threading.active_count()
  it = prefetch(iter(range(10**9)), 2)
  next(it)
  it.close()
  assert threading.active_count() == before


def test_damaged_shards_name_their_path(tmp_path):
  out = _prepare(tmp_path)
  src = cache.load_cached(out)
  shard = src.shards[1]  # examples 5..9
  # Truncated after the load (the masks follow the images in the file): the batch that reaches
  # past the end says so.
  with open(shard.path, "r+b") as f:
    f.truncate(shard.stored["masks"].offset + 2 * shard.stored["masks"].row_bytes)
  src.get_batch(np.array([5, 6]))  # rows still in the file
  with pytest.raises(ValueError, match=f"cache shard {shard.path} is truncated: masks row 4"):
    src.get_batch(np.array([9]))
  with pytest.raises(ValueError, match=f"cache shard {shard.path} is corrupt or truncated"):
    cache.load_cached(out)
  # A mask value other than 0/1 in a row the load's sample does not check (the second of five)
  # is refused when a batch gathers it.
  path = os.path.join(_prepare(tmp_path / "b"), "shard-00003.npz")
  z = cache.read_npz(path)
  z["masks"][1] = 7
  cache.write_npz(path, z)
  src = cache.load_cached(os.path.dirname(path))
  with pytest.raises(ValueError, match=f"cache shard {path} .*masks hold values up to 7"):
    src.get_batch(np.array([0, 16]))
  meta_path = os.path.join(os.path.dirname(path), "meta.json")
  meta = json.load(open(meta_path))
  meta["shards"][3]["sha256"] = hashlib.sha256(open(path, "rb").read()).hexdigest()
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  cache.load_cached(os.path.dirname(path))  # the load's sample misses it
  with pytest.raises(ValueError, match=f"cache shard {path} .*masks hold values up to 7"):
    cache.load_cached(os.path.dirname(path), verify=True)  # checks every mask
  # A shard whose arrays are compressed cannot be read by row: refused, saying how to rebuild.
  path = os.path.join(_prepare(tmp_path / "c"), "shard-00000.npz")
  z = cache.read_npz(path)
  np.savez_compressed(path, **z)
  assert zipfile.ZipFile(path).getinfo("images.npy").compress_type == zipfile.ZIP_DEFLATED
  with pytest.raises(ValueError, match=f"cache shard {path} stores 'images' compressed.*"
                     "re-run experiments.prepare_data"):
    cache.load_cached(os.path.dirname(path))


@pytest.mark.slow  # two short training runs: ~35 s on 2 busy cores
def test_training_on_a_cached_source_follows_training_in_memory(tmp_path):
  out = _prepare(tmp_path, n=24, shard_size=7)
  src, mem = cache.load_cached(out), _in_memory(out)
  cfg = train.TrainConfig(model_kwargs={"variant": "small", "width": 0.0625}, batch_size=8,
                          steps=4, checkpoint_every=4, log_every=4, seed=2,
                          optimizer=train.OptimizerConfig(name="sgd", learning_rate=0.1))
  # cache_bytes=0: the cached source is read batch by batch (a split too large for memory).
  a = train.fit(cfg, str(tmp_path / "a"), train.ArrayData(src, cache_bytes=0))
  b = train.fit(cfg, str(tmp_path / "b"), mem)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
