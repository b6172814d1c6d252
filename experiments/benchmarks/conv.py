r"""Benchmark: JAX convolution variants against PyTorch (oneDNN) and Foolbox on CPU, interleaved.

    python -m experiments.benchmark --config=experiments/configs/benchmark.py:conv \
        --workdir=/tmp/b
    python -m experiments.benchmark --config=experiments/configs/benchmark.py:conv --workdir=/tmp/b \
        --config.models="('vgg32',)" --config.rounds=7 --config.cpus=0,1 --config.tag=_2cpu
    python -m experiments.benchmark --config=experiments/configs/benchmark.py:conv_variants \
        --workdir=/tmp/v

Every contender runs in its own long-lived worker process started with ``taskset -c CPUS`` (all
pinned the same way), with its own ``XLA_FLAGS``; each compiles once, then the parent asks the
workers in turn for one measurement each, in ``rounds`` alternating rounds (the order rotates
by one contender each round), so a burst of load from other jobs hits every contender alike.
A measurement is ``fwdbwd``: the fastest of ``reps`` calls of one forward + backward pass w.r.t.
the input (mean cross-entropy, eval mode), and ``pgd``: one Linf PGD-``steps`` call (eps
8/255, step eps/4, random start). Reported: min and median over rounds per contender, and the
per-round ratios (same round) of the best PyTorch and of Foolbox to each JAX variant.

Contenders (``contenders``):
- ``jax_xla``: ``conv_impl="xla"`` (XLA's convolutions everywhere) with XLA's default fusion
  emitters, plain XLA without the library's convolution choices and compiler options; the
  reference the other JAX variants' values are checked against;
- ``jax_auto``: the library's default: ``conv_impl="auto"``
  (``percadv_jax.models.layers.conv_auto``: XLA's convolution for dense 3x3 convolutions on maps
  of >= 5 output pixels, those with 5-16 channels on column groups, ``conv_patches`` for the
  rest), programs compiled with
  ``percadv_jax.compiler.OPTIONS``;
- ``jax_auto_1dev``: ``jax_auto`` on one JAX CPU device (``jax_auto`` has one per pinned core,
  ``percadv_jax.compiler.use_cpu_cores`` as in the binaries, and splits the batch over them);
- ``jax_auto_emitters``: ``conv_impl="auto"`` with XLA's default fusion emitters
  (``compiler.OPTIONS`` overridden through ``XLA_FLAGS``), which isolates that option's effect;
- ``jax_patches``: ``conv_impl="patches"`` everywhere (im2col + matmul with a custom VJP;
  depthwise as shifted multiply-adds);
- ``jax_ynn`` / ``jax_onednn`` / ``jax_xnn``: XLA's convolutions with
  ``--xla_cpu_experimental_{ynn,onednn,xnn}_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION``;
- ``jax_patches_ynn``: patches with YNNPACK dots (``..._ynn_fusion_type=..._INDIVIDUAL_DOT``);
- ``jax_st``: XLA's convolutions with ``--xla_cpu_multi_thread_eigen=false``;
- ``torch_1`` / ``torch_all``: eager PyTorch CPU with 1 thread / one thread per pinned CPU;
- ``foolbox``: Foolbox 3.3.4 ``LinfPGD`` on the ``jax_auto`` model and inputs through
  ``foolbox.JAXModel`` (the library's jitted forward, so only the attack loops differ).

Models (``models``; ``vgg_tiny`` is a test size): ``vgg32`` (small VGG-19, width 0.25, 32 px,
batch 128), ``mnv2_64`` (MobileNetV2 alpha 0.5, 64 px, batch 64), ``mnv2_224`` (MobileNetV2
alpha 1.0, 224 px, batch 16: the perceptual paper's size; a smaller batch keeps one PGD call
under a minute on one core).
The JAX variants' logits and input gradients are checked against ``jax_xla`` (max abs
difference, reported), PyTorch's VGG logits against Flax's (same weights).

GPU (under 5 minutes on one accelerator): the preset ``conv_gpu`` (``device="gpu"``, no CPU
pinning, PyTorch on CUDA; sections ``benchmark_conv_<model>_gpu``):

    python -m experiments.benchmark --config=experiments/configs/benchmark.py:conv_gpu \
        --workdir=/tmp/bench_gpu

It reports PGD-10 images/s, the ratio to PyTorch on the same card and the fraction of the card's
forward + backward rate (``pgd`` time / (``steps`` x ``fwdbwd`` time)).

Writes ``--workdir``/``results.json`` and ``benchmark_conv.md``, and in docs/benchmarks.md
(``experiments.benchmarks.results``) one section ``benchmark_conv_<model><tag>`` per model and the
section ``benchmark_conv`` (``NOTES``: where the time goes, why the defaults are what they are,
and what limits them). ``summarise_only=True`` re-reports a workdir's figures without measuring.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

from experiments.benchmarks import common
from percadv_jax import checks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUSION = "--xla_cpu_experimental_{}_fusion_type=LIBRARY_FUSION_TYPE_{}"
# XLA:CPU's own default, which ``percadv_jax.compiler.OPTIONS`` turns off (see its docstring).
EMITTERS = "--xla_cpu_use_fusion_emitters=true"
CONTENDERS: dict[str, dict[str, Any]] = {
    "jax_xla": {"kind": "jax", "conv_impl": "xla", "xla_flags": EMITTERS},
    "jax_auto": {"kind": "jax", "conv_impl": "auto", "xla_flags": "", "cpu_devices": "cores"},
    "jax_auto_1dev": {"kind": "jax", "conv_impl": "auto", "xla_flags": ""},
    "jax_auto_emitters": {"kind": "jax", "conv_impl": "auto", "xla_flags": EMITTERS},
    "jax_patches": {"kind": "jax", "conv_impl": "patches", "xla_flags": ""},
    "jax_ynn": {"kind": "jax", "conv_impl": "xla",
                "xla_flags": FUSION.format("ynn", "INDIVIDUAL_CONVOLUTION")},
    "jax_onednn": {"kind": "jax", "conv_impl": "xla",
                   "xla_flags": FUSION.format("onednn", "INDIVIDUAL_CONVOLUTION")},
    "jax_xnn": {"kind": "jax", "conv_impl": "xla",
                "xla_flags": FUSION.format("xnn", "INDIVIDUAL_CONVOLUTION")},
    "jax_patches_ynn": {"kind": "jax", "conv_impl": "patches",
                        "xla_flags": FUSION.format("ynn", "INDIVIDUAL_DOT")},
    "jax_st": {"kind": "jax", "conv_impl": "xla",
               "xla_flags": "--xla_cpu_multi_thread_eigen=false"},
    "torch_1": {"kind": "torch", "threads": 1},
    "torch_all": {"kind": "torch", "threads": 0},
    "foolbox": {"kind": "foolbox", "conv_impl": "auto", "xla_flags": "", "cpu_devices": "cores"},
}
MODELS: dict[str, dict[str, Any]] = {
    "vgg32": {"name": "vgg19", "kwargs": {"variant": "small", "width": 0.25}, "size": 32,
              "batch": 128},
    "mnv2_64": {"name": "mobilenet_v2", "kwargs": {"width": 0.5}, "size": 64, "batch": 64},
    "mnv2_224": {"name": "mobilenet_v2", "kwargs": {"width": 1.0}, "size": 224, "batch": 16},
    # Test size (preset conv_quick): seconds per contender; the figures mean nothing.
    "vgg_tiny": {"name": "vgg19", "kwargs": {"variant": "small", "width": 0.0625}, "size": 32,
                 "batch": 2},
}
EPS = 8 / 255
NOTES = """\
Where the time of a convolution goes on XLA:CPU, why the defaults are what they are, and what
limits them (the sections `benchmark_conv_<model>` hold every contender's figures; `_variants`
those of the XLA-flag and patches variants):

