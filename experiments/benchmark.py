r"""The benchmarks: one binary, a preset per benchmark.

  python -m experiments.benchmark --config=experiments/configs/benchmark.py:attacks \
      --workdir=/tmp/bench_attacks
  python -m experiments.benchmark --config=experiments/configs/benchmark.py:cam \
      --workdir=/tmp/bench_cam --config.models=mobilenet_v2 --config.record=False

The preset's ``benchmark`` field picks the module of ``experiments/benchmarks/`` (attacks,
autoattack, cam, conv, gpu, perceptual, pipeline, training); the fields are in
``experiments/configs/benchmark.py``.
Each writes its tables and ``results.json`` into ``--workdir`` and, with ``record`` (the
default), its section of docs/benchmarks.md. The pipeline benchmark also takes the multi-host
flags (``--coordinator_address``, ``--num_processes``, ``--process_id``; see ``experiments.cli``).
"""

from __future__ import annotations

from experiments import cli


def _validate(config):
  from experiments import benchmarks
  benchmarks.validate(config)


def _run(config, workdir):
  from experiments import benchmarks
  if config.benchmark == "pipeline":
    cli.initialize_multihost()
  return benchmarks.run(config, workdir)


if __name__ == "__main__":
  cli.define_flags("benchmark", default_preset="", multihost=True)
  cli.main(_run, validate=_validate)
