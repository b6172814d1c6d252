r"""Benchmark: one CAM call on a batch vs one jitted forward + backward pass of the model.

    python -m experiments.benchmark --config=experiments/configs/benchmark.py:cam \
        --workdir=/tmp/bench_cam
    python -m experiments.benchmark --config=experiments/configs/benchmark.py:cam \
        --workdir=/tmp/bench_cam --config.models=mobilenet_v2 --config.image_size=224 \
        --config.methods=grad_cam,score_cam

For each model and CAM method it times (median of ``repeats`` calls after one warm-up call):
- ``cam_s``: one public call ``percadv_jax.cam.compute_cam(method, module, variables, x)`` on a
  batch of ``batch_size`` images (input checks, forward, backward to the layer, maps), and
- ``fwd_bwd_s``: one jitted forward + backward pass of the same model on the same batch (the
  gradient of the summed predicted-class logits w.r.t. the input: an attack step's floor),
- ``fwd_s``: one jitted forward pass,
and reports ``ratio = cam_s / fwd_bwd_s`` (target <= 1.5 for the gradient methods). Weights are
random (timing does not depend on their values): shapes from ``jax.eval_shape(module.init)``,
values from NumPy, so no time goes into compiling initialisers.

Writes into the workdir: ``config.json``, ``metrics.jsonl``, ``benchmark_cam.md`` / ``.csv``
and ``results.json``; with ``record`` also the ``benchmark_cam`` section of the results file.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from experiments.benchmarks import common
from percadv_jax import checks

MODEL_SPECS = {
    "vgg19_small": ("vgg19", {"variant": "small", "batch_norm": True}),
    "vgg19": ("vgg19", {"variant": "imagenet"}),
    "mobilenet_v2": ("mobilenet_v2", {}),
}


def validate(config: Any) -> None:
  """Checks the configuration before any work; raises ValueError naming the field."""
  from percadv_jax.cam import core
  common.check_output(config)
  common.names(config, "models", MODEL_SPECS)
  common.names(config, "methods", core.METHODS)
  common.positive_ints(config, ("batch_size", "image_size", "num_classes", "repeats"))
  common.positive_ints(config, ("seed",), allow_zero=True)
  checks.check_float(config.width, "width", minimum=0, min_inclusive=False)
  if not isinstance(config.layer, str):
    raise ValueError(f"layer must be a tap name (\"\" = each model's cam_layer), got "
                     f"{config.layer!r}")
  if config.layer:  # checked on shapes only: no weights, no compilation
    import jax
    import numpy as np
    from percadv_jax import cam
    from percadv_jax.models import get_model
    x = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), np.float32)
    for name in config.models:
      arch, kw = MODEL_SPECS[name]
      module = get_model(arch, num_classes=config.num_classes, width=config.width, **kw)
      variables = jax.eval_shape(lambda k, z: module.init(k, z, train=False),
                                 jax.random.key(0), x)
      try:
        cam.resolve_layer(list(cam.model_info(module, variables, x)[0]), config.layer)
      except ValueError as e:
        raise ValueError(f"layer of model {name}: {e}") from None


def run(config: Any, workdir: str) -> list[dict]:
  """Runs the benchmark.

  Returns:
    The table rows (one per model and method: ``cam_s``, ``fwd_bwd_s``, ``fwd_s``, ``ratio``, the
    layer and its ``HxWxC`` shape), also written to ``workdir``.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  from percadv_jax import cam, io
  from percadv_jax.models import get_model, random_variables

  validate(config)
  common.lock(workdir, config)
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

    fwd_s = common.median_time(lambda: forward(variables, x), config.repeats)[1]
    fb_s = common.median_time(lambda: forward_backward(variables, x), config.repeats)[1]
    taps = cam.model_info(module, variables, x)[0]
    layer = cam.resolve_layer(list(taps), config.layer or module.cam_layer)
    layer_shape = taps[layer].shape
    for method in config.methods:
      cam_s = common.median_time(
          lambda: cam.compute_cam(method, module, variables, x, layer=layer), config.repeats)[1]
      row = {"model": name, "method": method, "layer": layer,
             "layer_shape": "x".join(map(str, layer_shape[1:])),
             "batch": config.batch_size, "image_size": config.image_size,
             "width": config.width, "cam_s": cam_s, "fwd_bwd_s": fb_s, "fwd_s": fwd_s,
             "ratio": cam_s / fb_s}
      rows.append(row)
      io.log_event(workdir, "timing", **row)
  columns = ["model", "method", "layer", "layer_shape", "batch", "image_size", "width", "cam_s",
             "fwd_bwd_s", "fwd_s", "ratio"]
  md = io.write_table(os.path.join(workdir, "benchmark_cam"), rows, columns, digits=4)
  io.write_json(os.path.join(workdir, "results.json"), {
      "rows": rows, "machine": f"{os.cpu_count()} CPU cores, jax {jax.__version__}",
      "device": str(jax.devices()[0]), "platform": platform.platform()})
  print(md)
  common.record(config, "benchmark_cam", f"One CAM call / one jitted forward + backward pass "
                f"(ratio), medians of {config.repeats} calls.\n\n{md}")
  return rows