- Where the time goes (one convolution, forward + input gradient, batch 128 / 64, one core,
  minima of 8-10 calls, load average ~11): XLA's depthwise 3x3 convolutions take
  0.85 s (32x32x48), 0.19 s (8x8x192), 0.09 s (4x4x384), 0.18 s (2x2x960) against 0.048, 0.0026,
  0.0011, 0.0009 s as shifted multiply-adds (17-200x); XLA's 1x1 convolutions up to 10x a
  matmul (0.056 vs 0.005 s at 16x16x32->96); XLA's dense 3x3 convolutions on 2x2 maps 0.14-0.17 s
  (128 channels) against 0.003-0.012 s as patches + matmul and 0.003 s in PyTorch; on 32x32,
  16x16 and 8x8 maps XLA's dense 3x3 is 1.5-5x *faster* than patches + matmul (0.15-0.18 vs
  0.61-0.96 s at 32x32x16) but still 1.2-2.3x slower than PyTorch (0.066-0.09 s).
- Hence the default `conv_impl="auto"` (`percadv_jax.models.layers.conv_auto`, CPU
  backend only): depthwise convolutions as shifted multiply-adds, 1x1 convolutions and dense
  convolutions with < 5 output pixels as patches + matmul (custom VJP), the other dense
  convolutions XLA's. Same values as XLA's convolutions (logits and gradients within 1e-5
  relative; tested). Whole model, forward + input gradient, one core, single process: small
  VGG-19 (32 px, batch 128) 1.10-1.16 s vs 1.73-2.23 s with `conv_impl="xla"`; MobileNetV2
  alpha 0.5 (64 px, batch 64) 2.06 s vs 4.72 s.
