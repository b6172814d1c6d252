r"""Benchmark: PGD against its floor, against Foolbox's LinfPGD and against a PyTorch CPU loop.

    python -m experiments.benchmark_attacks --workdir=/tmp/bench_attacks
    python -m experiments.benchmark_attacks --workdir=/tmp/b --steps=10 --width=0.25 --repeats=5

On one batch (``--batch_size`` 128 images of ``--image_size`` 32 px, random weights of the small
VGG-19 at ``--width``; timing does not depend on the weights' values) it times, as medians of
``--repeats`` calls after one warm-up call, all in one process:
- ``floor``: ``--steps`` x one jitted forward + backward pass w.r.t. the input (CE loss);
- ``ours_unroll``: ``percadv_jax.attacks.pgd`` Linf, random start, ``--steps`` steps, default
  ``unroll`` (fully unrolled on CPU), a plain Python call (input checks + one jitted program);
- ``ours_scan``: the same with ``unroll=1`` (a plain ``lax.scan`` while loop);
- ``foolbox``: Foolbox 3.3.4 ``LinfPGD`` (same eps, step, steps, random start) on the same Flax
  model through ``foolbox.JAXModel``;
- ``torch``: an eager PyTorch CPU loop of the same algorithm on the same architecture with the
  same weights (logits checked against Flax's), once with 1 thread and once with one thread per
  CPU (on a busy machine torch's spinning OpenMP threads can lose a lot; the faster counts);
and reports (a) ours / floor (target <= 1.0), (b) foolbox / ours (target >= 1.5), (c) the faster
torch / ours (target >= 1.0). Foolbox and torch are imported only here (benchmark-only dependencies;
``--skip`` leaves them out).

XLA:CPU's experimental YNNPACK convolutions make JAX's convolutions (and their input gradients)
faster on CPU, with the same values to 1e-6; set them before the run:
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION``
(recorded in results.json as ``xla_flags``).

Writes into ``--workdir``: ``config.json``, ``benchmark_attacks.md`` / ``.csv`` and
``results.json``; the binary also writes the ``benchmark_attacks`` section of
docs/benchmarks.md (``run(..., record=True)``).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from typing import Callable, Sequence

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import attacks, io
from percadv_jax.attacks import losses
from percadv_jax.models import get_model
from percadv_jax.models import random_variables


@dataclasses.dataclass(frozen=True)
class Config:
  batch_size: int = 128
  image_size: int = 32
  width: float = 0.25
  num_classes: int = 10
  steps: int = 10
  eps: float = 8 / 255
  rel_step: float = 0.25
  repeats: int = 3
  seed: int = 0
  skip: tuple[str, ...] = ()


def _median_time(fn: Callable[[], object], repeats: int) -> tuple[float, float, list[float]]:
  """(first call s, median of ``repeats`` further calls s, all timings)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times), times



def torch_vgg(params, *, width: float, num_classes: int):
  """The small VGG-19 in PyTorch (NCHW) with the Flax weights; returns a callable nn.Module."""
  import torch
  from torch import nn
  from percadv_jax.models import vgg

  class TorchVGG(nn.Module):
    def __init__(self):
      super().__init__()
      self.convs = nn.ModuleList()
      self.pool_after = []
      cin = 3
      for b, (ch, n) in enumerate(vgg.BLOCKS, start=1):
        for k in range(1, n + 1):
          cout = vgg.scaled(ch, width)
          conv = nn.Conv2d(cin, cout, 3, padding=1)
          name = f"block{b}_conv{k}"
          p = params[name] if name in params else params[name + "_conv"]
          conv.weight.data = torch.from_numpy(np.asarray(p["kernel"]).transpose(3, 2, 0, 1).copy())
          conv.bias.data = torch.from_numpy(np.asarray(p["bias"]).copy())
          self.convs.append(conv)
          self.pool_after.append(k == n)
          cin = cout
      self.fc = nn.Linear(cin, num_classes)
      self.fc.weight.data = torch.from_numpy(np.asarray(params["predictions"]["kernel"]).T.copy())
      self.fc.bias.data = torch.from_numpy(np.asarray(params["predictions"]["bias"]).copy())
      self.register_buffer("mean", torch.tensor(vgg.SMALL_MEAN_RGB).view(1, 3, 1, 1))
      self.register_buffer("std", torch.tensor(vgg.SMALL_STD_RGB).view(1, 3, 1, 1))

    def forward(self, x):
      x = (x - self.mean) / self.std
      for conv, pool in zip(self.convs, self.pool_after):
        x = torch.relu(conv(x))
        if pool:
          x = torch.nn.functional.max_pool2d(x, 2)
      return self.fc(x.mean(dim=(2, 3)))

  return TorchVGG().eval()


def torch_pgd(model, x, y, *, eps, step, steps, generator):
  """Eager PyTorch Linf PGD with random start (the same algorithm as ours / Foolbox's)."""
  import torch
  x_adv = (x + torch.empty_like(x).uniform_(-eps, eps, generator=generator)).clamp(0, 1)
  for _ in range(steps):
    x_adv.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(x_adv), y, reduction="sum")
    g, = torch.autograd.grad(loss, x_adv)
    with torch.no_grad():
      x_adv = x_adv + step * g.sign()
      x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
  return x_adv.detach()


