"""Orbax checkpoints of a ``TrainState`` (saved synchronously: a file on disk is complete).

A checkpoint holds ``step``, ``params``, ``batch_stats``, ``opt_state`` and ``key``; restoring it
into a freshly created state of the same model and optimiser continues the run bit for bit.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import re
import sys
import time
import warnings

import jax
import orbax.checkpoint as ocp

from percadv_jax.train.state import TrainState, state_arrays, with_arrays


def manager(directory: str, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """A synchronous orbax ``CheckpointManager`` rooted at ``directory`` (created if missing)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


class _HoldErrors(logging.Filter):
  """Keeps back the error records (with their tracebacks) that orbax's writer threads log."""

  def __init__(self):
    super().__init__()
    self.records: list[logging.LogRecord] = []

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
      self.records.append(record)
      return False
    return True


class _HeldStream(io.TextIOBase):
  """A stand-in for ``sys.stderr`` that keeps what is written to it."""

  def __init__(self):
    super().__init__()
    self.parts: list[str] = []

  def write(self, text: str) -> int:
    self.parts.append(text)
    return len(text)

  def writable(self) -> bool:
    return True


# orbax logs through absl (the "absl" logger); its threads' futures and event loops through these.
_THREAD_LOGGERS = ("absl", "concurrent.futures", "asyncio")


class _QuietFailure:
  """While saving, what orbax's threads report on stderr is held back.

  When a write fails (a full disk), each of orbax's writer threads logs the failure with its
  traceback, each failed writer task once more when it is garbage-collected, and TensorStore
  prints a traceback for every write that completes after orbax closed its event loop: dozens
  of tracebacks on stderr around the one error that ``save`` raises. ``failed()`` drops them
  (after letting the writes still in flight finish); else the end of the block writes them out
  as usual.
  """

  def __enter__(self) -> "_QuietFailure":
    self.hold = _HoldErrors()
    self.loggers = [logging.getLogger(n) for n in _THREAD_LOGGERS]
    for lg in self.loggers:
      lg.addFilter(self.hold)
    self.stderr, self.held = sys.stderr, _HeldStream()
    sys.stderr = self.held
    return self

  def failed(self) -> None:
    gc.collect()  # the failed writer tasks log "exception never retrieved" now
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:  # until the late writes stop reporting
      n = len(self.held.parts)
      time.sleep(0.25)
      if len(self.held.parts) == n:
        break
    self.hold.records.clear()
    self.held.parts.clear()

  def __exit__(self, *exc) -> None:
    sys.stderr = self.stderr
    for lg in self.loggers:
      lg.removeFilter(self.hold)
    if self.held.parts:
      self.stderr.write("".join(self.held.parts))
    for record in self.hold.records:
      logging.getLogger(record.name).handle(record)


def _os_error(e: BaseException) -> int | None:
  """The errno of a failed write: an ``OSError``'s, or the ``os_error_code`` TensorStore puts in
  its message (``[os_error_code='28']``: disk full), else None."""
  if isinstance(e, OSError) and e.errno:
    return e.errno
  m = re.search(r"os_error_code='?(\d+)", str(e))
  return int(m.group(1)) if m else None


def save(mngr: ocp.CheckpointManager, state: TrainState) -> None:
  """Saves ``state`` under its step (overwriting nothing; a no-op if that step exists).

  Raises:
    OSError: the write failed in the file system (disk full, read-only, no permission): one
      line, ``filename`` the checkpoint directory, and nothing more on stderr. The unfinished
      step is left in orbax's temporary directory, which orbax ignores; the previous
      checkpoints are intact. Any other failure propagates as orbax raised it.
  """
  step = int(jax.device_get(state.step))
  if step in mngr.all_steps():
    return
  code = None
  with _QuietFailure() as quiet:
    try:
      mngr.save(step, args=ocp.args.StandardSave(state_arrays(state)), force=True)
      mngr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      code = _os_error(e)
      if code is None:
        raise
    if code is not None:
      quiet.failed()
  if code is not None:
    raise OSError(code, f"{os.strerror(code)} (saving checkpoint step {step})",
                  os.fspath(mngr.directory))


def _summary(e: BaseException) -> str:
  """The first line of an exception's message (orbax/TensorStore errors run to many lines)."""
  text = str(e).strip().splitlines()
  first = text[0] if text else ""
  if len(first) > 200:
    first = first[:200] + "..."
  return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _step_dir(mngr: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(os.fspath(mngr.directory), str(step))


def _move_aside(path: str) -> str | None:
  """Renames an unreadable step directory to ``<path>.corrupt[-k]`` (ignored by orbax).

  A corrupt step left in place would shadow the run: its step number is taken, so the resumed
  run could never save that step again. Nothing is deleted. Returns the new path, or None if the
  directory could not be renamed (e.g. a read-only workdir).
  """
  target, k = path + ".corrupt", 1
  while os.path.exists(target):
    target, k = f"{path}.corrupt-{k}", k + 1
  try:
    os.replace(path, target)
  except OSError:
    return None
  return target


def restore(mngr: ocp.CheckpointManager, state: TrainState, step: int | None = None
            ) -> TrainState:
  """``state`` with its arrays replaced by checkpoint ``step`` (default: the latest intact one).

  ``state`` supplies the structure, shapes and dtypes (and the static ``apply_fn``, ``tx``); it
  is returned unchanged when there is no checkpoint. Without ``step``, an unreadable latest step
  (truncated or zeroed files, e.g. a disk that filled up) is reported with a warning naming its
  directory, renamed to ``<step>.corrupt`` (so the resumed run can save that step again) and the
  newest older intact step is restored; the returned ``state.step`` says which.

  Raises:
    ValueError: ``step`` is given and unreadable, or no step is intact; one line naming the
      directory and the reason (no TensorStore traceback).
  """
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_arrays(state))

  def load(s: int):
    return mngr.restore(s, args=ocp.args.StandardRestore(target))

  if step is not None:
    try:
      return with_arrays(state, load(step))
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"checkpoint step {step} at {_step_dir(mngr, step)} cannot be restored "
                       f"({_summary(e)})") from None
  steps = sorted(mngr.all_steps(), reverse=True)
  if not steps:
    return state
  failed = []
  for s in steps:
    try:
      arrays = load(s)
    except Exception as e:  # pylint: disable=broad-except
      failed.append((s, _summary(e)))
      continue
    if failed:
      moved = [(f, _move_aside(_step_dir(mngr, f))) for f, _ in failed]
      mngr.reload()
      for (f, why), (_, new) in zip(failed, moved):
        where = f"; moved to {new}" if new else ""
        warnings.warn(f"checkpoint step directory {_step_dir(mngr, f)} is unreadable ({why})"
                      f"{where}; restored the older step {s} instead", stacklevel=2)
    return with_arrays(state, arrays)
  raise ValueError(f"no intact checkpoint in {os.fspath(mngr.directory)}: step(s) "
                   f"{', '.join(str(f) for f, _ in failed)} cannot be restored (step "
                   f"{failed[0][0]}: {failed[0][1]})") from None


def latest_step(directory: str) -> int | None:
  """The latest saved step under ``directory``, or None (no manager needed by the caller)."""
  if not os.path.isdir(directory):
    return None
  return manager(directory).latest_step()
