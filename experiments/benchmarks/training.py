r"""Benchmark: fast adversarial training (FGSM-RS) against PGD-7 training and a PyTorch loop.

    taskset -c 0 python -m experiments.benchmark \
        --config=experiments/configs/benchmark.py:training --workdir=/tmp/bench_training
    python -m experiments.benchmark --config=experiments/configs/benchmark.py:training \
        --workdir=/tmp/bt --config.epochs=10 --config.adv_epochs=3

On the demo's masks study data (synthetic signs, ``num_train`` 4000 training and ``num_test``
test images, 32 px, full-image setting) and model (small VGG-19, width 0.125, batch 64, Adam
3e-3, cosine, warm-up 50), it trains one natural model for ``epochs`` epochs, then fine-tunes
it for ``adv_epochs`` epochs (as the demo's adversarial models) once with PGD-7 (Madry; step
2/255) and once with FGSM-RS (Wong et al. 2020; uniform start, one step of 1.25 eps), both with
the catastrophic-overfitting guard (``guard="rollback"``, PGD-``guard_steps`` 10 accuracy on
``guard_examples`` 256 held-out training images), all at Linf eps 8/255, and reports:

- training images/s of each adversarial fine-tuning (``batch_size`` x the median steps/s of its
  metrics.jsonl records after the first one, which holds the compile);
- natural and PGD-``eval_pgd_steps`` 10 accuracy (step 2/255, one restart) of the natural,
  PGD-7 and FGSM-RS models on the first ``eval_examples`` test images;
- images/s of one adversarial training step (PGD-7 and FGSM-RS: attack in eval mode, then an
  Adam update on the adversarial batch), ours on one device (``train.jit_train_step``, the step
  of ``train.fit``) and data-parallel over every JAX device (``jit_train_step(mesh=...)``, the
  step of ``train.fit`` with ``data_parallel=True``; the binaries give JAX one CPU device per
  core) against eager PyTorch on the same architecture and weights with 1 thread and one thread
  per CPU the process may use, in ``rounds`` interleaved rounds of ``torch_steps`` timed steps
  each (``step_rates``), and the same-round ratios ours / best PyTorch; ``skip=('torch',)``
  leaves PyTorch out.

Writes the workdir's ``config.json`` and ``results.json``, the training runs under its ``runs/``
(resumable: a rerun reuses finished runs) and, with ``record``, the ``benchmark_training``
section of the results file (preset ``training_xla``: ``conv_impl="xla"``, section
``benchmark_training_xla``).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Any

from experiments.benchmarks import common
from percadv_jax import checks
from percadv_jax.attacks import Attack

EPS = 8 / 255


def _pgd(steps: int) -> Attack:
  """Madry's PGD at eps 8/255 with step 2/255 (``step_factor = steps / 4``)."""
  return Attack("pgd", eps=EPS, steps=steps, step_factor=steps / 4)
SKIPPABLE = ("torch",)
LIMIT = """\
- What limits the training step: the small VGG-19 at width 0.125 has 8-64 channels, and
  XLA:CPU runs convolutions with at most 16 channels on Eigen's spatial convolution rather than
  YNNPACK; `conv_auto` moves those with 5-16 channels onto groups of 2 or 4 columns, which
  YNNPACK takes (see `benchmark_conv`). On one device ours uses both cores only through XLA's intra-op
  threads, while PyTorch gained 1.7x from its second thread on an otherwise idle machine
  (2026-11-29: PGD-7 433 vs 252 images/s; ours 284, ratio 0.66). The `_dp` rows split the
  batch over the JAX devices (one per core; state replicated, batch split along the `"data"`
  mesh axis): `train.fit` runs that step with `TrainConfig(data_parallel=True)`. It stays
  opt-in: the sharded step's float rounding depends on the device count, and the batch must
  divide over the devices."""
CONV_IMPLS = ("auto", "xla", "patches")


def validate(config: Any) -> None:
  """Checks the configuration before any work; raises ValueError naming the field."""
  common.check_output(config)
  common.positive_ints(config, ("num_train", "num_test", "eval_examples", "batch_size", "epochs",
                                "adv_epochs", "pgd_steps", "rounds", "torch_steps",
                                "guard_examples", "guard_steps", "eval_pgd_steps"))
  common.positive_ints(config, ("seed",), allow_zero=True)
  checks.check_float(config.width, "width", minimum=0, min_inclusive=False)
  checks.check_choice(config.conv_impl, "conv_impl", CONV_IMPLS)
  common.names(config, "skip", SKIPPABLE, allow_empty=True)
  if config.eval_examples > config.num_test:
    raise ValueError(f"eval_examples={config.eval_examples} exceeds num_test={config.num_test}")
  if config.num_train - config.guard_examples < config.batch_size:
    raise ValueError(f"guard_examples={config.guard_examples} leaves "
                     f"{config.num_train - config.guard_examples} of num_train="
                     f"{config.num_train} training images, fewer than batch_size="
                     f"{config.batch_size}")


