r"""The GPU rows: one prepared run of what a machine with an accelerator should measure.

    python -m experiments.benchmark --config=experiments/configs/benchmark.py:gpu \
        --workdir=/tmp/bench_gpu

Rows (``results.json`` ``rows``, one table):

- ``pgd10``, ``floor(10x fwd+bwd)``, ``train_natural``, ``train_adversarial(pgd7)``,
  ``torch_pgd10(<device>)``: the ``pipeline`` benchmark's stages ``pgd``, ``train`` and
  ``torch`` (``experiments.benchmarks.pipeline``: ours and eager PyTorch on the same device,
  the same weights; ``fraction_of_peak`` against its ``peak`` stage's measured matmul FLOP/s) on
  the small VGG-19 at ``width``, ``batch_size`` images of ``image_size`` px, ``num_classes``
  classes, in ``precision``;
- ``input``: the training loop's input path, images/s of assembling a global batch from an
  in-memory training set (``train.ArrayData.batch`` of this process's rows, then
  ``parallel.shard_batch`` onto every device), ``input_over_train`` = its images/s over the
  adversarial training step's (above 1: the input keeps up with training);
- ``smoke(gtsrb_paper)``: a 1-epoch sub-run of the masks study's ``gtsrb_paper`` preset (VGG-19,
  Keras layout, width ``smoke_width``; data-parallel training; the whole evaluation) on a
  43-class synthetic stand-in of GTSRB-IC (``smoke_num_train`` / ``smoke_num_test`` synthetic
  signs at 32 px, batch ``smoke_batch_size``), the models ``smoke_models``, the evaluation
  ``smoke_eval`` ("paper": the preset's, PGD-20, APGD-100, curves, trust checks; "quick": the
  ``quick`` preset's attack sizes without AutoAttack, the adaptive column and the checklist,
  for a CPU, where the paper's attack budgets take long):
  seconds and the number of models it trained and evaluated (``models``).

Fields (``experiments/configs/benchmark.py``): the pipeline rows' ``batch_size`` (global, a
multiple of the device count), ``image_size``, ``width``, ``num_classes``, ``pgd_steps``,
``train_pgd_steps``, ``eps``, ``repeats``, ``precision``; the smoke run's ``smoke_models``,
``smoke_num_train``, ``smoke_num_test``, ``smoke_batch_size``, ``smoke_width``, ``smoke_eval``;
``skip`` (some of "torch", "smoke").

The results file's section ``benchmark_gpu`` holds the table when the backend is an
accelerator; a run on a CPU (the tests' tiny sizes) records only that the GPU rows are not
measured yet. Writes ``config.json``, ``results.json``, ``benchmark_gpu.md`` / ``.csv``,
``pipeline/`` and ``smoke/`` (the study's workdir) into the workdir.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import jax
import numpy as np

from experiments.benchmarks import common, pipeline
from percadv_jax import checks, io, parallel

SKIPS = ("torch", "smoke")
SMOKE_EVALS = ("paper", "quick")
SECTION = "benchmark_gpu"
COMMAND = ("python -m experiments.benchmark --config=experiments/configs/benchmark.py:gpu "
           "--workdir=/tmp/bench_gpu")
# The section's text after a run on a CPU.
NOT_MEASURED = ("GPU rows: not measured yet (no accelerator on the machine of the latest run of "
                "this preset, which ran on the CPU at tiny sizes to check itself). On a machine "
                f"with a GPU: `{COMMAND}`.")


def validate(config: Any) -> None:
  """Checks the configuration before any work; raises ValueError naming the field."""
  from experiments.configs import attention_masks
  common.check_output(config)
  common.positive_ints(config, ("batch_size", "image_size", "num_classes", "pgd_steps",
                                "train_pgd_steps", "repeats", "smoke_num_train",
                                "smoke_num_test", "smoke_batch_size"))
  common.positive_ints(config, ("seed",), allow_zero=True)
  checks.check_int(config.num_classes, "num_classes", minimum=2, maximum=43)
  for f in ("width", "eps", "smoke_width"):
    checks.check_float(config[f], f, minimum=0, min_inclusive=False)
  checks.check_choice(config.precision, "precision", pipeline.PRECISIONS)
  common.names(config, "skip", SKIPS, allow_empty=True)
  common.names(config, "smoke_models", attention_masks.MODEL_NAMES)
  checks.check_choice(config.smoke_eval, "smoke_eval", SMOKE_EVALS)
  if config.smoke_num_train < config.smoke_batch_size:
    raise ValueError(f"smoke_num_train ({config.smoke_num_train}) must be at least "
                     f"smoke_batch_size ({config.smoke_batch_size}): one epoch of one step")


def pipeline_config(config: Any) -> Any:
  """The ``pipeline`` benchmark's config of the GPU rows (stages peak, pgd, train, torch)."""
  from experiments.configs import benchmark as presets
  c = presets.pipeline()
  c.update(dict(batch_size=config.batch_size, image_size=config.image_size,
                width=config.width, num_classes=config.num_classes,
                pgd_steps=config.pgd_steps, train_pgd_steps=config.train_pgd_steps,
                eps=config.eps, repeats=config.repeats, precision=config.precision,
                seed=config.seed, cvxpy=False, record=False,
                stages=tuple(s for s in ("peak", "pgd", "train", "torch")
                             if s not in config.skip)))
  return c


