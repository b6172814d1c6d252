r"""Robustness sweep: a grid attack x eps x steps x checkpoint, sharded over devices and hosts.

Every cell is one robust-accuracy evaluation of one checkpoint on the test split, spread over all
devices of all processes (``percadv_jax.parallel.evaluate``: one "data" mesh axis; each process
reads only its examples). Finished cells are kept in ``results.json`` (rewritten atomically after
every cell by process 0) and skipped on restart, so a killed sweep continues where it stopped and
ends with the same file as an uninterrupted one. At the end process 0 writes ``cells.csv`` /
``cells.md`` (all cells), ``accuracy_vs_eps.png`` and ``config.json``; ``metrics.jsonl`` holds the
per-cell timings (kept out of ``results.json`` so that file is reproducible).

Usage::

  python -m experiments.sweep --workdir=/tmp/sweep --checkpoints=/tmp/train_nat,/tmp/train_adv \
      --attacks=pgd,apgd --eps=0,2/255,4/255,8/255 --steps=10,20 --num_examples=1000
  python -m experiments.sweep --workdir=/tmp/sweep --config=experiments/configs/sweep.json
  # two hosts (or two local processes), CPU or GPU:
  python -m experiments.sweep --workdir=... --coordinator_address=10.0.0.1:1234 \
      --num_processes=2 --process_id=0     # and --process_id=1 on the other host

A checkpoint is a training workdir written by ``percadv_jax.train.fit`` (its ``config.json``
names the model and the masked setting; the latest checkpoint is restored), or ``init:SEED``: the
untrained ``--model`` initialised with SEED (smoke tests, benchmarks). Attacks: ``fgsm`` (one
step; the steps axis does not apply), ``pgd`` (step size ``step_size_factor * eps / steps``),
``apgd`` (APGD-CE). ``eps = 0`` cells report clean accuracy. Robust accuracy counts an example
only if it is classified correctly both clean and under the attack.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import json
import os
import time
import zlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import checks, io, parallel, precision

RESULTS = "results.json"
ATTACKS = ("fgsm", "pgd", "apgd")


class SweepInterrupted(RuntimeError):
  """Raised by ``run(..., fail_after=k)`` after k new cells: a crash injected for tests."""


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """The grid and the evaluation setup.

  Attributes:
    checkpoints: training workdirs or ``"init:SEED"`` entries.
    attacks: subset of ("fgsm", "pgd", "apgd").
    eps: radii in pixel units ([0,1] images; Linf per pixel, L2 per image).
    steps: attack iterations (pgd, apgd).
    norm: "linf" or "l2".
    restarts: random restarts per attack (per-example worst case).
    step_size_factor: PGD step size = factor * eps / steps (Madry: 2.5).
    dataset, split, data_dir, image_size, num_examples, dataset_kwargs: the evaluation data
      (``percadv_jax.data.load``); ``num_examples=0`` keeps the dataset's default size.
    model, model_kwargs, masked: the architecture and setting of ``init:`` checkpoints (a
      ``get_model`` name or ``"package.module:Factory"``, see ``make_model``).
    batch_size: global evaluation batch (a multiple of the device count).
    seed: attack randomness (each cell's key is derived from the seed and the cell's id).
    precision: "float32" or "bfloat16" (bf16 network compute, f32 perturbations and logits).
  """
  checkpoints: tuple[str, ...] = ("init:0",)
  attacks: tuple[str, ...] = ("pgd",)
  eps: tuple[float, ...] = (0.0, 2 / 255, 4 / 255, 8 / 255)
  steps: tuple[int, ...] = (10,)
  norm: str = "linf"
  restarts: int = 1
  step_size_factor: float = 2.5
  dataset: str = "synthetic_signs"
  split: str = "test"
  data_dir: str | None = None
  image_size: int | None = None
  num_examples: int = 512
  dataset_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  model: str = "vgg19"
  model_kwargs: Mapping[str, Any] = dataclasses.field(
      default_factory=lambda: {"variant": "small", "width": 0.25})
  masked: bool = False
  batch_size: int = 128
  seed: int = 0
  precision: str = "float32"

  def validate(self) -> None:
    if not self.checkpoints:
      raise ValueError("checkpoints is empty: give at least one training workdir or init:SEED")
    for a in self.attacks:
      checks.check_choice(a, "attack", ATTACKS)
    if not self.attacks or not self.eps or not self.steps:
      raise ValueError("attacks, eps and steps each need at least one value")
    for e in self.eps:
      checks.check_positive(e, "eps", allow_zero=True)
    for s in self.steps:
      if int(s) != s or s < 1:
        raise ValueError(f"steps must be positive integers, got {s!r}")
    checks.check_choice(self.norm, "norm", {"linf", "l2"})
    checks.check_positive(self.restarts, "restarts")
    checks.check_positive(self.step_size_factor, "step_size_factor")
    checks.check_positive(self.batch_size, "batch_size")
    checks.check_positive(self.num_examples, "num_examples", allow_zero=True)
    precision.compute_dtype(self.precision)
    for c in self.checkpoints:
      if c.startswith("init:"):
        try:
          int(c[5:])
        except ValueError:
          raise ValueError(f"checkpoint {c!r}: expected init:SEED with an integer SEED") from None
      elif not os.path.exists(os.path.join(c, "config.json")):
        raise ValueError(f"checkpoint {c!r} is neither init:SEED nor a training workdir "
                         "(no config.json there)")

  def to_dict(self) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(self)))

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "SweepConfig":
    d = dict(d)
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"unknown sweep config keys {sorted(unknown)}")
    for k in ("checkpoints", "attacks"):
      if k in d:
        d[k] = tuple(str(v) for v in d[k])
    if "eps" in d:
      d["eps"] = tuple(parse_number(v) for v in d["eps"])
    if "steps" in d:
      d["steps"] = tuple(int(v) for v in d["steps"])
    for k in ("dataset_kwargs", "model_kwargs"):
      if k in d:
        d[k] = dict(d[k])
    return cls(**d)

  def setup(self) -> dict:
    """What every cell's result depends on besides its own coordinates (checked on resume)."""
    d = self.to_dict()
    for k in ("checkpoints", "attacks", "eps", "steps"):
      d.pop(k)
    return d