- `conv_impl="patches"` everywhere (`jax_patches`): loses on VGG-19 (its large-map layers).
- XLA flags `--xla_cpu_experimental_{ynn,onednn,xnn}_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION`,
  `--xla_cpu_use_onednn=true`, `--xla_cpu_use_xnnpack=true`: on a 3x3 convolution
  (128x16x16x32) every one of them gives bit-identical values and gradients to the default,
  i.e. the convolutions stay XLA's own; in the interleaved VGG rounds (`_variants`) no
  consistent same-round gain. No process-wide flag is set; the one XLA option that helps is
  set per compiled program (`percadv_jax.compiler`, below).
- Variants measured outside the contenders (single process), none faster: NCHW layout (0.29 s
  vs 0.265 s), a custom VJP computing the input gradient as a forward convolution of the flipped
  kernel (no gain), bfloat16 convolutions (0.25 s; changes values),
  `--xla_cpu_multi_thread_eigen=false` and core pinning (no gain).
- The fusion emitters: with XLA:CPU's default (newer) fusion emitters, one jitted forward +
  backward program of MobileNetV2 is 3-5x slower than the same model's jitted forward followed
  by its separately compiled transpose (alpha 0.5, 64 px, batch 64, one core: 0.40 s vs
  0.084 s), which is how Foolbox computes gradients. In the optimised HLO these emitters fuse
  the forward shifted multiply-add depthwise convolution (and its ReLU6 mask) into the loop
  fusion of the transposed one, so it is recomputed once per tap (9x); an optimization barrier
  does not help because XLA:CPU removes barriers before fusion. Compiling with
  `xla_cpu_use_fusion_emitters=False` (the older emitters) gives 0.125 s at 64 px and 0.77 s
  instead of 2.45 s at 224 px (alpha 1.0, batch 16), bit for bit the same gradients; VGG-19
  and the training steps are unchanged. JAX accepts it per program (`jax.jit(...,
  compiler_options=...)`), so the library compiles every model program through
  `percadv_jax.compiler.jit` with it (`jax_auto`; `jax_auto_emitters` is the same model with
  XLA's default emitters). The quality-ball ADMM alone is 15% slower with it and keeps plain
  `jax.jit`. Foolbox here runs the same compiled model (its `JAXModel` is given the library's
  jitted forward), so `Foolbox / ours` measures only the attack loops.
- Loops: JAX's transpose of a convolution (the input gradient) is a convolution with the
  kernel's features swapped (`01oi`). XLA:CPU rewrites it into its fast form in straight-line
  code but not inside a while-loop body (`lax.scan`, `fori_loop`), where it stays a naive loop
  nest: PGD-10 on one 32x32x16 3x3 convolution (batch 128) took 1.34-1.43 s in a `fori_loop`
  against 0.17-0.20 s unrolled (8x), the small VGG-19's PGD-10 6.5 s against 2.1 s. The
  models' `conv_impl="auto"` therefore gives XLA's stride-1 convolutions a custom VJP whose input
  gradient is the forward convolution of the flipped kernel in NHWC/HWIO
  (`models.layers._conv_xla_loop_safe`; bit-identical gradients in straight-line code): the
  loop then runs as fast as unrolled code (0.18 s; VGG-19 1.71 s looped vs 1.72 s unrolled,
  MobileNetV2 alpha 0.5 at 64 px 1.03 vs 1.28 s), so the attacks loop by default (`unroll=1`)
  and compile 3.6x (VGG-19: 3.7 vs 13.4 s) to 5x (MobileNetV2: 7.5 vs 36 s) faster than
  unrolled. `jax_xla` keeps JAX's own transposes, so its `pgd` figures pay the loop penalty.
- Few channels: XLA:CPU hands a convolution to YNNPACK only when it has more than 16 input or
  output channels (`IsConvolutionOpSupportedByYnn`); the others run on Eigen's spatial
  convolution, about 4x slower per multiply-add (one core, batch 128: 12.6 ms for 32x32
  16 -> 16 against 3.0 ms for 16x16 16 -> 32, the same multiply-adds). Left there (`conv_impl`
  "xla"), the small VGG-19's block 1 (3 -> 16 and 16 -> 16 at 32x32, forward and transposed) took 53 of
  the 196 ms of a forward + input gradient (profile: `--xla_cpu_enable_xprof_traceme`,
  `jax.profiler`). `conv_auto` therefore runs width-3 "SAME"-column convolutions with 5-16
  channels on groups of g = 2 (9-16 channels) or 4 (5-8) columns
  (`models.layers._conv_column_groups`: NHWC [N,H,W,C] -> [N,H,W/g,gC] is a free reshape after
  a pad, and the kernel becomes kh x 2 over gC -> gCout, 2g/3 of the multiply-adds, which
  YNNPACK takes; the input gradient is the same construction on the flipped kernel). Forward,
  32x32: 3 -> 16 in pairs 2.3 vs 9.0 ms, 16 -> 16 9.7 vs 12.7 ms; 3 -> 8 in fours 2.6 vs 13.5
  ms, 8 -> 8 5.7 vs 8.8 ms. Whole small VGG-19 in one process, 5 interleaved rounds (minima):
  width 0.25, forward + input gradient 0.183 vs 0.203 s, PGD-10 1.53 vs 1.73 s; width 0.125
  (the demo's and `benchmark_training`'s), fours on top of pairs: 0.059 vs 0.072 s and 0.60 vs
  0.77 s. Tried and dropped: padding the output channels to 32 (15.8 vs 12.7 ms), pairs of rows
  (their transposes cost more than the gain), pairs aligned at column 0 without the pad (2x the
  multiply-adds; the same whole-model time). The values change by float summation order only
  (tested against lax in and out of loops,
  `test_conv_auto_runs_few_channel_convolutions_on_column_groups`).
- The limit on the small VGG-19 now (one core): every convolution runs on YNNPACK except the
  2x2-map ones (patches + matmul), and YNNPACK's are 10-40% slower than PyTorch's oneDNN at
  8x8x64 and 4x4x128 (forward + input gradient per layer 13.3 vs 11.3 ms and 12.3 vs 8.9 ms);
  in a profile about 81% of the program is YNNPACK fusions and the rest bias, ReLU, pooling and
  the column groups' pads (which XLA:CPU's older fusion emitters, `percadv_jax.compiler`, write
  more slowly than its newer ones: `jax_auto_emitters`). Patches + matmul loses on 4x4 and 8x8
  maps (17.5 vs 14.0 ms at 4x4x128). PGD adds nothing over its gradients (`ours PGD / (steps x
  fwd+bwd)` about 0.9), and Foolbox runs the same compiled model, so `Foolbox / ours` stays
  about 1 (the model is the model).
