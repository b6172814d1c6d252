r"""Robustness sweep: a grid attack x eps x steps x checkpoint, sharded over devices and hosts.

  python -m experiments.sweep --workdir=/tmp/sweep \
      --config=experiments/configs/sweep.py --config.attacks="('pgd','apgd')" \
      --config.checkpoints="('runs/demo/attention_masks/models/full_natural',)"
  # two hosts (or two local processes), CPU or GPU: the same command on each, with
  #   --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0 (1 on the other)

Fields: ``experiments/configs/sweep.py``; the grid, cells and outputs: ``experiments/sweep_grid``.
A killed sweep restarted with the same command continues where it stopped.
"""

from __future__ import annotations

from experiments import cli


def _run(config, workdir):
  from experiments import sweep_grid
  cli.initialize_multihost()
  return sweep_grid.run(config, workdir)


def _report(rows, workdir):
  from percadv_jax import io, parallel
  if parallel.is_main_process():
    print(io.markdown_table(rows, ["checkpoint", "checkpoint_step", "attack", "eps", "steps",
                                   "clean", "robust"]))


if __name__ == "__main__":
  from experiments import sweep_grid
  cli.define_flags("sweep", multihost=True)
  cli.main(_run, validate=sweep_grid.validate, report=_report)
