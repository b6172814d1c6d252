r"""The command line of every experiment binary: a config file, overrides, one-line errors.

As in flax's examples, a binary takes ``--config=experiments/configs/<study>.py:<preset>``
(an ``ml_collections`` config file whose ``get_config(preset)`` returns a ``ConfigDict``),
``--config.<field>=<value>`` overrides of any field (``--config.train.epochs=3``; tuples as
Python literals, ``--config.models="('full_natural','masked_natural')"``, or for a tuple of
strings as a comma list, ``--config.models=full_natural,masked_natural``), and ``--workdir``.
``main(run, ...)`` then normalises the configuration (``split_comma_lists``: the one place where
the command line's comma lists become tuples), validates it (``validate`` only checks: it never
changes the configuration) and calls ``run(config, workdir)``. A binary that runs over several
processes (``experiments.sweep``, the pipeline benchmark of ``experiments.benchmark``) also
takes ``--coordinator_address``, ``--num_processes`` and ``--process_id``
(``define_flags(..., multihost=True)``, then ``initialize_multihost()``).

The workdir rule: everything checkable is checked before the workdir is locked. ``validate``
checks the fields; ``run`` then opens what the run reads (the prepared data, the weights, the
checkpoints, the results of other runs) and checks what they decide (image size against the
model, batch size against the training set), and only then writes ``config.json``
(``io.lock_config``). So a run refused for its input writes nothing into its workdir, and the
corrected command is never refused as "a different configuration". A workdir is held by one
run at a time (``<workdir>/.lock``): a second run started in it is refused.

Every error a user can cause (a bad flag or field, a missing or corrupt file, a workdir of
another configuration or in use, a full disk, a read-only workdir) ends the program with one
line ``error: ...`` on stderr and exit status 2 (usage) or 1 (anything else); a file-system error
names its path. ``--traceback`` shows the full traceback instead.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

from absl import app, flags, logging

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
FLAGS = flags.FLAGS


def define_flags(study: str, *, workdir: bool = True, default_preset: str = "default",
                 multihost: bool = False) -> None:
  """Defines ``--config`` (default ``configs/<study>.py:<default_preset>``), ``--workdir``,
  ``--traceback`` and, with ``multihost``, the multi-host flags ``--coordinator_address``,
  ``--num_processes`` and ``--process_id`` (read by ``initialize_multihost``)."""
  from ml_collections import config_flags
  try:  # ml_collections reads the --config.<field> overrides of sys.argv here
    config_flags.DEFINE_config_file(
        "config", os.path.join(CONFIGS, f"{study}.py") + f":{default_preset}",
        f"Config file and preset, e.g. experiments/configs/{study}.py:quick; override fields "
        "with --config.<field>=<value>.", lock_config=True)
  except (AttributeError, KeyError) as e:
    field = str(e).strip("\"'")
    given = [a for a in sys.argv[1:] if a.startswith("--config.") and field in a]
    _fail(f"no config field {field!r} (in {' '.join(given) or 'an override'}); --helpfull "
          "lists the fields", 2)
  if workdir:
    flags.DEFINE_string("workdir", None, "Output directory (created; resumable).")
  flags.DEFINE_bool("traceback", False, "Show the full traceback of an error.")
  if multihost:
    flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0 "
                        "(default: $JAX_COORDINATOR_ADDRESS).")
    flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes "
                         "(default: $JAX_NUM_PROCESSES).")
    flags.DEFINE_integer("process_id", None, "Multi-host: this process's id "
                         "(default: $JAX_PROCESS_ID).")


def initialize_multihost() -> bool:
  """Starts JAX's multi-process runtime from the multi-host flags (``parallel.initialize``).

  Call it in ``run`` before any JAX computation, in a binary whose ``define_flags`` had
  ``multihost=True``. With none of the flags or their environment variables set it does nothing.

  Returns:
    True for a multi-process run, False for a single process.
  """
  from percadv_jax import parallel
  return parallel.initialize(coordinator_address=FLAGS.coordinator_address,
                             num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)


def _fail(message: str, status: int) -> None:
  message = " ".join(str(message).split())  # one line
  print(f"error: {message}", file=sys.stderr)
  sys.exit(status)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing with every parse error as one line and exit status 2."""
  try:
    rest = FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    if "Traceback (most recent call last)" in text:  # ml_collections embeds the config's error
      head = text.split("Traceback (most recent call last)")[0].strip().rstrip(":")
      text = f"{head}: {text.strip().splitlines()[-1]}"
    _fail(text, 2)
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # ml_collections overrides
    text = str(e).strip("\"'")
    _fail(f"bad --config override: {text}", 2)
  try:
    cfg = FLAGS.config
    cfg.keys()  # a config file that failed to load raises here
  except flags.Error:
    raise
  except Exception as e:  # noqa: BLE001 - the config file's own error
    _fail(f"cannot load --config: {e}", 2)
  return rest


def split_comma_lists(config: Any) -> None:
  """Splits the comma lists of every tuple-of-strings field of ``config`` (in place, recursively).

  ``ml_collections`` parses ``--config.models=a,b`` for a tuple field into the 1-tuple
  ``("a,b",)``: each entry is split at commas and stripped, empty pieces dropped, so it becomes
  ``("a", "b")``. Tuples holding anything but strings are left as they are.
  """
  for key, value in config.items():
    if hasattr(value, "items"):
      split_comma_lists(value)
    elif isinstance(value, (tuple, list)) and value and all(isinstance(v, str) for v in value):
      parts = tuple(p.strip() for v in value for p in v.split(",") if p.strip())
      if parts != tuple(value):
        config[key] = type(value)(parts)


def main(run: Callable[[Any, str], Any], *, validate: Callable[[Any], None] | None = None,
         report: Callable[[Any, Any], None] | None = None, needs_workdir: bool = True) -> None:
  """Runs ``run(config, workdir)`` under absl with this module's flag parsing and errors.

  Args:
    run: the binary's ``run(config, workdir)``.
    validate: checks the whole config before any work (raises ValueError naming the field).
    report: prints the result (``report(result, workdir)``).
    needs_workdir: whether ``--workdir`` is required.
  """
  def _main(argv: Sequence[str]) -> None:
    from percadv_jax import compiler
    compiler.use_cpu_cores()  # one CPU device per core, unless the user set a count
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
    if len(argv) > 1:
      _fail(f"unexpected arguments: {' '.join(argv[1:])} (flags look like --name=value)", 2)
    config = FLAGS.config
    workdir = FLAGS["workdir"].value if "workdir" in FLAGS else None
    if needs_workdir and not workdir:
      _fail("--workdir is required (the output directory)", 2)
    split_comma_lists(config)
    try:
      if validate is not None:
        validate(config)
      result = run(config, workdir)
    except (ValueError, OSError) as e:
      if FLAGS.traceback:
        raise
      _fail(_describe(e), 1)
    except KeyboardInterrupt:
      _fail("interrupted; rerun the same command to resume", 130)
    if report is not None:
      report(result, workdir)

  app.run(_main, flags_parser=parse_flags)


def _describe(e: BaseException) -> str:
  """One line: ``PATH: reason`` for a file-system error, else the exception's message."""
  if isinstance(e, OSError) and e.filename is not None:
    reason = e.strerror or type(e).__name__
    return f"{e.filename}: {reason}"
  if isinstance(e, OSError) and e.strerror:
    return f"{e.strerror} ({type(e).__name__})"
  return str(e) or type(e).__name__