def _images_per_sec(workdir: str, batch_size: int) -> float:
  from percadv_jax import io
  rates = [r["steps_per_sec"] for r in io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
           if "steps_per_sec" in r]
  return batch_size * statistics.median(rates[1:] or rates)


def _torch_step(c: Any, params: Any, x: Any, y: Any, *, kind: str):
  """One eager PyTorch adversarial training step (attack in eval mode, then Adam), a callable.

  Args:
    c: the benchmark's configuration (``width``, ``pgd_steps``).
    params: the Flax model's parameters (the port starts from the same weights).
    x, y: the batch, float32 [B,H,W,3] in [0, 1] and int labels [B] (NumPy).
    kind: ``"pgd"`` (PGD-``c.pgd_steps``, step 2/255) or ``"fgsm_rs"``.
  """
  import numpy as np
  import torch
  from experiments.benchmarks.torch_ports import torch_vgg
  model = torch_vgg(params, width=c.width, num_classes=10).train()
  opt = torch.optim.Adam(model.parameters(), lr=3e-3)
  gen = torch.Generator().manual_seed(0)
  xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
  yt = torch.from_numpy(np.asarray(y, np.int64))
  ce = torch.nn.functional.cross_entropy

  def attack():
    model.eval()
    delta = torch.empty_like(xt).uniform_(-EPS, EPS, generator=gen)
    xa = (xt + delta).clamp(0, 1)
    steps, step = (1, 1.25 * EPS) if kind == "fgsm_rs" else (c.pgd_steps, 2 / 255)
    for _ in range(steps):
      xa.requires_grad_(True)
      g, = torch.autograd.grad(ce(model(xa), yt), xa)
      with torch.no_grad():
        xa = torch.min(torch.max(xa + step * g.sign(), xt - EPS), xt + EPS).clamp(0, 1)
    model.train()
    return xa.detach()

  def step():
    xa = attack()
    opt.zero_grad()
    ce(model(xa), yt).backward()
    opt.step()
  return step


def step_rates(c: Any, *, threads_all: int) -> dict:
  """Images/s of one adversarial training step, ours (jitted) and eager PyTorch, interleaved.

  Both start from the same weights and train on the same random batch (``batch_size`` images of
  32 px). In each of ``rounds`` rounds every contender runs ``torch_steps`` timed steps (after
  two warm-up steps before the first round) and its median counts: ours on one device
  (``train.jit_train_step``, the step ``train.fit`` runs), ours data-parallel over every JAX
  device (``jit_train_step(mesh=parallel.make_mesh())``, the step of ``train.fit`` with
  ``data_parallel=True``; ``batch_size`` must divide over the devices), PyTorch with 1 thread
  and with ``threads_all`` threads, for PGD-``pgd_steps`` and FGSM-RS training.

  Returns:
    ``{"rounds": [{contender: images/s}], "ratios": {name: [ours / best PyTorch per round]},
    "devices": JAX device count}`` with contenders ``<kind>_ours``, ``<kind>_ours_dp`` and
    ``<kind>_torch_<threads>thr``, and ratios ``<kind>`` (one device) and ``<kind>_dp``.
  """
  import jax
  import numpy as np
  import optax
  import torch
  from percadv_jax import parallel, train
  from percadv_jax.models import get_model
  from percadv_jax.train.state import create_train_state
  module = get_model("vgg19", num_classes=10, variant="small", width=c.width,
                     conv_impl=c.conv_impl)
  state0 = create_train_state(c.seed, module, optax.adam(3e-3), input_shape=(1, 32, 32, 3))
  rng = np.random.default_rng(c.seed)
  x = rng.uniform(0, 1, (c.batch_size, 32, 32, 3)).astype(np.float32)
  y = rng.integers(0, 10, c.batch_size).astype(np.int32)
  batch = {"image": jax.numpy.asarray(x), "label": jax.numpy.asarray(y)}
  mesh = parallel.make_mesh()
  if c.batch_size % parallel.num_devices(mesh=mesh):
    raise ValueError(f"batch_size={c.batch_size} does not split over the "
                     f"{parallel.num_devices(mesh=mesh)} JAX devices of the data-parallel step")
  sharded_batch = parallel.shard_batch({"image": x, "label": y}, mesh=mesh)
  attacks = {"pgd": _pgd(c.pgd_steps), "fgsm_rs": Attack("fgsm_rs", eps=EPS)}
  names = {"pgd": f"pgd{c.pgd_steps}", "fgsm_rs": "fgsm_rs"}
  contenders = {}
  for kind, attack in attacks.items():
    jax_step = train.jit_train_step(adversarial=True, attack=attack)
    holder = {"state": state0}

    def ours(jax_step=jax_step, holder=holder):
      holder["state"], m = jax_step(holder["state"], batch)
      jax.block_until_ready(m)
    contenders[f"{names[kind]}_ours"] = (ours, None)
    dp_step = train.jit_train_step(adversarial=True, attack=attack, mesh=mesh)
    dp_holder = {"state": parallel.replicate(state0, mesh=mesh)}

    def ours_dp(dp_step=dp_step, holder=dp_holder):
      holder["state"], m = dp_step(holder["state"], sharded_batch)
      jax.block_until_ready(m)
    contenders[f"{names[kind]}_ours_dp"] = (ours_dp, None)
    torch_step = _torch_step(c, jax.device_get(state0.params), x, y, kind=kind)
    for threads in sorted({1, threads_all}):
      contenders[f"{names[kind]}_torch_{threads}thr"] = (torch_step, threads)

  def timed(fn, threads):
    if threads is not None:
      torch.set_num_threads(threads)
    times = []
    for _ in range(c.torch_steps):
      t = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t)
    return c.batch_size / statistics.median(times)

  for fn, threads in contenders.values():  # compile / warm up
    if threads is not None:
      torch.set_num_threads(threads)
    fn()
    fn()
  rounds = []
  for r in range(c.rounds):
    order = list(contenders)
    order = order[r % len(order):] + order[:r % len(order)]
    rounds.append({name: timed(*contenders[name]) for name in order})
    print("training step round", r, {k: round(v, 1) for k, v in rounds[-1].items()}, flush=True)
  ratios = {}
  for kind in names.values():
    for suffix in ("", "_dp"):
      ratios[kind + suffix] = [rd[f"{kind}_ours{suffix}"] / max(
          v for k, v in rd.items() if k.startswith(f"{kind}_torch")) for rd in rounds]
  return {"rounds": rounds, "ratios": ratios, "devices": parallel.num_devices(mesh=mesh)}


