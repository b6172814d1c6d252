"""Orbax checkpoints of a ``TrainState`` (saved synchronously: a file on disk is complete).

A checkpoint holds ``step``, ``params``, ``batch_stats``, ``opt_state`` and ``key``; restoring it
into a freshly created state of the same model and optimiser continues the run bit for bit.
"""

from __future__ import annotations

import os
import warnings

import jax
import orbax.checkpoint as ocp

from percadv_jax.train.state import TrainState, state_arrays, with_arrays


def manager(directory: str, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """A synchronous orbax ``CheckpointManager`` rooted at ``directory`` (created if missing)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(mngr: ocp.CheckpointManager, state: TrainState) -> None:
  """Saves ``state`` under its step (overwriting nothing; a no-op if that step exists)."""
  step = int(jax.device_get(state.step))
  if step in mngr.all_steps():
    return
  mngr.save(step, args=ocp.args.StandardSave(state_arrays(state)), force=True)
  mngr.wait_until_finished()


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
