r"""Benchmark: PGD against its floor, against Foolbox's LinfPGD and against a PyTorch CPU loop.

    python -m experiments.benchmark --config=experiments/configs/benchmark.py:attacks \
        --workdir=/tmp/bench_attacks
    python -m experiments.benchmark --config=experiments/configs/benchmark.py:attacks \
        --workdir=/tmp/b --config.steps=10 --config.width=0.25 --config.repeats=5

On one batch (``batch_size`` 128 images of ``image_size`` 32 px, random weights of the small
VGG-19 at ``width``; timing does not depend on the weights' values) it times, as medians of
``repeats`` calls after one warm-up call, all in one process:
- ``floor``: ``steps`` x one jitted forward + backward pass w.r.t. the input (CE loss);
- ``ours``: ``percadv_jax.attacks.pgd`` Linf, random start, ``steps`` steps, default
  ``unroll=1`` (a plain ``lax.scan`` loop), a plain Python call (input checks + one jitted
  program);
- ``ours_unroll``: the same with ``unroll=True`` (straight-line code: same speed since the
  models' loop-safe convolutions, several times the compile time);
- ``foolbox``: Foolbox 3.3.4 ``LinfPGD`` (same eps, step, steps, random start) on the same Flax
  model through ``foolbox.JAXModel``;
- ``torch``: an eager PyTorch CPU loop of the same algorithm on the same architecture with the
  same weights (logits checked against Flax's), once with 1 thread and once with one thread per
  CPU (on a busy machine torch's spinning OpenMP threads can lose a lot; the faster counts);
and reports (a) ours / floor (target <= 1.0), (b) foolbox / ours (target >= 1.5), (c) the faster
torch / ours (target >= 1.0). Foolbox and torch are imported only here (benchmark-only
dependencies; ``skip=('foolbox', 'torch')`` leaves them out).

An ``XLA_FLAGS`` set before the run applies to every JAX program and is recorded in
results.json as ``xla_flags`` (``benchmark_conv`` compares XLA's flags for its convolutions).

Writes into the workdir: ``config.json``, ``benchmark_attacks.md`` / ``.csv`` and
``results.json``; with ``record`` also the ``benchmark_attacks`` section of the results file.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from experiments.benchmarks import common
from percadv_jax import checks

SKIPPABLE = ("foolbox", "torch")
TARGETS = {"a": "<= 1.0", "b": ">= 1.5", "c": ">= 1.0"}


def validate(config: Any) -> None:
  """Checks the configuration before any work; raises ValueError naming the field."""
  common.check_output(config)
  common.positive_ints(config, ("batch_size", "image_size", "num_classes", "steps", "repeats"))
  common.positive_ints(config, ("seed",), allow_zero=True)
  checks.check_float(config.width, "width", minimum=0, min_inclusive=False)
  checks.check_float(config.eps, "eps", minimum=0, min_inclusive=False)
  checks.check_float(config.rel_step, "rel_step", minimum=0, min_inclusive=False)
  common.names(config, "skip", SKIPPABLE, allow_empty=True)


def run(config: Any, workdir: str) -> list[dict]:
  """Runs the benchmark.

  Returns:
    The table rows (``method``, ``median_s``, ``first_call_s``, ``vs_floor``, ``vs_ours``), also
    written to ``workdir``.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  from percadv_jax import attacks, io
  from percadv_jax.attacks import losses
  from percadv_jax.models import get_model, random_variables

  validate(config)
  common.lock(workdir, config)
  c = config
  module = get_model("vgg19", num_classes=c.num_classes, variant="small", width=c.width)
  rng = np.random.default_rng(c.seed)
  x = jnp.asarray(rng.uniform(0, 1, (c.batch_size, c.image_size, c.image_size, 3)), jnp.float32)
  variables = random_variables(module, x, seed=c.seed)
  logits_fn = jax.jit(lambda v: module.apply(variables, v))
  y = jnp.asarray(np.asarray(jnp.argmax(logits_fn(x), 1)), jnp.int32)
  step = c.rel_step * c.eps
  key = jax.random.key(c.seed)

  grad_fn = jax.jit(jax.grad(lambda v: jnp.sum(losses.cross_entropy(logits_fn(v), y))))
  timings = {}
  _, t_grad = common.median_time(lambda: grad_fn(x), c.repeats)
  timings["floor"] = (None, c.steps * t_grad)
  print(f"floor: {c.steps} x fwd+bwd {t_grad:.4f} s = {c.steps * t_grad:.3f} s", flush=True)

  for name, unroll in (("ours", 1), ("ours_unroll", True)):
    def ours(unroll=unroll):
      return attacks.pgd(logits_fn, x, y, key=key, eps=c.eps, step_size=step, steps=c.steps,
                         unroll=unroll)
    timings[name] = common.median_time(ours, c.repeats)
    print(f"{name}: first call {timings[name][0]:.2f} s, median {timings[name][1]:.3f} s",
          flush=True)

  if "foolbox" not in c.skip:
    import foolbox
    fmodel = foolbox.JAXModel(logits_fn, bounds=(0, 1))
    fb = foolbox.attacks.LinfPGD(abs_stepsize=step, steps=c.steps, random_start=True)
    timings["foolbox"] = common.median_time(lambda: fb(fmodel, x, y, epsilons=c.eps)[1],
                                            c.repeats)
    print(f"foolbox: median {timings['foolbox'][1]:.3f} s", flush=True)

  torch_check = None
  if "torch" not in c.skip:
    import torch

    from experiments.benchmarks.torch_ports import torch_pgd, torch_vgg
    tmodel = torch_vgg(variables["params"], width=c.width, num_classes=c.num_classes)
    xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
    yt = torch.from_numpy(np.asarray(y).astype(np.int64))
    with torch.no_grad():
      torch_check = float(np.abs(tmodel(xt).numpy() - np.asarray(logits_fn(x))).max())
    gen = torch.Generator().manual_seed(c.seed)
    for threads in sorted({1, os.cpu_count() or 1}):
      torch.set_num_threads(threads)
      name = f"torch_{threads}thread"
      timings[name] = common.median_time(
          lambda: torch_pgd(tmodel, xt, yt, eps=c.eps, step=step, steps=c.steps, generator=gen),
          c.repeats)
      print(f"{name}: median {timings[name][1]:.3f} s (max |logits diff| {torch_check:.2e})",
            flush=True)

  ours = timings["ours"][1]
  rows = []
  for name, (first, med) in timings.items():
    rows.append({"method": name, "median_s": med,
                 "first_call_s": first if first is not None else "",
                 "vs_floor": med / timings["floor"][1], "vs_ours": med / ours})
  ratios = {"a_ours_over_floor": ours / timings["floor"][1],
            "a_unroll_over_floor": timings["ours_unroll"][1] / timings["floor"][1]}
  if "foolbox" in timings:
    ratios["b_foolbox_over_ours"] = timings["foolbox"][1] / ours
  torch_best = min((t[1] for k, t in timings.items() if k.startswith("torch")), default=None)
  if torch_best is not None:
    ratios["c_torch_best_over_ours"] = torch_best / ours
  md = io.write_table(os.path.join(workdir, "benchmark_attacks"), rows,
                      ["method", "median_s", "first_call_s", "vs_floor", "vs_ours"])
  io.write_json(os.path.join(workdir, "results.json"), {
      "rows": rows, "ratios": ratios, "targets": TARGETS,
      "torch_max_logit_diff": torch_check, "jax": jax.__version__, "device": str(jax.devices()[0]),
      "cpu_count": os.cpu_count(), "platform": platform.platform(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "date": time.strftime("%Y-%m-%d")})
  print(md)
  for k, v in ratios.items():
    print(f"{k}: {v:.2f}")
  common.record(c, "benchmark_attacks", "\n".join([
      f"Small VGG-19 width {c.width}, batch {c.batch_size}, {c.image_size} px, Linf "
      f"PGD-{c.steps}, medians of {c.repeats} calls in one process (not interleaved: see "
      "benchmark_conv for the interleaved comparison).", "", md.strip(), "",
      "| ratio | value | target |", "|---|---|---|",
      *[f"| {k} | {v:.2f} | {TARGETS.get(k[0], '')} |" for k, v in ratios.items()]]))
  return rows