def run(config: Any, workdir: str) -> dict:
  """Runs the benchmark.

  Returns:
    ``{run name: {"images_per_s", "fit_wall_s", "natural_accuracy", "pgd_accuracy",
    "guard_events"}, "steps": step_rates(...) or {}}`` for the runs ``natural``,
    ``pgd<pgd_steps>`` and ``fgsm_rs`` (also ``workdir/results.json``).
  """
  import jax
  import numpy as np
  from percadv_jax import attacks, data as pdata, io, train

  validate(config)
  c = config
  common.lock(workdir, c)
  train_src = pdata.load("synthetic_signs", split="train", image_size=32,
                         num_examples=c.num_train, seed=c.seed)
  test = pdata.to_arrays(pdata.load("synthetic_signs", split="test", image_size=32,
                                    num_examples=c.num_test, seed=c.seed),
                         indices=np.arange(c.eval_examples))
  test = {"image": np.asarray(test["image"], np.float32),
          "mask": np.asarray(test["mask"], np.float32).reshape(-1, 32, 32, 1),
          "label": np.asarray(test["label"], np.int32)}
  opt = train.OptimizerConfig(name="adam", learning_rate=3e-3, schedule="cosine",
                              warmup_steps=50)
  base = train.TrainConfig(model="vgg19", model_kwargs={"variant": "small", "width": c.width,
                                                        "conv_impl": c.conv_impl},
                           batch_size=c.batch_size, epochs=c.epochs, seed=c.seed, optimizer=opt,
                           checkpoint_every=1000, log_every=10)
  runs = {"natural": base}
  natural_dir = os.path.join(workdir, "runs", "natural")
  for name, attack in ((f"pgd{c.pgd_steps}", _pgd(c.pgd_steps)),
                       ("fgsm_rs", Attack("fgsm_rs", eps=EPS))):
    # Both with the guard, so both train on the same examples.
    runs[name] = dataclasses.replace(base, epochs=c.adv_epochs, adversarial=True, attack=attack,
                                     init_from=natural_dir, guard="rollback",
                                     guard_examples=c.guard_examples, guard_steps=c.guard_steps)
  results = {}
  eval_attack = {"pgd": _pgd(c.eval_pgd_steps)}
  for name, cfg in runs.items():
    run_dir = os.path.join(workdir, "runs", name)
    t0 = time.perf_counter()
    state = train.fit(cfg, run_dir, train_src, desc=name)
    wall = time.perf_counter() - t0
    r = attacks.robust_accuracy(train.make_logits_fn(state.apply_fn, state.variables()),
                                test["image"], test["label"], eval_attack,
                                key=jax.random.PRNGKey(1), batch_size=100).summary()
    events = [e for e in io.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
              if e.get("event") == "catastrophic_overfitting"]
    results[name] = {"images_per_s": _images_per_sec(run_dir, c.batch_size), "fit_wall_s": wall,
                     "natural_accuracy": r["clean"], "pgd_accuracy": r["robust"],
                     "guard_events": events}
    print(name, results[name], flush=True)
    io.write_json(os.path.join(workdir, "results.json"), results)
  threads_all = len(os.sched_getaffinity(0))
  results["steps"] = {} if "torch" in c.skip else step_rates(c, threads_all=threads_all)
  io.write_json(os.path.join(workdir, "results.json"), results)

  lines = markdown(c, results, list(runs), threads_all)
  common.record(c, "benchmark_training", "\n".join(lines))
  print("\n".join(lines))
  return results


