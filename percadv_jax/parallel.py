"""Data parallelism over all devices of all hosts, and the evaluation engine built on it.

One ``"data"`` mesh axis, ``jax.jit`` with ``NamedSharding`` (no ``pmap``): arguments such as
model variables are replicated, batches are split along their leading axis.

- Multi-host runtime: ``initialize(...)`` starts JAX's distributed runtime from arguments or from
  JAX's environment variables, before any other JAX call (on CPU the collectives go through
  gloo); ``is_main_process()`` guards file output (process 0 writes); ``sync`` is a barrier.
- Mesh and placement: ``make_mesh()`` is a 1-D mesh with axis ``"data"`` over ``jax.devices()``
  (every device of every process); ``replicate(tree)`` places a pytree on every device;
  ``shard_batch`` assembles a global batch split along ``"data"`` from each process's rows
  (``jax.make_array_from_process_local_data``; in one process, local == global); ``to_host``
  gathers a sharded result to NumPy on every process.
- Batch sizes a user gives are *global*. Each process reads only its rows (``local_slice``,
  ``process_indices``). Uneven sizes are never dropped silently: ``shard_batch(..., pad=True)``
  pads to a multiple of the device count and adds a float32 validity weight (1 real, 0 padding);
  without ``pad`` it raises a ``ValueError`` saying how to fix it.
- Evaluation: ``map_examples(per_example_fn, args, data, batch_size=...)`` runs a per-example
  function over a whole dataset (attacks, ``attacks.robust_accuracy``, CAMs, agreement metrics)
  and returns the per-example outputs in example order. It pads the last batch to the full global
  batch size (``iterate_padded``), so one compiled shape serves every batch and the random
  streams are the same for any device count; ``padded_batch_size`` picks a batch size that
  splits over the devices. ``batch_size=0`` picks one automatically (``auto_batch_size``): the
  device count times the largest power of two rows per device whose compiled program fits in
  the device's memory (XLA's memory analysis of the compiled program against the device's
  reported limit; on the CPU, which reports none, ``AUTO_CPU_ROWS_PER_DEVICE`` rows per device).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from percadv_jax import checks, compiler

DATA_AXIS = "data"
WEIGHT_KEY = "weight"
# batch_size=0 (auto_batch_size): the share of a device's reported memory the program may use,
# and the rows per device on backends that report no memory limit (the CPU).
AUTO_MEMORY_FRACTION = 0.75
AUTO_CPU_ROWS_PER_DEVICE = 256

_ENV = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}
_initialized = False


# ----------------------------------------------------------------------------------------------
# Multi-host runtime.


def _from_env(name: str) -> str | None:
  return os.environ.get(_ENV[name]) or None


def initialize(*, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: Sequence[int] | None = None,
               cpu_collectives: str = "gloo", timeout_s: int = 300) -> bool:
  """Starts ``jax.distributed`` for a multi-process run; a no-op for a single process.

  Call it first, before any other JAX computation. Arguments left ``None`` are read from the
  environment: ``JAX_COORDINATOR_ADDRESS`` (e.g. ``"10.0.0.1:1234"``), ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID``. With no coordinator and ``num_processes`` in (None, 1) nothing is started
  (one process). Calling it again after success does nothing.

  Args:
    coordinator_address: ``host:port`` of process 0's coordinator service.
    num_processes: total number of processes (>= 1).
    process_id: this process's id in ``[0, num_processes)``.
    local_device_ids: restricts this process to these local accelerators (GPU: one process per
      GPU passes ``[local_rank]``); ``None`` uses all.
    cpu_collectives: ``jax_cpu_collectives_implementation`` for cross-process CPU collectives
      ("gloo"; "mpi" needs an MPI build; "none" disables them).
    timeout_s: how long to wait for all processes to join.

  Returns:
    True if a multi-process runtime is (now) running, False for a single process.

  Raises:
    ValueError: an inconsistent combination (e.g. several processes but no coordinator).
  """
  global _initialized
  if _initialized:
    return True
  coordinator_address = coordinator_address or _from_env("coordinator_address")
  if num_processes is None and _from_env("num_processes") is not None:
    num_processes = int(_from_env("num_processes"))
  if process_id is None and _from_env("process_id") is not None:
    process_id = int(_from_env("process_id"))
  if coordinator_address is None and num_processes in (None, 1):
    return False
  if coordinator_address is None:
    raise ValueError(f"num_processes={num_processes} needs a coordinator_address (host:port of "
                     "process 0), from the argument or JAX_COORDINATOR_ADDRESS")
  if num_processes is None or process_id is None:
    raise ValueError("a multi-process run needs num_processes and process_id (arguments or "
                     "JAX_NUM_PROCESSES / JAX_PROCESS_ID)")
  if not 0 <= process_id < num_processes:
    raise ValueError(f"process_id must lie in [0, {num_processes}), got {process_id}")
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id,
                             local_device_ids=local_device_ids,
                             initialization_timeout=timeout_s)
  _initialized = True
  return True


def is_main_process() -> bool:
  """True on process 0, the one that writes results, tables and figures."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Barrier across processes (no-op for one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


