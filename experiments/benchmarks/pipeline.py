r"""Throughput of the whole pipeline, sharded over every device: images/s per stage.

    python -m experiments.benchmark --config=experiments/configs/benchmark.py:pipeline \
        --workdir=/tmp/bench_pipeline
    python -m experiments.benchmark --config=experiments/configs/benchmark.py:pipeline \
        --workdir=/tmp/b --config.batch_size=256 --config.precision=bfloat16

Stages (medians of ``repeats`` timed calls after one warm-up call; every call is one jitted,
``"data"``-sharded program from ``percadv_jax.parallel``; random weights of the small VGG-19 at
``width`` on ``image_size`` synthetic signs, timing does not depend on the weights' values):

- ``pgd``: Linf PGD-``pgd_steps`` (``percadv_jax.attacks.pgd``), and its ``floor``
  (``pgd_steps`` x one jitted forward + backward w.r.t. the input);
- ``train_natural`` / ``train_adversarial``: one optimiser step of ``percadv_jax.train.train_step``
  (Madry PGD-``train_pgd_steps`` inside the adversarial one), replicated state;
- ``ssim_solver``: ``percadv_jax.perceptual.solve_linear`` (the quality-ball LP, window 8, stride 4,
  e1 = e2 = 0.05) on ``ssim_batch`` images of ``ssim_size`` px, and the CVXPY reference on one
  image (``cvxpy``), per-image ratio;
- ``cam``: ``percadv_jax.cam.grad_cam`` on the default CAM layer;
- ``torch_pgd``: the same PGD in eager PyTorch on the same architecture and weights (on CUDA when
  JAX runs on a GPU and torch sees one, else on the CPU), and the ratio torch time / our time;
- ``peak``: the device's measured peak (a large jitted matmul, FLOP/s), and for every jitted stage
  the fraction of it used (XLA's cost-analysis FLOPs / time / peak).

Writes into the workdir (process 0): ``config.json``, ``results.json`` and
``benchmark_pipeline.md`` / ``.csv``; with ``record`` also the ``benchmark_pipeline`` section of
the results file. Multi-host: ``experiments.benchmark``'s ``--coordinator_address``,
``--num_processes``, ``--process_id`` (``experiments.cli``); ``batch_size`` is global.
"""

from __future__ import annotations

import functools
import json
import platform
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import common
from percadv_jax import checks, io, parallel, precision
from percadv_jax.models import random_variables

STAGES = ("peak", "pgd", "train", "ssim", "cam", "torch")
PRECISIONS = ("float32", "bfloat16")


def validate(config: Any) -> None:
  """Checks the configuration before any work; raises ValueError naming the field."""
  common.check_output(config)
  common.positive_ints(config, ("batch_size", "image_size", "num_classes", "pgd_steps",
                                "train_pgd_steps", "repeats", "ssim_size", "ssim_batch"))
  common.positive_ints(config, ("seed",), allow_zero=True)
  checks.check_float(config.width, "width", minimum=0, min_inclusive=False)
  checks.check_float(config.eps, "eps", minimum=0, min_inclusive=False)
  checks.check_bool(config.cvxpy, "cvxpy")
  checks.check_choice(config.precision, "precision", PRECISIONS)
  common.names(config, "stages", STAGES)
  if config.ssim_size < 8:
    raise ValueError(f"ssim_size must be >= 8 (the quality ball's window), got "
                     f"{config.ssim_size}")


def flops_of(jitted: Callable, *args) -> float | None:
  """XLA's cost-analysis FLOPs of one call of ``jitted(*args)`` (None if unavailable)."""
  try:
    cost = jitted.lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    f = float(cost.get("flops", 0.0))
    return f if f > 0 else None
  except Exception:  # noqa: BLE001 - cost analysis is best effort and backend dependent
    return None


def measured_peak(repeats: int) -> dict:
  """FLOP/s of a large jitted matmul on every device of the mesh (float32, and bf16 off CPU)."""
  gpu = jax.default_backend() != "cpu"
  n = 8192 if gpu else 1024
  out = {}
  mesh = parallel.make_mesh()
  nd = parallel.num_devices(mesh=mesh)
  for name, dt in [("float32", jnp.float32)] + ([("bfloat16", jnp.bfloat16)] if gpu else []):
    a = parallel.shard_batch(np.ones((nd * n, n), np.float32).astype(dt), mesh=mesh)
    b = parallel.replicate(np.ones((n, n), np.float32).astype(dt), mesh=mesh)
    f = jax.jit(lambda a, b: a @ b)
    _, t = common.median_time(lambda: f(a, b), repeats)
    out[name] = 2.0 * nd * n ** 3 / t
  return out