def markdown(c: Any, results: dict, runs: list[str], threads_all: int) -> list[str]:
  """The results file's section (lines): the runs' rates and accuracies, PyTorch's rates."""
  pname = f"pgd{c.pgd_steps}"
  fg, pg = results["fgsm_rs"], results[pname]
  steps = results["steps"]
  lines = [
      f"Demo masks-study data (synthetic signs, {c.num_train} train, 32 px, full image), small "
      f"VGG-19 width {c.width} (conv_impl={c.conv_impl}), batch {c.batch_size}: natural "
      f"{c.epochs} epochs, then {c.adv_epochs} adversarial fine-tuning epochs; Linf eps 8/255; "
      f"accuracy on {c.eval_examples} test images, PGD-{c.eval_pgd_steps} step 2/255. Process "
      f"CPUs: "
      f"{threads_all} (os.sched_getaffinity).", "",
      f"| run | training images/s (train.fit) | natural acc | PGD-{c.eval_pgd_steps} acc | "
      "guard |",
      "|---|---|---|---|---|"]
  for name in runs:
    r = results[name]
    lines.append(f"| {name} | {r['images_per_s']:.1f} | {100 * r['natural_accuracy']:.1f}% | "
                 f"{100 * r['pgd_accuracy']:.1f}% | "
                 f"{'collapse: ' + r['guard_events'][0]['action'] if r['guard_events'] else ''} |")
  lines += ["", f"- FGSM-RS / PGD-{c.pgd_steps} training images/s: "
            f"**{fg['images_per_s'] / pg['images_per_s']:.2f}x** (target >= 3x); "
            f"PGD-{c.eval_pgd_steps} "
            f"accuracy {100 * fg['pgd_accuracy']:.1f}% vs {100 * pg['pgd_accuracy']:.1f}% "
            f"(difference {100 * (fg['pgd_accuracy'] - pg['pgd_accuracy']):+.1f} points)."]
  if steps:
    names = list(steps["rounds"][0])
    lines += ["", f"One training step on one resident random batch, ours (`train.jit_train_step`) "
              f"and eager PyTorch (same weights), {len(steps['rounds'])} interleaved rounds "
              f"(median of {c.torch_steps} steps each); images/s:", "",
              "| contender | min | median | max |", "|---|---|---|---|"]
    for n in names:
      v = [rd[n] for rd in steps["rounds"]]
      lines.append(f"| {n} | {min(v):.1f} | {statistics.median(v):.1f} | {max(v):.1f} |")
    lines.append("")
    for name, ratios in steps["ratios"].items():
      kind, dp = name.removesuffix("_dp"), name.endswith("_dp")
      where = (f"data-parallel over {steps.get('devices', '?')} JAX devices" if dp
               else "one device")
      lines.append(f"- {kind} training step, ours ({where}) / best PyTorch, same round: "
                   f"**{statistics.median(ratios):.2f}** [{min(ratios):.2f}, {max(ratios):.2f}]"
                   + (" (target >= 1)." if kind == pname else "."))
    for kind in dict.fromkeys(name.removesuffix("_dp") for name in steps["ratios"]):
      gain = [rd[f"{kind}_ours_dp"] / rd[f"{kind}_ours"] for rd in steps["rounds"]]
      lines.append(f"- {kind} training step, data-parallel / one device, same round: "
                   f"**{statistics.median(gain):.2f}x** [{min(gain):.2f}, {max(gain):.2f}].")
    lines.append(LIMIT)
  lines.append(
      f"- The guard (PGD-{c.guard_steps} accuracy on {c.guard_examples} held-out training images "
      "after every epoch; rollback when it falls by more than 0.2) is on in both adversarial "
      "runs; a collapse shows in the guard column. The train.fit rates include the loop "
      "(batches, logging, the guard, checkpoints).")
  return lines