# ----------------------------------------------------------------------------------------------
# Mesh and placement.


def make_mesh(*, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError("make_mesh needs at least one device")
  return Mesh(np.asarray(devices, dtype=object), (DATA_AXIS,))


@functools.lru_cache(maxsize=None)
def _default_mesh() -> Mesh:
  return make_mesh()


def _mesh(mesh: Mesh | None) -> Mesh:
  return _default_mesh() if mesh is None else mesh


def data_sharding(*, mesh: Mesh | None = None) -> NamedSharding:
  """Leading (batch) axis split over ``"data"``; other axes whole."""
  return NamedSharding(_mesh(mesh), P(DATA_AXIS))


def replicated_sharding(*, mesh: Mesh | None = None) -> NamedSharding:
  """A full copy on every device of the mesh."""
  return NamedSharding(_mesh(mesh), P())


def num_devices(*, mesh: Mesh | None = None) -> int:
  """Devices of ``mesh`` in all processes (default mesh: every device of every process)."""
  return _mesh(mesh).devices.size


def num_local_devices(*, mesh: Mesh | None = None) -> int:
  """Devices of ``mesh`` that belong to this process."""
  return len(_mesh(mesh).local_devices)


def _is_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _replicate_leaf(x: Any, sharding: NamedSharding) -> Any:
  if _is_key(x):
    impl = jax.random.key_impl(x)
    return jax.random.wrap_key_data(_replicate_leaf(jax.random.key_data(x), sharding), impl=impl)
  if isinstance(x, jax.Array) and x.sharding == sharding:
    return x
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return jax.jit(lambda a: a, out_shardings=sharding)(x)
  a = np.asarray(x)
  return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])


def replicate(tree: Any, *, mesh: Mesh | None = None) -> Any:
  """Places every array leaf of ``tree`` (params, train state) on every device of ``mesh``.

  In a multi-process run every process must pass the same values (as after the same seeded init
  or the same checkpoint). Non-array leaves (Python numbers) are placed as 0-d arrays; static
  fields of flax structs stay as they are.
  """
  s = replicated_sharding(mesh=mesh)
  return jax.tree.map(lambda x: _replicate_leaf(x, s), tree)


def _leading(tree: Any) -> int:
  sizes = {np.shape(x)[0] for x in jax.tree.leaves(tree) if np.ndim(x) > 0}
  if len(sizes) != 1:
    raise ValueError(f"all batch leaves need the same leading (batch) size, got {sorted(sizes)}")
  return sizes.pop()


def pad_batch(batch: Mapping[str, Any], size: int, *,
              weight_key: str = WEIGHT_KEY) -> dict[str, np.ndarray]:
  """Pads every leaf of a dict batch along axis 0 to ``size`` rows and adds validity weights.

  Padding rows repeat the last real row (valid pixels and labels, so nothing downstream sees
  out-of-range values), and get weight 0; real rows keep their weight (1 if ``batch`` had none).

  Args:
    batch: dict of arrays with a common leading size ``1 <= n <= size``.
    size: the padded leading size.
    weight_key: the name of the float32 ``[size]`` weight entry.

  Returns:
    A new dict of NumPy arrays, each with leading size ``size``, plus ``weight_key``.
  """
  if not isinstance(batch, Mapping):
    raise ValueError("padding needs a dict batch (a weight entry is added); got "
                     f"{type(batch).__name__}")
  batch = {k: np.asarray(v) for k, v in batch.items()}
  n = _leading(batch)
  if n == 0:
    raise ValueError("cannot pad an empty batch (no row to repeat)")
  if size < n:
    raise ValueError(f"pad size {size} is smaller than the batch ({n} rows)")
  weight = batch.pop(weight_key, np.ones((n,), np.float32)).astype(np.float32)
  out = {}
  for k, v in batch.items():
    reps = np.repeat(v[-1:], size - n, axis=0)
    out[k] = np.concatenate([v, reps], axis=0)
  out[weight_key] = np.concatenate([weight, np.zeros((size - n,), np.float32)])
  return out


