r"""Benchmark: one CAM call on a batch vs one jitted forward + backward pass of the model.

    python -m experiments.benchmark_cam --workdir=/tmp/bench_cam
    python -m experiments.benchmark_cam --workdir=/tmp/bench_cam --models=mobilenet_v2 \
        --image_size=224 --methods=grad_cam,score_cam

For each model and CAM method it times (median of ``--repeats`` calls after one warm-up call):
- ``cam_s``: one public call ``percadv_jax.cam.compute_cam(method, module, variables, x)`` on a
  batch of ``--batch_size`` images (input checks, forward, backward to the layer, maps), and
- ``fwd_bwd_s``: one jitted forward + backward pass of the same model on the same batch (the
  gradient of the summed predicted-class logits w.r.t. the input: an attack step's floor),
- ``fwd_s``: one jitted forward pass,
and reports ``ratio = cam_s / fwd_bwd_s`` (target <= 1.5 for the gradient methods). Weights are
random (timing does not depend on their values): shapes from ``jax.eval_shape(module.init)``,
values from NumPy, so no time goes into compiling initialisers.

Writes into ``--workdir``: ``config.json``, ``metrics.jsonl``, ``benchmark_cam.md`` / ``.csv``
and ``results.json``; the binary also writes the ``benchmark_cam`` section of
docs/benchmarks.md (``run(..., record=True)``).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from typing import Sequence

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import workdir as wd
from percadv_jax import cam, io
from percadv_jax.cam import core
from percadv_jax.models import get_model
from percadv_jax.models import random_variables

MODEL_SPECS = {
    "vgg19_small": ("vgg19", {"variant": "small", "batch_norm": True}),
    "vgg19": ("vgg19", {"variant": "imagenet"}),
    "mobilenet_v2": ("mobilenet_v2", {}),
}


@dataclasses.dataclass(frozen=True)
class Config:
  models: tuple[str, ...] = ("vgg19_small", "mobilenet_v2")
  methods: tuple[str, ...] = ("grad_cam", "grad_cam_pp", "layer_cam")
  batch_size: int = 32
  image_size: int = 64
  width: float = 0.5
  num_classes: int = 10
  repeats: int = 5
  seed: int = 0
  layer: str | None = None  # None: each model's cam_layer



def _median_time(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # warm-up (compiles)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def run(config: Config, workdir: str, *, record: bool = False) -> list[dict]:
  """Runs the benchmark; returns the table rows (also written to ``workdir``)."""
  for name in config.models:
    if name not in MODEL_SPECS:
      raise ValueError(f"unknown model {name!r}; choose from {sorted(MODEL_SPECS)}")
  for method in config.methods:
    if method not in core.METHODS:
      raise ValueError(f"unknown method {method!r}; choose from {list(core.METHODS)}")
  for field in ("batch_size", "image_size", "num_classes", "repeats"):
    if getattr(config, field) < 1:
      raise ValueError(f"{field} must be >= 1, got {getattr(config, field)}")
  wd.prepare(workdir, config)
  rng = np.random.default_rng(config.seed)
  x = jnp.asarray(rng.random((config.batch_size, config.image_size, config.image_size, 3)),
                  jnp.float32)
  rows = []
  for name in config.models:
    arch, kw = MODEL_SPECS[name]
    module = get_model(arch, num_classes=config.num_classes, width=config.width, **kw)
    variables = random_variables(module, x, seed=config.seed)

    @jax.jit
    def forward(variables, x):
      return module.apply(variables, x, train=False)

    @jax.jit
    def forward_backward(variables, x):
      def score(x):
        logits = module.apply(variables, x, train=False)
        return jnp.sum(jnp.max(logits, axis=-1))  # the predicted classes' logits
      return jax.grad(score)(x)

    fwd_s = _median_time(lambda: forward(variables, x), config.repeats)
    fb_s = _median_time(lambda: forward_backward(variables, x), config.repeats)
    taps = cam.model_info(module, variables, x)[0]
    layer = cam.resolve_layer(list(taps), config.layer or module.cam_layer)
    layer_shape = taps[layer].shape
    for method in config.methods:
      cam_s = _median_time(lambda: cam.compute_cam(method, module, variables, x, layer=layer),
                           config.repeats)
      row = {"model": name, "method": method, "layer": layer,
             "layer_shape": "x".join(map(str, layer_shape[1:])),
             "batch": config.batch_size, "image_size": config.image_size,
             "width": config.width, "cam_s": cam_s, "fwd_bwd_s": fb_s, "fwd_s": fwd_s,
             "ratio": cam_s / fb_s}
      rows.append(row)
      wd.log(workdir, "timing", **row)
  columns = ["model", "method", "layer", "layer_shape", "batch", "image_size", "width", "cam_s",
             "fwd_bwd_s", "fwd_s", "ratio"]
  md = io.write_table(os.path.join(workdir, "benchmark_cam"), rows, columns, digits=4)
  io.write_json(os.path.join(workdir, "results.json"), {
      "rows": rows, "machine": f"{os.cpu_count()} CPU cores, jax {jax.__version__}",
      "device": str(jax.devices()[0]), "platform": platform.platform()})
  print(md)
  if record:  # the binary (not tests) writes the results file
    from experiments import benchmark_results
    benchmark_results.update("benchmark_cam", f"One CAM call / one jitted forward + backward "
                             f"pass (ratio), medians of {config.repeats} calls.\n\n{md}")
  return rows


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the flags (only when run as a binary: importing the module defines none, so
  tests can import several binaries without duplicate-flag errors)."""
  flags.DEFINE_string("workdir", None, "Output directory (config.json, tables, results.json).")
  flags.DEFINE_list("models", list(Config.models), f"Models: {sorted(MODEL_SPECS)}.")
  flags.DEFINE_list("methods", list(Config.methods), f"CAM methods: {list(core.METHODS)}.")
  flags.DEFINE_integer("batch_size", Config.batch_size, "Images per call.")
  flags.DEFINE_integer("image_size", Config.image_size, "Square input side in pixels.")
  flags.DEFINE_float("width", Config.width, "Channel multiplier of the models.")
  flags.DEFINE_integer("num_classes", Config.num_classes, "Number of logits.")
  flags.DEFINE_integer("repeats", Config.repeats, "Timed calls per measurement (median).")
  flags.DEFINE_integer("seed", Config.seed, "Seed of the random images and weights.")
  flags.DEFINE_string("layer", None, "CAM layer (tap name); default: each model's cam_layer.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  config = Config(models=tuple(FLAGS.models), methods=tuple(FLAGS.methods),
                  batch_size=FLAGS.batch_size, image_size=FLAGS.image_size, width=FLAGS.width,
                  num_classes=FLAGS.num_classes, repeats=FLAGS.repeats, seed=FLAGS.seed,
                  layer=FLAGS.layer)
  run(config, FLAGS.workdir, record=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