def parse_number(v: Any) -> float:
  """``0.03``, ``"8/255"`` or ``"0.03"`` -> float."""
  if isinstance(v, str):
    return float(fractions.Fraction(v.strip()))
  return float(v)


@dataclasses.dataclass(frozen=True)
class Cell:
  checkpoint: str
  attack: str
  eps: float
  steps: int

  @property
  def id(self) -> str:
    return f"{self.checkpoint}|{self.attack}|eps={self.eps:.8g}|steps={self.steps}"


def grid(config: SweepConfig) -> list[Cell]:
  """All cells in a fixed order (checkpoint, attack, steps, eps); fgsm has steps=1 only, and an
  ``eps = 0`` cell (clean accuracy) appears once per checkpoint as ``attack="none"``."""
  cells, seen = [], set()
  for c in config.checkpoints:
    for a in config.attacks:
      for s in ((1,) if a == "fgsm" else config.steps):
        for e in config.eps:
          cell = Cell(c, "none", 0.0, 0) if e == 0 else Cell(c, a, float(e), int(s))
          if cell.id not in seen:
            seen.add(cell.id)
            cells.append(cell)
  return cells


# ----------------------------------------------------------------------------------------------
# Model loading and the per-example evaluation.


def make_model(name: str, *, num_classes: int, **kwargs: Any) -> Any:
  """``models.get_model(name, ...)``, or for ``"package.module:Factory"`` that factory called as
  ``Factory(num_classes=..., **kwargs)`` (a user's own Flax module for ``init:`` checkpoints)."""
  if ":" in name:
    import importlib
    mod, attr = name.split(":", 1)
    return getattr(importlib.import_module(mod), attr)(num_classes=num_classes, **kwargs)
  from percadv_jax import models
  return models.get_model(name, num_classes=num_classes, **kwargs)


@functools.lru_cache(maxsize=16)
def _init_fn(module: Any, image_shape: tuple[int, ...]):
  """Jitted ``key -> variables`` of ``module`` (one compile per architecture and image shape)."""
  return jax.jit(lambda k: module.init(k, jnp.zeros((1, *image_shape), jnp.float32),
                                       train=False))


