"""The benchmarks: one module per benchmark, each with ``validate(config)`` and
``run(config, workdir)``, run through ``python -m experiments.benchmark`` with a preset of
``experiments/configs/benchmark.py``.

- ``attacks``: PGD vs its floor, Foolbox's LinfPGD and a PyTorch loop;
- ``autoattack``: AutoAttack's standard cascade vs torchattacks' AutoAttack;
- ``cam``: one CAM call vs one jitted forward + backward pass;
- ``conv``: the convolution variants vs PyTorch and Foolbox, each contender in its own pinned
  worker process, interleaved rounds;
- ``loader``: images/s of the input pipeline over a prepared cache beside the training step's,
  and the peak memory of training on a split larger than memory;
- ``gpu``: the GPU rows (PGD-10 ours vs PyTorch on one device, the training steps, the input
  path, a 1-epoch ``gtsrb_paper`` smoke run on a 43-class synthetic stand-in);
- ``perceptual``: the quality-ball LP solver vs CVXPY and a jaxopt variant;
- ``pipeline``: images/s of every stage, sharded over the devices;
- ``training``: FGSM-RS vs PGD adversarial training, and PyTorch.

Shared: ``common`` (timing, the workdir lock, the results file), ``results`` (docs/benchmarks.md)
and ``torch_ports`` (the PyTorch models and PGD).
"""

from __future__ import annotations

import importlib
from typing import Any

BENCHMARKS = ("attacks", "autoattack", "cam", "conv", "gpu", "loader", "perceptual", "pipeline",
              "training")


def module(config: Any):
  """The module of ``config.benchmark`` (``experiments.benchmarks.<benchmark>``).

  Raises:
    ValueError: a config without a known ``benchmark`` field.
  """
  name = config.get("benchmark") if hasattr(config, "get") else None
  if not name:
    from experiments.configs import benchmark as presets
    raise ValueError("no benchmark chosen: pass --config=experiments/configs/benchmark.py:"
                     f"<preset> with a preset among {', '.join(presets.PRESETS)}")
  if name not in BENCHMARKS:
    raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
  return importlib.import_module(f"experiments.benchmarks.{name}")


def validate(config: Any) -> None:
  """Checks the whole configuration of ``config.benchmark`` before any work."""
  module(config).validate(config)


def run(config: Any, workdir: str) -> Any:
  """Runs ``config.benchmark`` into ``workdir``; returns that benchmark's result."""
  return module(config).run(config, workdir)
