"""The robustness sweep: a grid attack x eps x steps x checkpoint over every device and host.

Every cell is one ``experiments.evaluation.evaluate`` call (robust accuracy of one checkpoint on
the evaluation data, sharded over all devices of all processes). Cells are identified by the
checkpoint's path *and step*, the attack, eps and steps; each finished cell is kept in
``workdir/evaluations`` and never deleted, so a rerun skips finished cells, a changed grid keeps
the old cells on disk (and reuses them when they come back), and a checkpoint that trained further
is evaluated anew at its new step instead of being mixed with its old numbers. ``results.json``,
``cells.csv/.md`` and ``accuracy_vs_eps.png`` show the current grid; ``setup.json`` locks what
every cell depends on besides its coordinates (data, model of ``init:`` entries, norm, seed...),
and ``config.json`` is the last accepted configuration.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import zlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from experiments import evaluation
from percadv_jax import attacks as attacks_lib
from percadv_jax import checks, io, parallel, precision, train

RESULTS = "results.json"


@dataclasses.dataclass(frozen=True)
class Cell:
  checkpoint: str
  attack: str
  eps: float
  steps: int

  @property
  def id(self) -> str:
    return f"{self.checkpoint}|{self.attack}|eps={self.eps:.8g}|steps={self.steps}"


def grid(config: Any) -> list[Cell]:
  """All cells in a fixed order (checkpoint, attack, steps, eps); fgsm has steps=1 only, and an
  ``eps = 0`` cell (clean accuracy) appears once per checkpoint as ``attack="none"``."""
  cells, seen = [], set()
  for c in config.checkpoints:
    for a in config.attacks:
      for s in (config.steps if attacks_lib.KINDS[a][1] else (1,)):
        for e in config.eps:
          cell = Cell(c, "none", 0.0, 0) if e == 0 else Cell(c, a, float(e), int(s))
          if cell.id not in seen:
            seen.add(cell.id)
            cells.append(cell)
  return cells


def setup(config: Any) -> dict:
  """What every cell depends on besides its own coordinates (locked in ``setup.json``)."""
  d = io.config_dict(config)
  for k in ("checkpoints", "attacks", "eps", "steps"):
    d.pop(k)
  return d


def validate(config: Any) -> None:
  """Checks the whole configuration before any work (changing nothing); raises ValueError
  naming the field. The data and the checkpoints are opened by ``check_inputs``."""
  from experiments import common
  from percadv_jax import data as data_lib
  for f in ("checkpoints", "attacks"):
    common.check_names(config[f], f)
  if not config.checkpoints:
    raise ValueError("checkpoints is empty: give at least one training workdir or init:SEED")
  if not config.attacks or not config.eps or not config.steps:
    raise ValueError("attacks, eps and steps each need at least one value")
  for a in config.attacks:
    checks.check_choice(a, "attacks entry", tuple(attacks_lib.KINDS))
  for e in config.eps:
    checks.check_positive(e, "eps entry", allow_zero=True)
  for s in config.steps:
    checks.check_int(s, "steps entry", minimum=1)
  checks.check_choice(config.data.dataset, "data.dataset", data_lib.known_datasets())
  checks.check_positive(config.data.image_size, "data.image_size", allow_zero=True)
  checks.check_choice(config.norm, "norm", ("linf", "l2"))
  checks.check_positive(config.restarts, "restarts")
  checks.check_positive(config.step_factor, "step_factor")
  checks.check_positive(config.batch_size, "batch_size")
  checks.check_positive(config.data.num_examples, "data.num_examples", allow_zero=True)
  precision.compute_dtype(config.precision)
  for c in config.checkpoints:
    if c.startswith("init:"):
      try:
        int(c[5:])
      except ValueError:
        raise ValueError(f"checkpoint {c!r}: expected init:SEED with an integer SEED") from None
    elif not os.path.exists(os.path.join(c, "config.json")):
      raise ValueError(f"checkpoint {c!r} is neither init:SEED nor a training workdir "
                       "(no config.json there)")


def make_model(name: str, *, num_classes: int, **kwargs: Any) -> Any:
  """``models.get_model(name, ...)``, or for ``"package.module:Factory"`` that factory called as
  ``Factory(num_classes=..., **kwargs)`` (a user's own Flax module for ``init:`` checkpoints)."""
  if ":" in name:
    import importlib
    mod, attr = name.split(":", 1)
    try:
      factory = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
      raise ValueError(f"model.name {name!r}: cannot import {attr} from {mod} ({e})") from None
    return factory(num_classes=num_classes, **kwargs)
  from percadv_jax import models
  return models.get_model(name, num_classes=num_classes, **kwargs)


@functools.lru_cache(maxsize=16)
def _init_fn(module: Any, image_shape: tuple[int, ...]):
  """Jitted ``key -> variables`` of ``module`` (one compile per architecture and image shape)."""
  return jax.jit(lambda k: module.init(k, jnp.zeros((1, *image_shape), jnp.float32),
                                       train=False))


@functools.lru_cache(maxsize=16)
def _apply(module: Any, dtype: str):
  return precision.mixed_precision(module.apply, dtype=dtype)


def load_checkpoint(spec: str, config: Any, *, num_classes: int,
                    image_shape: Sequence[int]) -> tuple[Any, Any, bool, int]:
  """``(module, variables, masked, step)`` of a checkpoint spec (see the module docstring)."""
  from percadv_jax import models
  if spec.startswith("init:"):
    module = make_model(config.model.name, num_classes=num_classes,
                        **dict(config.model.kwargs))
    variables = _init_fn(module, tuple(image_shape))(jax.random.PRNGKey(int(spec[5:])))
    return module, variables, bool(config.masked), 0
  tc = train_config(spec)
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


def train_config(spec: str) -> train.TrainConfig:
  """The ``TrainConfig`` of the training workdir ``spec`` (its ``config.json``).

  Raises:
    ValueError: the file is not valid JSON, or not a training configuration (naming it and
      what is wrong).
  """
  path = os.path.join(spec, "config.json")
  try:
    stored = io.json_object(io.read_json(path), path, "a training configuration")
  except ValueError as e:
    raise ValueError(f"checkpoint {spec!r}: {e}") from None
  try:
    tc = train.TrainConfig.from_dict(stored)
    tc.validate()
  except (TypeError, ValueError) as e:
    raise ValueError(f"checkpoint {spec!r}: {path} is not a training configuration "
                     f"({e})") from None
  return tc


def check_inputs(config: Any) -> tuple[Any, dict, dict[str, tuple]]:
  """Opens the data and every checkpoint before the workdir is locked.

  Returns:
    ``(source, arrays, loaded)``: the evaluation data and ``{checkpoint: load_checkpoint(...)}``
    (an ``init:`` model initialised at the data's image size).

  Raises:
    ValueError: an unknown split or model, data that is missing, images too small for a
      model, a checkpoint workdir without a checkpoint or with a bad ``config.json``.
  """
  from experiments import common
  from experiments.configs import data as data_config
  from percadv_jax import data as data_lib
  from percadv_jax.data import raw
  d = config.data
  if d.dataset in common.PREPARED:  # read with the cache's own options: any prepared cache
    fields = data_config.get(d.dataset)
    fields.update(data_dir=d.data_dir or raw.default_data_dir(), image_size=d.image_size)
    common.check_prepared(fields, (d.split,), any_variant=True)
  kw = {"num_classes": d.num_classes} if d.num_classes else {}
  if d.num_examples:
    kw["num_examples"] = d.num_examples
  src = data_lib.load(d.dataset, split=d.split, data_dir=d.data_dir or None,
                      image_size=d.image_size or None, **kw)
  arrays = data_lib.to_arrays(src)
  loaded = {}
  for c in dict.fromkeys(config.checkpoints):
    loaded[c] = load_checkpoint(c, config, num_classes=src.info.num_classes,
                                image_shape=arrays["image"].shape[1:])
  return src, arrays, loaded


def cell_key(seed: int, cell: Cell) -> jax.Array:
  """The cell's PRNG key: a function of the seed and the cell id only (order-free)."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(cell.id.encode()) & 0x7FFFFFFF)


def attack(cell: Cell, config: Any, masked: bool) -> attacks_lib.Attack:
  """The cell's ``Attack`` (``eps = 0``, attack ``"none"``: FGSM of radius 0, the identity)."""
  if cell.attack == "none":
    return attacks_lib.Attack("fgsm", eps=0.0, norm=config.norm, masked=masked)
  return attacks_lib.Attack(cell.attack, eps=cell.eps, steps=max(cell.steps, 1),
                            norm=config.norm, restarts=config.restarts,
                            step_factor=config.step_factor if cell.attack == "pgd" else None,
                            masked=masked)


def run(config: Any, workdir: str, *, mesh: Any = None) -> list[dict]:
  """Runs (or resumes) the sweep of ``config`` in ``workdir``; returns the current grid's cells.

  Returns:
    One dict per cell in grid order: id, checkpoint, checkpoint_step, attack, eps, steps, clean,
    robust (correct clean and under the attack), distance (mean attack distance in ``norm``),
    count.
  """
  validate(config)
  mesh = parallel.make_mesh() if mesh is None else mesh
  main = parallel.is_main_process()
  _, arrays, loaded = check_inputs(config)
  if main:
    io.lock_config(workdir, setup(config), name="setup.json")
    io.write_json(os.path.join(workdir, "config.json"), io.config_dict(config))  # accepted
  store = os.path.join(workdir, "evaluations")
  rows = []
  cells = grid(config)
  bar = io.progress(total=len(cells), desc="sweep", unit="cell")
  try:
    for cell in cells:
      module, variables, masked, step = loaded[cell.checkpoint]
      logits_fn = train.make_logits_fn(_apply(module, config.precision), variables)
      data = {"image": train.model_input(arrays["image"], arrays["mask"], masked),
              "mask": arrays["mask"], "label": arrays["label"]}
      spec = {"checkpoint": cell.checkpoint, "checkpoint_step": step, "cell": cell.id,
              "setup": setup(config)}
      s = evaluation.evaluate(store if main else None, spec, logits_fn=logits_fn, data=data,
                              attacks={cell.attack: attack(cell, config, masked)},
                              key=cell_key(config.seed, cell), batch_size=config.batch_size,
                              mesh=mesh).summary()
      rows.append({"id": cell.id, "checkpoint": cell.checkpoint, "checkpoint_step": step,
                   "attack": cell.attack, "eps": cell.eps, "steps": cell.steps,
                   "clean": s["clean"], "robust": s["robust"],
                   "distance": s[f"{config.norm}_mean"][cell.attack], "count": s["n"]})
      bar.update(1)
  finally:
    bar.close()
  parallel.sync("sweep_done")
  if not main:
    return rows
  io.write_json(os.path.join(workdir, RESULTS), {"setup": setup(config), "cells": rows})
  columns = ["checkpoint", "checkpoint_step", "attack", "eps", "steps", "clean", "robust",
             "distance", "count"]
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
    step = mine[0]["checkpoint_step"]
    ax.set_title(f"{os.path.basename(ck.rstrip('/')) or ck} (step {step})", fontsize=9)
    ax.set_xlabel("eps (x 1/255)" if norm == "linf" else "eps (L2)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  io.save_figure(fig, path)
