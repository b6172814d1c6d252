"""Orbax checkpoints of a ``TrainState`` (saved synchronously: a file on disk is complete).

A checkpoint holds ``step``, ``params``, ``batch_stats``, ``opt_state`` and ``key``; restoring it
into a freshly created state of the same model and optimiser continues the run bit for bit.
"""

from __future__ import annotations

import os

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


def restore(mngr: ocp.CheckpointManager, state: TrainState, step: int | None = None
            ) -> TrainState:
  """``state`` with its arrays replaced by checkpoint ``step`` (default: the latest).

  ``state`` supplies the structure, shapes and dtypes (and the static ``apply_fn``, ``tx``); it
  is returned unchanged when there is no checkpoint.
  """
  step = mngr.latest_step() if step is None else step
  if step is None:
    return state
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_arrays(state))
  arrays = mngr.restore(step, args=ocp.args.StandardRestore(target))
  return with_arrays(state, arrays)


def latest_step(directory: str) -> int | None:
  """The latest saved step under ``directory``, or None (no manager needed by the caller)."""
  if not os.path.isdir(directory):
    return None
  return manager(directory).latest_step()