def run(config: Any, workdir: str) -> list[dict]:
  """Times every stage in ``config.stages``.

  Returns:
    The table rows (``stage``, ``seconds``, ``images_per_sec``, ``compile_and_first_s``,
    ``images`` and the stage's ratios), also written to ``workdir`` by process 0.
  """
  from percadv_jax import attacks, cam, data, models, perceptual, train
  validate(config)
  main = parallel.is_main_process()
  c = config
  mesh = parallel.make_mesh()
  nd = parallel.num_devices(mesh=mesh)
  if c.batch_size % nd:
    raise ValueError(f"batch_size {c.batch_size} must be a multiple of the {nd} devices")
  if main:
    common.lock(workdir, c)
  src = data.load("synthetic_signs", split="test", num_examples=max(c.batch_size, c.ssim_batch),
                  image_size=c.image_size, num_classes=c.num_classes, seed=c.seed)
  sl = parallel.local_slice(c.batch_size)
  local = data.to_arrays(src, indices=np.arange(c.batch_size)[sl])
  batch = parallel.shard_batch(local, mesh=mesh)
  module = models.get_model("vgg19", num_classes=c.num_classes, variant="small", width=c.width)
  variables = parallel.replicate(
      random_variables(module, jnp.asarray(local["image"][:1]), seed=c.seed), mesh=mesh)
  apply = precision.mixed_precision(module.apply, dtype=c.precision)
  key = parallel.replicate(jax.random.PRNGKey(c.seed), mesh=mesh)
  step = c.eps / 4
  rows: list[dict] = []
  peak = measured_peak(c.repeats) if "peak" in c.stages else {}
  peak_f = peak.get("bfloat16" if c.precision == "bfloat16" else "float32")

  def add(stage, seconds, images, first, flops=None, **extra):
    row = {"stage": stage, "seconds": seconds, "images_per_sec": images / seconds,
           "compile_and_first_s": first, "images": images}
    if flops and peak_f:
      row["gflops_per_sec"] = flops / seconds / 1e9
      row["fraction_of_peak"] = flops / seconds / peak_f
    row.update(extra)
    rows.append(row)
    print(json.dumps(row), flush=True)

  ours = None
  if "pgd" in c.stages or "torch" in c.stages:
    def pgd_fn(v, b, k):
      logits_fn = lambda z: apply(v, z, train=False)  # noqa: E731
      return attacks.pgd(logits_fn, b["image"], b["label"], key=k, eps=c.eps, step_size=step,
                         steps=c.pgd_steps)
    pgd_j = jax.jit(pgd_fn, out_shardings=parallel.data_sharding(mesh=mesh))
    first, ours = common.median_time(lambda: pgd_j(variables, batch, key), c.repeats)
    add(f"pgd{c.pgd_steps}", ours, c.batch_size, first, flops_of(pgd_j, variables, batch, key))

    def fwd_bwd(v, b):
      def loss(x):
        logits = apply(v, x, train=False)
        return -jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(b["label"], c.num_classes))
      return jax.grad(loss)(b["image"])
    fb = jax.jit(fwd_bwd, out_shardings=parallel.data_sharding(mesh=mesh))
    first, t = common.median_time(lambda: fb(variables, batch), c.repeats)
    add(f"floor({c.pgd_steps}x fwd+bwd)", c.pgd_steps * t, c.batch_size, first,
        None if flops_of(fb, variables, batch) is None
        else c.pgd_steps * flops_of(fb, variables, batch), pgd_over_floor=ours / (c.pgd_steps * t))

  if "train" in c.stages:
    tx = train.make_optimizer(train.OptimizerConfig(name="sgd", learning_rate=0.01,
                                                    schedule="constant"), 1000)
    params = variables["params"]
    state = train.TrainState.create(apply_fn=apply, params=params, tx=tx,
                                    batch_stats=variables.get("batch_stats", {}),
                                    key=jax.random.PRNGKey(c.seed))
    for name, kw in [("train_natural", {}),
                     ("train_adversarial", {"adversarial": True, "attack": attacks.Attack(
                         "pgd", eps=c.eps, steps=c.train_pgd_steps,
                         step_factor=c.train_pgd_steps / 4)})]:  # step eps / 4
      fn = functools.partial(train.train_step, **kw)
      step_fn = jax.jit(fn, in_shardings=(parallel.replicated_sharding(mesh=mesh),
                                          parallel.data_sharding(mesh=mesh)),
                        out_shardings=parallel.replicated_sharding(mesh=mesh))
      st = parallel.replicate(state, mesh=mesh)
      first, t = common.median_time(lambda: step_fn(st, batch), c.repeats)
      label = name if not kw else f"{name}(pgd{c.train_pgd_steps})"
      add(label, t, c.batch_size, first, flops_of(step_fn, st, batch))

  if "cam" in c.stages:
    cam_j = jax.jit(lambda v, x: cam.grad_cam(module, v, x),
                    out_shardings=parallel.data_sharding(mesh=mesh))
    first, t = common.median_time(lambda: cam_j(variables, batch["image"]), c.repeats)
    add("grad_cam", t, c.batch_size, first, flops_of(cam_j, variables, batch["image"]))

  if "ssim" in c.stages:
    ball = perceptual.QualityBall(window=8, stride=4, eps_structure=0.05, eps_luminance=0.05)
    imgs = data.to_arrays(data.load("synthetic_signs", split="test", num_examples=c.ssim_batch,
                                    image_size=c.ssim_size, seed=c.seed + 1))["image"]
    g = np.random.default_rng(c.seed).standard_normal(imgs.shape).astype(np.float32)
    solve = jax.jit(lambda x, g: perceptual.solve_linear(x, g, ball))
    first, t = common.median_time(lambda: solve(imgs, g), c.repeats)
    extra = {}
    if c.cvxpy:
      t0 = time.perf_counter()
      d_ref = perceptual.solve_linear_cvxpy(imgs[:1], g[:1], ball)
      t_cvx = time.perf_counter() - t0
      d = np.asarray(solve(imgs, g))[:1]
      obj, obj_ref = float(np.sum(g[:1] * d)), float(np.sum(g[:1] * np.asarray(d_ref)))
      extra = {"cvxpy_s_per_image": t_cvx, "speedup_vs_cvxpy": t_cvx / (t / c.ssim_batch),
               "objective_gap": abs(obj - obj_ref) / max(abs(obj_ref), 1e-12)}
    add(f"ssim_solver({c.ssim_size}px)", t, c.ssim_batch, first, **extra)

  if "torch" in c.stages and ours is not None and jax.process_count() == 1:
    import torch

    from experiments.benchmarks.torch_ports import torch_pgd, torch_vgg
    dev = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    tmodel = torch_vgg(jax.device_get(variables["params"]), width=c.width,
                       num_classes=c.num_classes).to(dev)
    xt = torch.from_numpy(local["image"].transpose(0, 3, 1, 2).copy()).to(dev)
    yt = torch.from_numpy(local["label"].astype(np.int64)).to(dev)
    gen = torch.Generator(device=dev).manual_seed(c.seed)

    def tp():
      out = torch_pgd(tmodel, xt, yt, eps=c.eps, step=step, steps=c.pgd_steps, generator=gen)
      if dev == "cuda":
        torch.cuda.synchronize()
      return out
    # On a CPU, torch's spinning OpenMP threads can lose a lot on a busy machine: time it with
    # one thread and with its default, and report both (the faster is the fair comparison).
    for threads in ([1, torch.get_num_threads()] if dev == "cpu" else [None]):
      if threads is not None:
        torch.set_num_threads(threads)
      first, t = common.median_time(tp, c.repeats)
      label = f"torch_pgd{c.pgd_steps}({dev}" + (f",{threads}thr)" if threads else ")")
      add(label, t, c.batch_size, first, torch_over_ours=t / ours)

  if main:
    meta = {"backend": jax.default_backend(), "devices": nd, "processes": jax.process_count(),
            "device_kind": jax.devices()[0].device_kind, "peak_flops": peak,
            "machine": platform.processor() or platform.machine(), "jax": jax.__version__}
    io.write_json(f"{workdir}/results.json", {"meta": meta, "rows": rows})
    cols = ["stage", "images_per_sec", "seconds", "compile_and_first_s", "gflops_per_sec",
            "fraction_of_peak", "pgd_over_floor", "torch_over_ours", "speedup_vs_cvxpy",
            "objective_gap"]
    md = io.write_table(f"{workdir}/benchmark_pipeline", rows, cols,
                        optional=cols[4:])  # filled only by the stages that ran
    print(io.markdown_table(rows, ["stage", "images_per_sec", "seconds", "fraction_of_peak"]))
    common.record(c, "benchmark_pipeline", f"Backend {meta['backend']} "
                  f"({meta['device_kind']}), {nd} device(s), measured peak {peak}.\n\n{md}")
  return rows