def load_checkpoint(spec: str, config: SweepConfig, *, num_classes: int,
                    image_shape: Sequence[int]) -> tuple[Any, Any, bool, int]:
  """``(module, variables, masked, step)`` of a checkpoint spec (see module docstring)."""
  from percadv_jax import models, train
  if spec.startswith("init:"):
    module = make_model(config.model, num_classes=num_classes, **config.model_kwargs)
    variables = _init_fn(module, tuple(image_shape))(jax.random.PRNGKey(int(spec[5:])))
    return module, variables, config.masked, 0
  tc = train.TrainConfig.from_dict(io.read_json(os.path.join(spec, "config.json")))
  state = train.build(tc, num_classes=num_classes, image_shape=image_shape, total=1)
  mngr = train.checkpoint.manager(os.path.join(spec, "checkpoints"))
  try:
    if mngr.latest_step() is None:
      raise ValueError(f"checkpoint workdir {spec!r} holds no checkpoint yet")
    state = train.checkpoint.restore(mngr, state)
  finally:
    mngr.close()
  module = models.get_model(tc.model, num_classes=num_classes, **tc.model_kwargs)
  return module, state.variables(), tc.masked, int(jax.device_get(state.step))


@functools.lru_cache(maxsize=64)
def per_example_fn(module: Any, *, masked: bool, attack: str, steps: int, norm: str,
                   restarts: int, dtype: str):
  """``f({"variables", "eps", "step_size"}, batch, key) -> {"clean","robust","adversarial",
  "distance"}`` float/bool ``[B]``; one function object per static setting (one compile)."""
  from percadv_jax import attacks, train
  apply = precision.mixed_precision(module.apply, dtype=dtype)

  def f(args, batch, key):
    v, eps, step_size = args["variables"], args["eps"], args["step_size"]
    x, y, mask = batch["image"], batch["label"], batch["mask"]
    logits_fn = train.make_logits_fn(apply, v, mask=mask, masked=masked)
    x0 = train.model_input(x, mask, masked)
    clean = jnp.argmax(logits_fn(x0), -1) == y
    if attack == "none":
      return {"clean": clean, "robust": clean, "adversarial": clean,
              "distance": jnp.zeros(y.shape, jnp.float32)}
    m = mask if masked else None
    if attack == "fgsm":
      x_adv = attacks.fgsm(logits_fn, x0, y, eps=eps, norm=norm, mask=m)
    elif attack == "pgd":
      x_adv = attacks.pgd(logits_fn, x0, y, key=key, eps=eps, step_size=step_size, steps=steps,
                          norm=norm, mask=m, restarts=restarts)
    else:
      x_adv = attacks.apgd(logits_fn, x0, y, key=key, eps=eps, steps=steps, norm=norm, mask=m,
                           restarts=restarts)
    adv = jnp.argmax(logits_fn(x_adv), -1) == y
    d = (x_adv - x0).reshape(y.shape[0], -1)
    dist = jnp.max(jnp.abs(d), -1) if norm == "linf" else jnp.linalg.norm(d, axis=-1)
    return {"clean": clean, "robust": clean & adv, "adversarial": adv, "distance": dist}
  return f