def shard_batch(batch: Any, *, mesh: Mesh | None = None, pad: bool = False,
                weight_key: str = WEIGHT_KEY) -> Any:
  """This process's rows of a global batch -> global ``jax.Array``s split along ``"data"``.

  Args:
    batch: pytree of arrays with a common leading size ``n`` = this process's share of the global
      batch (the whole batch in a single-process run). Every process passes the same ``n``.
    mesh: the mesh (default: all devices).
    pad: if ``n`` is not a multiple of this process's device count, pad (``pad_batch``; ``batch``
      must be a dict) and add the weight entry. With ``pad=True`` the weight entry is always
      added, so the structure does not depend on ``n``.
    weight_key: name of the weight entry.

  Returns:
    The same pytree of global arrays with leading size ``n * process_count`` (after padding).

  Raises:
    ValueError: ``n`` does not divide over the local devices and ``pad`` is False.
  """
  mesh = _mesh(mesh)
  s = data_sharding(mesh=mesh)
  leaves = jax.tree.leaves(batch)
  if leaves and all(isinstance(v, jax.Array) and v.sharding == s for v in leaves):
    if pad and not (isinstance(batch, Mapping) and weight_key in batch):
      raise ValueError(f"batch is already sharded but has no '{weight_key}' entry to pad with")
    return batch  # already global and split along "data"
  local = num_local_devices(mesh=mesh)
  n = _leading(batch)
  if pad:
    batch = pad_batch(batch, -(-n // local) * local, weight_key=weight_key)
  elif n % local:
    raise ValueError(
        f"batch of {n} rows per process does not split over {local} local devices "
        f"({num_devices(mesh=mesh)} in all): use a batch size that is a multiple of "
        f"{num_devices(mesh=mesh)}, or pad it (shard_batch(..., pad=True) adds a "
        f"'{weight_key}' entry marking the padding)")

  def put(x):
    if isinstance(x, jax.Array) and x.sharding == s:
      return x
    x = np.asarray(x)
    if jax.process_count() == 1:
      return jax.device_put(x, s)
    return jax.make_array_from_process_local_data(s, x)
  return jax.tree.map(put, batch)


def to_host(tree: Any) -> Any:
  """Every leaf as a NumPy array with its global shape (gathered across processes if needed)."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(get, tree)


def local_slice(global_size: int) -> slice:
  """The rows ``[start, stop)`` of a global batch that this process reads.

  Raises:
    ValueError: ``global_size`` is not an integer >= 0 or not a multiple of the process count.
  """
  from percadv_jax.data.source import host_rows  # the data package, imported when first needed
  return host_rows(global_size, jax.process_index(), jax.process_count())


def process_indices(start: int, global_size: int, total: int) -> tuple[np.ndarray, int]:
  """Example indices this process reads for the global batch ``[start, start + global_size)``.

  Rows past ``total`` (the dataset size) are dropped here; ``iterate_padded`` pads them back
  with weight 0.

  Returns:
    ``(indices, local_size)``: int64 indices ``[M]`` with ``M <= local_size`` (fewer only in the
    last batch), and ``local_size = global_size // process_count``.
  """
  sl = local_slice(global_size)
  lo, hi = start + sl.start, min(start + sl.stop, total)
  return np.arange(lo, max(lo, hi)), sl.stop - sl.start


# ----------------------------------------------------------------------------------------------
# Evaluation over a dataset.


def iterate_padded(data: Any, *, batch_size: int, mesh: Mesh | None = None,
                   weight_key: str = WEIGHT_KEY) -> Iterator[tuple[int, Any]]:
  """Yields ``(batch_index, global_batch)`` over a whole dataset, every batch ``batch_size`` rows.

  Each process reads only its rows: ``data`` is a dict of arrays indexed by NumPy index arrays
  (e.g. ``data.to_arrays(src)``), or a ``Callable[[np.ndarray], dict]`` that loads the given
  example indices (e.g. ``lambda idx: data.to_arrays(src, indices=idx)``) together with its size as
  ``(fetch, total)``. The last batch is padded with weight-0 rows to ``batch_size``.

  Raises:
    ValueError: ``batch_size`` is not a multiple of the device count.
  """
  mesh = _mesh(mesh)
  nd = num_devices(mesh=mesh)
  if batch_size <= 0 or batch_size % nd:
    raise ValueError(f"evaluation batch size {batch_size} must be a positive multiple of the "
                     f"device count {nd} (the last, partial batch is padded; map_examples also "
                     "takes 0: automatic)")
  if isinstance(data, tuple):
    fetch, total = data
  else:
    total = _leading(data)
    fetch = lambda idx: {k: np.asarray(v)[idx] for k, v in data.items()}  # noqa: E731
  for b, start in enumerate(range(0, total, batch_size)):
    idx, local_size = process_indices(start, batch_size, total)
    if len(idx) == 0:  # this process's slice of the last batch is empty: copy a real row
      local = fetch(np.array([total - 1]))
      local = pad_batch(local, local_size, weight_key=weight_key)
      local[weight_key] = np.zeros((local_size,), np.float32)
    else:
      local = pad_batch(fetch(idx), local_size, weight_key=weight_key)
    yield b, shard_batch(local, mesh=mesh)


def padded_batch_size(n: int, batch_size: int, *, mesh: Mesh | None = None) -> int:
  """``min(batch_size, n)`` rounded up to a multiple of the device count (``map_examples`` drops
  the padding rows). ValueError unless ``n >= 1`` and ``batch_size >= 1`` are integers."""
  n = checks.check_int(n, "n (examples)", minimum=1)
  batch_size = checks.check_int(batch_size, "batch_size", minimum=1)
  nd = num_devices(mesh=mesh)
  return -(-min(batch_size, n) // nd) * nd


@functools.lru_cache(maxsize=64)
def _map_jit(per_example_fn: Callable, mesh: Mesh) -> Callable:
  """The jitted, sharded ``per_example_fn`` of ``map_examples`` (one compile per function)."""
  rep = replicated_sharding(mesh=mesh)
  return compiler.jit(per_example_fn, in_shardings=(rep, data_sharding(mesh=mesh), rep),
                      out_shardings=data_sharding(mesh=mesh))


def device_memory(device: jax.Device) -> int | None:
  """The bytes a program may use on ``device`` (``memory_stats()["bytes_limit"]``), or None when
  the backend reports no limit (the CPU)."""
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001 - backends without memory statistics raise or return None
    stats = None
  limit = (stats or {}).get("bytes_limit")
  return int(limit) if limit else None


def program_bytes(compiled: Any) -> int:
  """Per-device bytes of a compiled program: arguments + outputs + temporaries - aliased
  (``compiled.memory_analysis()``)."""
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


def _example_shapes(data: Any, weight_key: str) -> dict[str, tuple[tuple[int, ...], Any]]:
  """``{name: (shape of one row, dtype)}`` of ``data``'s batches, the weight entry included."""
  row = data[0](np.array([0])) if isinstance(data, tuple) else {
      k: np.asarray(v)[:1] for k, v in data.items()}
  out = {k: (np.shape(v)[1:], np.asarray(v).dtype) for k, v in row.items()}
  out[weight_key] = ((), np.dtype(np.float32))
  return out


def auto_batch_size(per_example_fn: Callable, args: Any, data: Any, *,
                    mesh: Mesh | None = None, key: jax.Array | None = None,
                    weight_key: str = WEIGHT_KEY, memory: int | None = None) -> int:
  """The global batch size of ``map_examples(..., batch_size=0)``.

  The device count times the largest power of two ``r`` of rows per device whose compiled
  ``per_example_fn`` (sharded as ``map_examples`` runs it) needs at most
  ``AUTO_MEMORY_FRACTION`` of ``memory`` per device (XLA's ``memory_analysis`` of the compiled
  program, ``program_bytes``), with ``r`` no larger than the dataset needs. The program's memory
  is nearly affine in ``r``: it is compiled at 1 and 2 rows per device, ``r`` is read off the
  line, and compiles at ``r`` and its neighbours confirm it (halving while it does not fit,
  doubling while twice it does).

  Args:
    per_example_fn, args, mesh, key, weight_key: as ``map_examples``.
    data: as ``map_examples``: a dict of arrays ``[N, ...]`` or ``(fetch, N)``.
    memory: bytes per device; default ``device_memory`` of the mesh's first device. When neither
      gives a figure (the CPU reports none), ``r = AUTO_CPU_ROWS_PER_DEVICE``, compiling nothing.

  Raises:
    ValueError: one row per device does not fit in ``memory``.
  """
  mesh = _mesh(mesh)
  nd = num_devices(mesh=mesh)
  total = data[1] if isinstance(data, tuple) else _leading(data)
  needed = 1 << max(0, (-(-total // nd) - 1).bit_length())  # rows per device for every example
  memory = device_memory(mesh.devices.flat[0]) if memory is None else memory
  if memory is None:
    return nd * min(AUTO_CPU_ROWS_PER_DEVICE, needed)
  budget = AUTO_MEMORY_FRACTION * memory
  jitted = _map_jit(per_example_fn, mesh)
  args = replicate(args, mesh=mesh)
  k = None if key is None else replicate(key, mesh=mesh)
  rows = _example_shapes(data, weight_key)
  split = data_sharding(mesh=mesh)

  def need(r: int) -> int:
    batch = {name: jax.ShapeDtypeStruct((r * nd, *shape), dtype, sharding=split)
             for name, (shape, dtype) in rows.items()}
    return program_bytes(jitted.lower(args, batch, k).compile())

  one = need(1)
  if one > budget:
    raise ValueError(f"one example per device needs {one} bytes, more than "
                     f"{AUTO_MEMORY_FRACTION:g} of the device's {memory} bytes: use a smaller "
                     "model or input, or pass a batch_size")
  per_row = max(need(2) - one, 1) if needed > 1 else 1
  r = 1
  while r < needed and one + (2 * r - 1) * per_row <= budget:  # the line's estimate
    r *= 2
  while r > 1 and need(r) > budget:
    r //= 2
  while r < needed and need(2 * r) <= budget:
    r *= 2
  return nd * r


def map_examples(per_example_fn: Callable, args: Any, data: Any, *, batch_size: int,
                 mesh: Mesh | None = None, key: jax.Array | None = None,
                 weight_key: str = WEIGHT_KEY, desc: str | None = None) -> dict[str, np.ndarray]:
  """Per-example outputs of a function over a dataset, sharded over all devices and hosts.

  The one evaluation path of the library: attacks, robust accuracy, CAMs and agreement metrics
  all run through it. Every batch has ``batch_size`` rows (the last one is padded with weight-0
  rows), so ``per_example_fn`` compiles once; the padding is dropped from the outputs.

  Args:
    per_example_fn: ``per_example_fn(args, batch, key) -> dict[str, Array[B, ...]]`` (``key`` is
      ``jax.random.fold_in(key, batch_index)``, or None when ``key`` is None); a pure function,
      compiled once per function object and shapes: pass changing values (eps, variables of
      another checkpoint) through ``args``, not through a new closure. ``batch`` is the dict
      from ``data`` plus the ``weight`` entry.
    args: replicated pytree (model variables, ...).
    data: a dict of arrays ``[N, ...]`` or ``(fetch, N)`` (see ``iterate_padded``).
    batch_size: global batch size, a multiple of the device count; 0 picks the largest that
      fits the device's memory (``auto_batch_size``; the CPU: ``AUTO_CPU_ROWS_PER_DEVICE`` rows
      per device), at most the dataset.
    mesh: the mesh (default: all devices).
    key: PRNG key for random attacks.
    weight_key: name of the weight entry.
    desc: label of a progress bar (None: no bar).

  Returns:
    ``{name: np.ndarray [N, ...]}`` in example order, the same on every process.

  Raises:
    ValueError: an empty dataset, or a batch size that does not split over the devices.
  """
  mesh = _mesh(mesh)
  total = data[1] if isinstance(data, tuple) else _leading(data)
  if total == 0:
    raise ValueError("the evaluation got an empty dataset (0 examples)")
  batch_size = checks.check_int(batch_size, "batch_size", minimum=0)
  if batch_size == 0:
    batch_size = padded_batch_size(total, auto_batch_size(
        per_example_fn, args, data, mesh=mesh, key=key, weight_key=weight_key), mesh=mesh)
  jitted = _map_jit(per_example_fn, mesh)
  args = replicate(args, mesh=mesh)
  parts: dict[str, list[np.ndarray]] = {}
  bar = None
  if desc is not None:
    from percadv_jax import io
    bar = io.progress(total=total, desc=desc, unit="img")
  try:
    for b, batch in iterate_padded(data, batch_size=batch_size, mesh=mesh,
                                   weight_key=weight_key):
      k = None if key is None else replicate(jax.random.fold_in(key, b), mesh=mesh)
      out = to_host(jitted(args, batch, k))
      real = to_host(batch[weight_key]) > 0  # each process's real rows are contiguous
      for name, v in out.items():
        parts.setdefault(name, []).append(np.asarray(v)[real])
      if bar is not None:
        bar.update(int(real.sum()))
  finally:
    if bar is not None:
      bar.close()
  return {name: np.concatenate(v) for name, v in parts.items()}