- Where the targets stand (PGD-10, best PyTorch / ours, same-round medians; sections
  `benchmark_conv_<model>`: one pinned core, PyTorch 1 thread; `_2cpu`: both cores, PyTorch 1
  and 2 threads, the best counting, and `jax_auto` with one JAX CPU device per core as the
  binaries set up, `percadv_jax.compiler.use_cpu_cores`): MobileNetV2 at 64 px 1.83 (one core)
  and 1.76 (two cores), at 224 px 1.43 and 1.72 (2026-11-29): met. Small VGG-19 (2026-12-03,
  attacks in loops, column groups): on one core three runs gave 0.96 [0.88, 1.01] (5 rounds),
  0.99 [0.93, 1.12] and 1.04 [0.94, 1.11] (7 rounds; the section holds the last), so parity
  within the machine's noise, not a margin (forward + input gradient 0.79-0.83x PyTorch's, the
  limit above; before the column groups 0.99 and 0.76, before the loops 0.86); on two cores
  1.24 [1.18, 1.79] (before: 1.14, and 0.90 before the loops): met. On two cores one device per
  core is what brings VGG-19 from 0.75 to 1.24 (`jax_auto_1dev`: XLA's intra-op threads gain
  less from the second core than PyTorch's, the batch split over two devices about 1.5x more).
  `Foolbox / ours` 1.05 and 1.42 (VGG-19), 1.31 and 1.29 (MobileNetV2 64 px), 1.32 and 1.18
  (224 px): the 1.5 target is missed and cannot be met by the attack loop alone. Foolbox runs the library's own compiled model and gradient here, so
  both pay about `steps` forward + backward passes; ours PGD / (steps x fwd+bwd) is 0.76-1.06 and
  Foolbox's about 1.0-1.25, which bounds `Foolbox / ours` near 1.3.
- The one-core rounds of the `benchmark_conv_<model>` sections ran on a quiet machine (load
  average 1-2; same-round ratios within 10% of their medians). Under a load of 10-14 from other
  jobs the times swing 2-5x between rounds; the minima are then the least disturbed figures.
"""


def validate(config: Any) -> None:
  """Checks the configuration before any work; raises ValueError naming the field."""
  common.check_output(config)
  common.names(config, "models", MODELS)
  common.names(config, "contenders", CONTENDERS)
  common.positive_ints(config, ("rounds", "reps", "steps"))
  common.positive_ints(config, ("seed",), allow_zero=True)
  checks.check_choice(config.device, "device", ("cpu", "gpu"))
  checks.check_bool(config.summarise_only, "summarise_only")
  if not isinstance(config.cpus, str) or not all(ch in "0123456789,-" for ch in config.cpus):
    raise ValueError(f"cpus must be a taskset CPU list such as '0' or '0,1' ('' = no pinning), "
                     f"got {config.cpus!r}")
  if config.cpus and not config.summarise_only and shutil.which("taskset") is None:
    raise ValueError(f"cpus={config.cpus!r} pins the workers with taskset, which is not "
                     "installed; set cpus=''")


# ------------------------------------------------------------------------------------------
# Worker: one contender in one process.
# ------------------------------------------------------------------------------------------

def _worker(spec: dict) -> None:
  """Compiles, prints ``READY {json}``, then answers each ``run`` line with one JSON line."""
  m = MODELS[spec["model"]]
  seed = spec.get("seed", 0)
  rng = np.random.default_rng(seed)
  x_np = rng.uniform(0, 1, (m["batch"], m["size"], m["size"], 3)).astype(np.float32)
  steps, reps, device = spec["steps"], spec["reps"], spec["device"]
  step_size = EPS / 4
  info: dict[str, Any] = {}
  t0 = time.perf_counter()
  if spec["kind"] == "torch":
    import torch
    from experiments.benchmarks.torch_ports import torch_mobilenet_v2, torch_pgd, torch_vgg
    threads = spec["threads"] or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    info["threads"] = threads
    dev = "cuda" if device == "gpu" else "cpu"
    if m["name"] == "vgg19":
      import jax.numpy as jnp
      from percadv_jax.models import get_model, random_variables
      module = get_model("vgg19", num_classes=10, **m["kwargs"])
      variables = random_variables(module, jnp.asarray(x_np[:1]), seed=seed)
      model = torch_vgg(variables["params"], width=m["kwargs"]["width"], num_classes=10)
      ref = np.asarray(module.apply(variables, jnp.asarray(x_np[:8])))
    else:
      model = torch_mobilenet_v2(width=m["kwargs"]["width"], num_classes=10, size=m["size"],
                                 seed=seed)
      ref = None
    model = model.to(dev)
    xt = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()).to(dev)
    with torch.no_grad():
      logits = model(xt)
      yt = logits.argmax(1)
      if ref is not None:
        info["max_logit_diff_vs_flax"] = float(np.abs(logits[:8].cpu().numpy() - ref).max())
    gen = torch.Generator(device=dev).manual_seed(seed)

    def sync():
      if dev == "cuda":
        torch.cuda.synchronize()

    def fwdbwd():
      xg = xt.clone().requires_grad_(True)
      loss = torch.nn.functional.cross_entropy(model(xg), yt)
      g, = torch.autograd.grad(loss, xg)
      sync()
      return g

    def pgd():
      out = torch_pgd(model, xt, yt, eps=EPS, step=step_size, steps=steps, generator=gen)
      sync()
      return out
  else:
    import jax
    import jax.numpy as jnp
    import optax
    from percadv_jax import attacks, compiler, parallel
    from percadv_jax.models import get_model, random_variables
    # As the binaries: one CPU device per pinned core, the batch split over them ("cores").
    compiler.use_cpu_cores(None if spec.get("cpu_devices") == "cores" else 1)
    info["devices"] = jax.device_count()
    module = get_model(m["name"], num_classes=10, conv_impl=spec["conv_impl"], **m["kwargs"])
    x = parallel.shard_batch(x_np) if jax.device_count() > 1 else jnp.asarray(x_np)
    variables = random_variables(module, x[:1], seed=seed)
    logits_fn = compiler.jit(lambda v: module.apply(variables, v))
    y = jnp.argmax(logits_fn(x), -1).astype(jnp.int32)
    grad = compiler.jit(jax.grad(
        lambda v: optax.softmax_cross_entropy_with_integer_labels(logits_fn(v), y).mean()))
    g = np.asarray(grad(x))
    info["check"] = {"logits": np.asarray(logits_fn(x[:8])).tolist(),
                     "grad": g[:2].reshape(-1)[:4096].tolist()}
    key = jax.random.key(seed)

    def fwdbwd():
      return jax.block_until_ready(grad(x))

    if spec["kind"] == "foolbox":
      import foolbox
      fmodel = foolbox.JAXModel(logits_fn, bounds=(0, 1))
      fb = foolbox.attacks.LinfPGD(abs_stepsize=step_size, steps=steps, random_start=True)

      def pgd():
        return jax.block_until_ready(fb(fmodel, x, y, epsilons=EPS)[1])
    else:
      def pgd():
        return jax.block_until_ready(attacks.pgd(logits_fn, x, y, key=key, eps=EPS,
                                                 step_size=step_size, steps=steps))
  fwdbwd()
  pgd()
  info["warmup_s"] = time.perf_counter() - t0
  print("READY " + json.dumps(info), flush=True)
  for line in sys.stdin:
    if line.strip() != "run":
      break
    times = []
    for _ in range(reps):
      t = time.perf_counter()
      fwdbwd()
      times.append(time.perf_counter() - t)
    t = time.perf_counter()
    pgd()
    print(json.dumps({"fwdbwd": min(times), "pgd": time.perf_counter() - t}), flush=True)


# ------------------------------------------------------------------------------------------
# Parent: start the workers, interleave the rounds, report.
# ------------------------------------------------------------------------------------------

def _start(name: str, model: str, c: Any) -> subprocess.Popen:
  spec = {**CONTENDERS[name], "model": model, "steps": c.steps, "reps": c.reps,
          "device": c.device, "seed": c.seed}
  env = dict(os.environ)
  if spec.get("xla_flags") is not None and c.device == "cpu":
    env["XLA_FLAGS"] = spec["xla_flags"]
  if c.device == "cpu":
    env["JAX_PLATFORMS"] = "cpu"
  cmd = [sys.executable, "-m", "experiments.benchmarks.conv", "--worker=" + json.dumps(spec)]
  if c.cpus:
    cmd = ["taskset", "-c", c.cpus] + cmd
  return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env=env, cwd=ROOT)


def _read_json(proc: subprocess.Popen, prefix: str = "") -> dict:
  while True:
    line = proc.stdout.readline()
    if not line:
      raise RuntimeError(f"worker exited (rc {proc.wait()})")
    if line.startswith(prefix) and line[len(prefix):].lstrip().startswith("{"):
      return json.loads(line[len(prefix):])


def run_model(model: str, c: Any) -> dict:
  """Starts one worker per contender for ``model``, runs the rounds, returns the raw figures."""
  procs, infos = {}, {}
  for name in c.contenders:  # started one after the other: compiles do not share the CPUs
    procs[name] = _start(name, model, c)
    try:
      infos[name] = _read_json(procs[name], "READY ")
    except RuntimeError as e:
      print(f"{model} {name}: {e}", flush=True)
      procs.pop(name)
      continue
    print(f"{model} {name}: ready after {infos[name]['warmup_s']:.1f} s", flush=True)
  names = list(procs)
  if not names:
    raise RuntimeError(f"{model}: no contender started (the workers' errors are above)")
  rounds: list[dict[str, dict]] = []
  for r in range(c.rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    res = {}
    for name in order:
      procs[name].stdin.write("run\n")
      procs[name].stdin.flush()
      res[name] = _read_json(procs[name])
    rounds.append(res)
    print(f"{model} round {r}: " + ", ".join(
        f"{n} {res[n]['fwdbwd']:.3f}/{res[n]['pgd']:.2f}" for n in names), flush=True)
  for p in procs.values():
    p.stdin.close()
    p.wait(timeout=60)
  return {"infos": infos, "rounds": rounds}


def _checks(infos: dict) -> dict:
  """Max abs logit / input-gradient differences of each JAX variant to ``jax_xla``."""
  ref = infos.get("jax_xla", {}).get("check")
  out = {}
  for name, info in infos.items():
    if "check" in info and ref is not None:
      out[name] = {k: float(np.abs(np.asarray(info["check"][k]) - np.asarray(ref[k])).max())
                   for k in ("logits", "grad")}
    elif "max_logit_diff_vs_flax" in info:
      out[name] = {"logits": info["max_logit_diff_vs_flax"]}
  return out


def summarise(model: str, raw: dict, c: Any) -> tuple[str, dict]:
  rounds = raw["rounds"]
  # In the order of c.contenders (results.json stores the rounds with sorted keys).
  names = sorted(rounds[0], key=lambda n: (n not in c.contenders,
                                           list(c.contenders).index(n) if n in c.contenders
                                           else 0, n))
  m = MODELS[model]
  rows = []
  for n in names:
    f = [r[n]["fwdbwd"] for r in rounds]
    p = [r[n]["pgd"] for r in rounds]
    rows.append({"contender": n, "fwdbwd_min_s": min(f), "fwdbwd_median_s": statistics.median(f),
                 "pgd_min_s": min(p), "pgd_median_s": statistics.median(p),
                 "pgd_images_per_s": m["batch"] / statistics.median(p)})
  torch_names = [n for n in names if n.startswith("torch")]
  ratios = {}
  for n in names:
    if not n.startswith("jax"):
      continue
    d = {}
    if torch_names:
      best = [min(r[t]["pgd"] for t in torch_names) / r[n]["pgd"] for r in rounds]
      bestf = [min(r[t]["fwdbwd"] for t in torch_names) / r[n]["fwdbwd"] for r in rounds]
      d["torch_best_over_ours_pgd"] = (statistics.median(best), min(best), max(best))
      d["torch_best_over_ours_fwdbwd"] = (statistics.median(bestf), min(bestf), max(bestf))
    if "foolbox" in names:
      fb = [r["foolbox"]["pgd"] / r[n]["pgd"] for r in rounds]
      d["foolbox_over_ours_pgd"] = (statistics.median(fb), min(fb), max(fb))
    if "jax_xla" in names:
      sp = [r["jax_xla"]["fwdbwd"] / r[n]["fwdbwd"] for r in rounds]
      d["speedup_vs_jax_xla_fwdbwd"] = (statistics.median(sp), min(sp), max(sp))
    d["pgd_over_floor"] = statistics.median(
        [r[n]["pgd"] / (c.steps * r[n]["fwdbwd"]) for r in rounds])
    ratios[n] = d
  checks = _checks(raw["infos"])
  lines = [f"### {model}: {m['name']} {m['kwargs']}, {m['size']} px, batch {m['batch']}, "
           f"PGD-{c.steps}, {c.rounds} interleaved rounds, taskset -c {c.cpus or '(none)'}", "",
           "| contender | fwd+bwd min | median | PGD min | median | PGD images/s | "
           "max abs diff to jax_xla (logits / grad) |", "|---|---|---|---|---|---|---|"]
  for row in rows:
    ch = checks.get(row["contender"], {})
    diff = " / ".join(f"{v:.1e}" for v in ch.values()) if ch else ""
    lines.append(f"| {row['contender']} | {row['fwdbwd_min_s']:.3f} s | "
                 f"{row['fwdbwd_median_s']:.3f} s | {row['pgd_min_s']:.2f} s | "
                 f"{row['pgd_median_s']:.2f} s | {row['pgd_images_per_s']:.1f} | {diff} |")
  lines += ["", "Same-round ratios, median [min, max] over rounds:", "",
            "| JAX variant | best torch / ours, PGD | best torch / ours, fwd+bwd | "
            "Foolbox / ours, PGD | jax_xla / ours, fwd+bwd | ours PGD / (steps x fwd+bwd) |",
            "|---|---|---|---|---|---|"]

  def f(t):
    return f"{t[0]:.2f} [{t[1]:.2f}, {t[2]:.2f}]" if t else ""
  for n, d in ratios.items():
    lines.append(f"| {n} | {f(d.get('torch_best_over_ours_pgd'))} | "
                 f"{f(d.get('torch_best_over_ours_fwdbwd'))} | "
                 f"{f(d.get('foolbox_over_ours_pgd'))} | "
                 f"{f(d.get('speedup_vs_jax_xla_fwdbwd'))} | {d['pgd_over_floor']:.2f} |")
  threads = {n: i["threads"] for n, i in raw["infos"].items() if "threads" in i}
  if threads:
    lines += ["", "PyTorch threads: " + ", ".join(f"{k} {v}" for k, v in threads.items())]
  devices = {n: i["devices"] for n, i in raw["infos"].items() if i.get("devices", 1) > 1}
  if devices:
    lines += ["", "JAX CPU devices (batch split over them, `compiler.use_cpu_cores`): "
              + ", ".join(f"{k} {v}" for k, v in devices.items())]
  return "\n".join(lines), {"rows": rows, "ratios": ratios, "checks": checks}


def _record(model: str, md: str, c: Any) -> None:
  """Writes the section ``benchmark_conv_<model><tag>`` and the notes section
  ``benchmark_conv`` of the results file (with ``c.record``)."""
  common.record(c, f"benchmark_conv_{model}", md)
  if c.device == "cpu":
    common.record(c, "benchmark_conv", NOTES + "\nNo GPU was available: no GPU figures "
                  "(the prepared GPU command is in the binary's docstring).", tagged=False)


def run(c: Any, workdir: str) -> str:
  """Runs (or, with ``c.summarise_only``, re-reports from ``workdir``) every model of ``c``.

  Returns:
    The markdown of every model's tables (also ``workdir/benchmark_conv.md``; the figures in
    ``workdir/results.json``: per model ``rows``, ``ratios``, ``checks`` and the ``raw`` rounds).
  """
  from percadv_jax import io
  validate(c)
  summarise_only = c.summarise_only
  path = os.path.join(workdir, "results.json")
  if summarise_only:
    if not os.path.isfile(path):
      raise ValueError(f"{path}: no figures to summarise (summarise_only needs the workdir of a "
                       "finished run)")
    results = io.read_json(path)
  else:
    common.lock(workdir, c)
    results = {}
  sections = []
  for model in (list(results) if summarise_only else c.models):
    raw = results[model]["raw"] if summarise_only else run_model(model, c)
    md, res = summarise(model, raw, c)
    results[model] = {**res, "raw": raw}
    sections.append(md)
    print(md, flush=True)
    io.write_json(path, results)
    _record(model, md, c)
  text = "\n\n".join(sections)
  with io.atomic_open(os.path.join(workdir, "benchmark_conv.md")) as fh:
    fh.write(text + "\n")
  return text


if __name__ == "__main__":  # a worker: python -m experiments.benchmarks.conv --worker=<json>
  if len(sys.argv) != 2 or not sys.argv[1].startswith("--worker="):
    print("error: this module runs one contender (--worker=<json spec>); run the benchmark "
          "with python -m experiments.benchmark --config=experiments/configs/benchmark.py:conv",
          file=sys.stderr)
    sys.exit(2)
  _worker(json.loads(sys.argv[1][len("--worker="):]))