def cell_key(seed: int, cell: Cell) -> jax.Array:
  """The cell's PRNG key: a function of the seed and the cell id only (order-free)."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(cell.id.encode()) & 0x7FFFFFFF)


# ----------------------------------------------------------------------------------------------
# The run.


def _load_results(path: str, setup: dict) -> dict[str, dict]:
  if not os.path.exists(path):
    return {}
  old = io.read_json(path)
  if old.get("setup") != json.loads(json.dumps(setup)):
    raise ValueError(f"{path} was written by a sweep with another setup; use another workdir "
                     f"or delete it (old: {old.get('setup')}, new: {setup})")
  return {c["id"]: c for c in old.get("cells", [])}


def _write_results(path: str, setup: dict, cells: list[Cell], done: dict[str, dict]) -> None:
  io.write_json(path, {"setup": setup,
                       "cells": [done[c.id] for c in cells if c.id in done]})


def run(config: SweepConfig, workdir: str, *, fail_after: int = 0,
        mesh: Any = None) -> list[dict]:
  """Runs (or resumes) the sweep of ``config`` in ``workdir``; returns all cells' records.

  Args:
    config: the grid and setup.
    workdir: output directory (results.json, cells.csv/md, accuracy_vs_eps.png, config.json,
      metrics.jsonl). Only process 0 writes.
    fail_after: if > 0, raise ``SweepInterrupted`` after this many newly finished cells (the
      crash a resume test injects; results of finished cells are already on disk).
    mesh: the device mesh (default: every device of every process).

  Returns:
    One dict per cell in grid order: checkpoint, attack, eps, steps, clean, robust,
    adversarial, distance (mean attack distance), count, checkpoint_step, id.
  """
  from percadv_jax import data as data_lib
  config.validate()
  mesh = parallel.make_mesh() if mesh is None else mesh
  cells = grid(config)
  setup = config.setup()
  path = os.path.join(workdir, RESULTS)
  main = parallel.is_main_process()
  if main:
    os.makedirs(workdir, exist_ok=True)
    io.write_json(os.path.join(workdir, "config.json"), config.to_dict())
    done = _load_results(path, setup)
    flags = np.array([c.id in done for c in cells], np.int32)
  else:
    done, flags = {}, np.zeros((len(cells),), np.int32)
  flags = parallel.broadcast_from_main(flags)  # every process runs the same pending cells
  if main:
    done = {c.id: done[c.id] for c, f in zip(cells, flags) if f}

  kw = dict(config.dataset_kwargs)
  if config.num_examples:
    kw["num_examples"] = config.num_examples
  src = data_lib.load(config.dataset, split=config.split, data_dir=config.data_dir,
                      image_size=config.image_size, **kw)
  total = len(src)
  sample = data_lib.to_arrays(src, np.arange(1))
  num_classes = src.info.num_classes
  fetch = (lambda idx: data_lib.to_arrays(src, idx), total)  # each process reads its rows only

  loaded: dict[str, tuple] = {}
  new = 0
  bar = io.progress(total=len(cells), initial=int(flags.sum()), desc="sweep", unit="cell")
  try:
    for cell, finished in zip(cells, flags):
      if finished:
        continue
      if cell.checkpoint not in loaded:
        loaded[cell.checkpoint] = load_checkpoint(
            cell.checkpoint, config, num_classes=num_classes,
            image_shape=sample["image"].shape[1:])
      module, variables, masked, ckpt_step = loaded[cell.checkpoint]
      fn = per_example_fn(module, masked=masked, attack=cell.attack, steps=cell.steps,
                          norm=config.norm, restarts=config.restarts, dtype=config.precision)
      step_size = config.step_size_factor * cell.eps / max(cell.steps, 1)
      args = {"variables": variables, "eps": jnp.float32(cell.eps),
              "step_size": jnp.float32(step_size)}
      t0 = time.perf_counter()
      means = parallel.evaluate(fn, args, fetch, batch_size=config.batch_size, mesh=mesh,
                                key=cell_key(config.seed, cell))
      seconds = time.perf_counter() - t0
      record = {"id": cell.id, "checkpoint": cell.checkpoint, "attack": cell.attack,
                "eps": cell.eps, "steps": cell.steps, "checkpoint_step": ckpt_step,
                **{k: means[k] for k in ("clean", "robust", "adversarial", "distance",
                                         "count")}}
      if main:
        done[cell.id] = record
        _write_results(path, setup, cells, done)
        io.append_jsonl(os.path.join(workdir, "metrics.jsonl"),
                        {"id": cell.id, "seconds": seconds, "images_per_sec": total / seconds,
                         "devices": parallel.num_devices(mesh),
                         "processes": jax.process_count()})
      bar.update(1)
      new += 1
      if fail_after and new >= fail_after:
        raise SweepInterrupted(f"injected failure after {new} new cells")
  finally:
    bar.close()
  parallel.sync("sweep_done")
  if not main:
    return []
  rows = [done[c.id] for c in cells]
  columns = ["checkpoint", "attack", "eps", "steps", "clean", "robust", "adversarial",
             "distance", "count", "checkpoint_step"]
  io.write_table(os.path.join(workdir, "cells"), rows, columns)
  plot(rows, os.path.join(workdir, "accuracy_vs_eps.png"), norm=config.norm)
  return rows


def plot(rows: Sequence[Mapping[str, Any]], path: str, *, norm: str = "linf") -> None:
  """Robust accuracy vs eps: one panel per checkpoint, one line per (attack, steps)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  ckpts = list(dict.fromkeys(r["checkpoint"] for r in rows))
  fig, axes = plt.subplots(1, len(ckpts), figsize=(4.5 * len(ckpts), 3.6), squeeze=False)
  scale = 255.0 if norm == "linf" else 1.0
  for ax, ck in zip(axes[0], ckpts):
    mine = [r for r in rows if r["checkpoint"] == ck]
    clean = [r for r in mine if r["attack"] == "none"]
    lines = list(dict.fromkeys((r["attack"], r["steps"]) for r in mine if r["attack"] != "none"))
    for a, s in lines:
      pts = sorted([(0.0, c["robust"]) for c in clean]
                   + [(r["eps"], r["robust"]) for r in mine if (r["attack"], r["steps"]) == (a, s)])
      label = a.upper() if a == "fgsm" else f"{a.upper()}-{s}"
      ax.plot([p[0] * scale for p in pts], [p[1] for p in pts], marker="o", label=label)
    if not lines and clean:
      ax.plot([0.0], [clean[0]["robust"]], marker="o", label="clean")
    ax.set_title(os.path.basename(ck.rstrip("/")) or ck, fontsize=9)
    ax.set_xlabel("eps (x 1/255)" if norm == "linf" else "eps (L2)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  io.save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# Command line.


_FLAGS = [  # (kind, name, default, help[, enum values])
    ("string", "workdir", None, "Output directory (results.json, cells.csv, PNG)."),
    ("string", "config", None, "JSON file of SweepConfig fields; command-line flags override."),
    ("list", "checkpoints", ["init:0"], "Training workdirs or init:SEED."),
    ("list", "attacks", ["pgd"], f"Attacks, from {list(ATTACKS)}."),
    ("list", "eps", ["0", "2/255", "4/255", "8/255"], "Radii (fractions allowed)."),
    ("list", "steps", ["10"], "Attack iterations."),
    ("enum", "norm", "linf", "Threat model norm.", ["linf", "l2"]),
    ("integer", "restarts", 1, "Random restarts."),
    ("float", "step_size_factor", 2.5, "PGD step = factor * eps / steps."),
    ("string", "dataset", "synthetic_signs", "percadv_jax.data name."),
    ("string", "split", "test", "Dataset split."),
    ("string", "data_dir", None, "Prepared data directory."),
    ("integer", "image_size", None, "Image side (default: the dataset's)."),
    ("integer", "num_examples", 512, "Examples to evaluate (0 = the dataset's size)."),
    ("string", "model", "vgg19", "Architecture of init:SEED checkpoints."),
    ("string", "model_kwargs", '{"variant": "small", "width": 0.25}',
     "JSON kwargs of get_model for init:SEED checkpoints."),
    ("bool", "masked", False, "Masked setting for init:SEED checkpoints."),
    ("integer", "batch_size", 128, "Global batch (a multiple of the device count)."),
    ("integer", "seed", 0, "Attack randomness."),
    ("enum", "precision", "float32", "Network compute dtype.", ["float32", "bfloat16"]),
    ("integer", "fail_after", 0, "Testing: crash after this many new cells."),
    ("string", "coordinator_address", None, "Multi-host: host:port of process 0."),
    ("integer", "num_processes", None, "Multi-host: number of processes."),
    ("integer", "process_id", None, "Multi-host: this process's id."),
]


def define_flags(flag_values=None) -> None:
  """Defines the sweep's flags on ``flag_values`` (default: absl's global ``FLAGS``)."""
  from absl import flags
  fv = flags.FLAGS if flag_values is None else flag_values
  for kind, name, default, help_text, *enum in _FLAGS:
    define = getattr(flags, "DEFINE_" + kind)
    if enum:
      define(name, default, enum[0], help_text, flag_values=fv)
    else:
      define(name, default, help_text, flag_values=fv)
  flags.mark_flag_as_required("workdir", flag_values=fv)


def config_from_flags(flag_values) -> SweepConfig:
  """A ``SweepConfig`` from ``--config`` (if given) overridden by flags set on the command line."""
  fields = {f.name for f in dataclasses.fields(SweepConfig)}
  d: dict[str, Any] = {}
  if flag_values.config:
    d.update(io.read_json(flag_values.config))
  for name in fields:
    if name not in flag_values:
      continue
    if flag_values[name].present or (not flag_values.config and name not in d):
      value = flag_values[name].value
      if name == "model_kwargs":
        value = json.loads(value)
      d[name] = value
  return SweepConfig.from_dict(d)


def main(argv: Sequence[str]) -> None:
  del argv
  from absl import flags
  fv = flags.FLAGS
  parallel.initialize(fv.coordinator_address, fv.num_processes, fv.process_id)
  config = config_from_flags(fv)
  rows = run(config, fv.workdir, fail_after=fv.fail_after)
  if parallel.is_main_process():
    print(io.markdown_table(rows, ["checkpoint", "attack", "eps", "steps", "clean", "robust"]))


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(main)