def smoke_config(config: Any) -> Any:
  """The masks study's ``gtsrb_paper`` preset on a 43-class synthetic stand-in, one epoch."""
  from experiments.configs import attention_masks
  c = attention_masks.gtsrb_paper()
  c.models = tuple(config.smoke_models)
  c.data.update(dataset="synthetic_signs", image_size=32, num_classes=43,
                num_train=config.smoke_num_train, num_test=config.smoke_num_test)
  c.model.width = config.smoke_width
  c.train.update(epochs=1, batch_size=config.smoke_batch_size)
  if config.smoke_eval == "quick":  # the quick preset's attacks, without the extra evaluations
    c.eval = attention_masks.quick().eval
    c.eval.checklist.enabled = c.eval.adaptive.enabled = False
    c.eval.autoattack.version = "off"
  c.seed = config.seed
  return c


def input_rate(config: Any, repeats: int) -> tuple[float, float]:
  """``(first, median)`` seconds of one global batch through the training loop's input path."""
  from percadv_jax import data, train
  n = 4 * config.batch_size
  arrays = data.to_arrays(data.load("synthetic_signs", split="train", num_examples=n,
                                    image_size=config.image_size,
                                    num_classes=config.num_classes, seed=config.seed))
  source = train.ArrayData({"image": np.asarray(arrays["image"], np.float32),
                            "mask": np.asarray(arrays["mask"], np.float32).reshape(
                                arrays["image"].shape[:3] + (1,)),
                            "label": np.asarray(arrays["label"], np.int32)})
  mesh = parallel.make_mesh()
  step = itertools.count()

  def one():
    idx = data.batch_indices(n, config.batch_size, config.seed, next(step))
    local = source.batch(idx[parallel.local_slice(len(idx))])
    return parallel.shard_batch(local, mesh=mesh)
  return common.median_time(one, repeats)


def run(config: Any, workdir: str) -> list[dict]:
  """Runs the GPU rows into ``workdir``; returns the table's rows (see the module docstring)."""
  validate(config)
  c = config
  main = parallel.is_main_process()
  nd = parallel.num_devices()
  for f in ("batch_size", "smoke_batch_size"):
    if c[f] % nd:
      raise ValueError(f"{f} {c[f]} must be a multiple of the {nd} devices")
  if main:
    common.lock(workdir, c)
  rows = [dict(r) for r in pipeline.run(pipeline_config(c), os.path.join(workdir, "pipeline"))]
  first, t = input_rate(c, max(c.repeats, 3))
  adv = [r for r in rows if r["stage"].startswith("train_adversarial")]
  row = {"stage": "input", "seconds": t, "images_per_sec": c.batch_size / t,
         "compile_and_first_s": first, "images": c.batch_size}
  if adv:
    row["input_over_train"] = row["images_per_sec"] / adv[0]["images_per_sec"]
  rows.append(row)
  if "smoke" not in c.skip:
    from experiments import masks_study
    t0 = time.perf_counter()
    out = masks_study.run(smoke_config(c), os.path.join(workdir, "smoke"))
    seconds = time.perf_counter() - t0
    if main:
      rows.append({"stage": "smoke(gtsrb_paper)", "seconds": seconds,
                   "images": c.smoke_num_train, "models": len(out["models"]),
                   "num_classes": out["dataset"]["num_classes"]})
  if not main:
    return rows
  backend = jax.default_backend()
  meta = {"backend": backend, "devices": nd, "processes": jax.process_count(),
          "device_kind": jax.devices()[0].device_kind}
  io.write_json(os.path.join(workdir, "results.json"), {"meta": meta, "rows": rows})
  cols = ["stage", "images_per_sec", "seconds", "compile_and_first_s", "fraction_of_peak",
          "pgd_over_floor", "torch_over_ours", "input_over_train", "models"]
  md = io.write_table(os.path.join(workdir, "benchmark_gpu"), rows, cols, optional=cols[4:])
  print(md)
  if backend == "cpu":
    common.record(c, SECTION, NOT_MEASURED)
  else:
    common.record(c, SECTION, f"Backend {backend} ({meta['device_kind']}), {nd} device(s); "
                  "ours and PyTorch on the same device.\n\n" + md)
  return rows