def run(config: Config, workdir: str, *, record: bool = False) -> list[dict]:
  os.makedirs(workdir, exist_ok=True)
  io.write_json(os.path.join(workdir, "config.json"), dataclasses.asdict(config))
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
  _, t_grad, _ = _median_time(lambda: grad_fn(x), c.repeats)
  timings["floor"] = (None, c.steps * t_grad)
  print(f"floor: {c.steps} x fwd+bwd {t_grad:.4f} s = {c.steps * t_grad:.3f} s", flush=True)

  for name, unroll in (("ours_unroll", None), ("ours_scan", 1)):
    def ours(unroll=unroll):
      return attacks.pgd(logits_fn, x, y, key=key, eps=c.eps, step_size=step, steps=c.steps,
                         unroll=unroll)
    timings[name] = _median_time(ours, c.repeats)[:2]
    print(f"{name}: first call {timings[name][0]:.2f} s, median {timings[name][1]:.3f} s",
          flush=True)

  if "foolbox" not in c.skip:
    import foolbox
    fmodel = foolbox.JAXModel(logits_fn, bounds=(0, 1))
    fb = foolbox.attacks.LinfPGD(abs_stepsize=step, steps=c.steps, random_start=True)
    timings["foolbox"] = _median_time(lambda: fb(fmodel, x, y, epsilons=c.eps)[1], c.repeats)[:2]
    print(f"foolbox: median {timings['foolbox'][1]:.3f} s", flush=True)

  torch_check = None
  if "torch" not in c.skip:
    import torch
    tmodel = torch_vgg(variables["params"], width=c.width, num_classes=c.num_classes)
    xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
    yt = torch.from_numpy(np.asarray(y).astype(np.int64))
    with torch.no_grad():
      torch_check = float(np.abs(tmodel(xt).numpy() - np.asarray(logits_fn(x))).max())
    gen = torch.Generator().manual_seed(c.seed)
    for threads in sorted({1, os.cpu_count() or 1}):
      torch.set_num_threads(threads)
      name = f"torch_{threads}thread"
      timings[name] = _median_time(
          lambda: torch_pgd(tmodel, xt, yt, eps=c.eps, step=step, steps=c.steps, generator=gen),
          c.repeats)[:2]
      print(f"{name}: median {timings[name][1]:.3f} s (max |logits diff| {torch_check:.2e})",
            flush=True)

  ours = timings["ours_unroll"][1]
  rows = []
  for name, (first, med) in timings.items():
    row = {"method": name, "median_s": med, "first_call_s": first if first is not None else "",
           "vs_floor": med / timings["floor"][1], "vs_ours": med / ours}
    rows.append(row)
  ratios = {"a_ours_over_floor": ours / timings["floor"][1],
            "a_scan_over_floor": timings["ours_scan"][1] / timings["floor"][1]}
  if "foolbox" in timings:
    ratios["b_foolbox_over_ours"] = timings["foolbox"][1] / ours
  torch_best = min((t[1] for k, t in timings.items() if k.startswith("torch")), default=None)
  if torch_best is not None:
    ratios["c_torch_best_over_ours"] = torch_best / ours
  md = io.write_table(os.path.join(workdir, "benchmark_attacks"), rows,
                      ["method", "median_s", "first_call_s", "vs_floor", "vs_ours"])
  io.write_json(os.path.join(workdir, "results.json"), {
      "rows": rows, "ratios": ratios, "targets": {"a": "<= 1.0", "b": ">= 1.5", "c": ">= 1.0"},
      "torch_max_logit_diff": torch_check, "jax": jax.__version__, "device": str(jax.devices()[0]),
      "cpu_count": os.cpu_count(), "platform": platform.platform(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "date": time.strftime("%Y-%m-%d")})
  print(md)
  for k, v in ratios.items():
    print(f"{k}: {v:.2f}")
  if record:  # the binary (not tests) writes the results file
    from experiments import benchmark_results
    benchmark_results.update("benchmark_attacks", "\n".join([
        f"Small VGG-19 width {c.width}, batch {c.batch_size}, {c.image_size} px, Linf "
        f"PGD-{c.steps}, medians of {c.repeats} calls in one process (not interleaved: see "
        "benchmark_conv for the interleaved comparison).", "", md.strip(), "",
        "| ratio | value | target |", "|---|---|---|",
        *[f"| {k} | {v:.2f} | {dict(a='<= 1.0', b='>= 1.5', c='>= 1.0').get(k[0], '')} |"
          for k, v in ratios.items()]]))
  return rows


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the flags (only when run as a binary, so tests may import the module)."""
  flags.DEFINE_string("workdir", None, "Output directory (config.json, tables, results.json).")
  flags.DEFINE_integer("batch_size", Config.batch_size, "Images per batch.")
  flags.DEFINE_integer("image_size", Config.image_size, "Square input side in pixels.")
  flags.DEFINE_float("width", Config.width, "Channel multiplier of the small VGG-19.")
  flags.DEFINE_integer("num_classes", Config.num_classes, "Number of logits.")
  flags.DEFINE_integer("steps", Config.steps, "PGD steps.")
  flags.DEFINE_float("eps", Config.eps, "Linf radius.")
  flags.DEFINE_float("rel_step", Config.rel_step, "Step size as a fraction of eps.")
  flags.DEFINE_integer("repeats", Config.repeats, "Timed calls after the warm-up (median).")
  flags.DEFINE_integer("seed", Config.seed, "Seed of the images, weights and random starts.")
  flags.DEFINE_list("skip", [], "Comparisons to leave out: foolbox, torch.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  for s in FLAGS.skip:
    if s not in ("foolbox", "torch"):
      raise app.UsageError(f"--skip takes foolbox and/or torch, got {s!r}")
  run(Config(batch_size=FLAGS.batch_size, image_size=FLAGS.image_size, width=FLAGS.width,
             num_classes=FLAGS.num_classes, steps=FLAGS.steps, eps=FLAGS.eps,
             rel_step=FLAGS.rel_step, repeats=FLAGS.repeats, seed=FLAGS.seed,
             skip=tuple(FLAGS.skip)), FLAGS.workdir, record=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
