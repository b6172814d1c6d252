r"""Benchmark: the JAX quality-ball LP solver against CVXPY (Clarabel) and against a jaxopt variant.

Same instances for all (skimage photographs resized to each size, gradients ~ N(0, 1)); window 8,
stride 4, e1 = e2 = 0.05 by default. For every size:

* CVXPY per image (build + solve wall time and Clarabel's own solve time), ``solve_linear`` on one
  image and on a batch of ``batch`` (median of ``repeats`` timed runs after a warm-up/compile
  run), the objective gap to CVXPY and the violation. CVXPY on the batch is estimated as
  ``batch`` x its single-image time (stated in the table).
* The ADMM engine as kept (box and luminance intervals projected by
  ``jaxopt.projection.projection_box``, the window balls in closed form in the cell layout)
  against the same engine whose window balls are projected by ``jaxopt.projection
  .projection_l2_ball``, vmapped over the windows of each group (which needs the windows cut out
  of the cell layout and put back at every iteration): ``admm.solve``'s ``projection``
  ``"closed_form"`` and ``"jaxopt_l2"``. Both on the same batch, timed
  interleaved in the same run (alternating order, ``repeats`` rounds): the ratio of medians,
  the iterations (equal when the variant computes the same projections) and the largest
  relative objective difference.

Writes into the workdir: ``config.json``, ``metrics.jsonl``, ``results.md`` / ``.csv`` and
``results.json``; with ``record`` also the ``benchmark_perceptual`` section of the results file.

  python -m experiments.benchmark --config=experiments/configs/benchmark.py:perceptual \
      --workdir=/tmp/bench_perc --config.sizes="(32,64,224)"
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from experiments.benchmarks import common
from percadv_jax import checks


def validate(config: Any) -> None:
  """Checks the configuration before any work; raises ValueError naming the field."""
  common.check_output(config)
  common.positive_ints(config, ("batch", "window", "stride", "repeats", "cvxpy_batch"))
  common.positive_ints(config, ("seed",), allow_zero=True)
  sizes = config.sizes
  if not isinstance(sizes, (tuple, list)):
    raise ValueError(f"sizes must be a tuple of image sides (integers), got {sizes!r}")
  if not sizes:
    raise ValueError("sizes is empty: give at least one image side")
  for s in sizes:
    checks.check_int(s, "sizes entry", minimum=config.window)
  checks.check_float(config.eps, "eps", minimum=0, min_inclusive=False)
  checks.check_float(config.tol, "tol", minimum=0, min_inclusive=False)


def _instances(size: int, n: int, seed: int):
  import numpy as np
  import skimage.data
  from skimage.transform import resize
  names = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina"]
  rng = np.random.default_rng(seed)
  xs = []
  for i in range(n):
    img = getattr(skimage.data, names[i % len(names)])()[..., :3]
    h, w = img.shape[:2]
    s = min(h, w) - 8 * (i // len(names))
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    xs.append(resize(img, (size, size), anti_aliasing=True))
  x = np.stack(xs).astype(np.float32)
  return x, rng.normal(size=x.shape).astype(np.float32)


def _jaxopt_row(x, g, ball, tol, repeats):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from percadv_jax.perceptual import admm, solver
  # The engine with each group projection (its static ``projection``: one trace each).
  kept = functools.partial(admm.solve, projection="closed_form")
  variant = functools.partial(admm.solve, projection="jaxopt_l2")
  n = x.shape[0]
  args = (jnp.asarray(x), jnp.asarray(g), jnp.ones(x.shape, jnp.float32), None,
          jnp.full((n,), solver.LP_RHO, jnp.float32))
  kw = dict(ball=ball, mode="lp", max_iters=solver.LP_MAX_ITERS, tol=tol,
            check_every=solver.CHECK_EVERY, alpha=solver.LP_ALPHA, repair=solver.LP_REPAIR,
            max_blocks=solver.LP_MAX_BLOCKS)
  outs = {"kept": jax.block_until_ready(kept(*args, **kw)),
          "jaxopt_l2": jax.block_until_ready(variant(*args, **kw))}   # compile + warm-up
  ts = {"kept": [], "jaxopt_l2": []}
  fns = [("kept", kept), ("jaxopt_l2", variant)]
  for r in range(max(repeats, 2)):
    for name, fn in (fns if r % 2 == 0 else fns[::-1]):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args, **kw))
      ts[name].append(time.perf_counter() - t0)
  obj = {k: np.sum(g * np.asarray(v[0]), axis=(1, 2, 3)) for k, v in outs.items()}
  return {
      "kept_s": float(np.median(ts["kept"])), "jaxopt_l2_s": float(np.median(ts["jaxopt_l2"])),
      "ratio_jaxopt_l2_over_kept": float(np.median(ts["jaxopt_l2"]) / np.median(ts["kept"])),
      "iterations_equal": bool(np.array_equal(np.asarray(outs["kept"][1].iterations),
                                              np.asarray(outs["jaxopt_l2"][1].iterations))),
      "objective_rel_diff_max": float(np.max(np.abs(obj["jaxopt_l2"] - obj["kept"])
                                             / np.abs(obj["kept"]))),
  }


def run(config: Any, workdir: str) -> dict:
  """Runs the benchmark.

  Returns:
    ``{"rows": [...], "jaxopt": [...]}``: per size a ``single`` and a ``batch<batch>`` row
    against CVXPY, and one row of the jaxopt comparison; also written to ``workdir`` and, with
    ``record``, to the results file.
  """
  import jax
  import numpy as np
  from percadv_jax import io
  from percadv_jax.perceptual import QualityBall, solve_linear, solve_linear_cvxpy

  validate(config)
  common.lock(workdir, config)
  ball = QualityBall(window=config["window"], stride=config["stride"],
                     eps_structure=config["eps"], eps_luminance=config["eps"])
  rows, jaxopt_rows = [], []
  for size in config["sizes"]:
    x, g = _instances(size, config["batch"], config["seed"])
    # CVXPY reference on the first cvxpy_batch images.
    nc = max(1, config["cvxpy_batch"])
    t0 = time.perf_counter()
    ref, infos = solve_linear_cvxpy(x[:nc], g[:nc], ball, return_info=True)
    t_cvx = (time.perf_counter() - t0) / nc
    t_clar = float(np.mean([i["solve_time"] for i in infos]))
    obj_ref = np.sum(g[:nc] * ref, axis=(1, 2, 3))

    def timed(xb, gb):
      out = solve_linear(xb, gb, ball, tol=config["tol"], return_info=True)
      jax.block_until_ready(out)                          # compile + warm-up
      ts = []
      for _ in range(config["repeats"]):
        t0 = time.perf_counter()
        out = jax.block_until_ready(solve_linear(xb, gb, ball, tol=config["tol"],
                                                 return_info=True))
        ts.append(time.perf_counter() - t0)
      return out, float(np.median(ts))

    for label, nb in (("single", 1), (f"batch{config['batch']}", config["batch"])):
      (d, info), t = timed(x[:nb], g[:nb])
      d = np.asarray(d)
      k = min(nb, nc)
      obj = np.sum(g[:k] * d[:k], axis=(1, 2, 3))
      gap = float(np.max((obj_ref[:k] - obj) / np.abs(obj_ref[:k])))
      viol = float(np.max(np.asarray(ball.violation(x[:nb], d))))
      row = {
          "size": f"{size}x{size}x3", "run": label,
          "jax_s_per_image": t / nb,
          "cvxpy_s_per_image": t_cvx, "clarabel_solve_s_per_image": t_clar,
          "speedup_vs_cvxpy": t_cvx / (t / nb),
          "speedup_vs_clarabel_solve": t_clar / (t / nb),
          "objective_gap_vs_cvxpy": gap,
          "certified_gap_max": float(np.max(np.asarray(info.gap))),
          "iterations_max": int(np.max(np.asarray(info.iterations))),
          "violation_max": viol,
          "cvxpy_note": ("measured" if nb <= nc else
                         f"{nb} x the per-image time of {nc} measured image(s)"),
      }
      rows.append(row)
      io.append_jsonl(os.path.join(workdir, "metrics.jsonl"), row)
      print({k_: (round(v, 5) if isinstance(v, float) else v) for k_, v in row.items()},
            flush=True)
    jrow = {"size": f"{size}x{size}x3", "batch": config["batch"],
            **_jaxopt_row(x, g, ball, config["tol"], config["repeats"])}
    jaxopt_rows.append(jrow)
    io.append_jsonl(os.path.join(workdir, "metrics.jsonl"), jrow)
    print(jrow, flush=True)
  io.write_table(os.path.join(workdir, "results"), rows)
  result = {"rows": rows, "jaxopt": jaxopt_rows}
  io.write_json(os.path.join(workdir, "results.json"), result)
  common.record(config, "benchmark_perceptual", markdown(config, result))
  return result


def markdown(config: Any, result: dict) -> str:
  """The results file's section: the solver against CVXPY, and the jaxopt comparison."""
  lines = [
      f"Quality-ball LP, window {config['window']}, stride {config['stride']}, e1 = e2 = "
      f"{config['eps']}, `tol` {config['tol']}; skimage photographs, gradients ~ N(0, 1); "
      f"medians of {config['repeats']} timed runs after a compile run.", "",
      "| size | run | JAX s/image | CVXPY s/image | Clarabel solve s/image | speed-up vs "
      "Clarabel solve | objective gap vs CVXPY | certified gap (max) | iterations (max) | "
      "violation (max) | CVXPY time |",
      "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in result["rows"]:
    lines.append(
        f"| {r['size']} | {r['run']} | {r['jax_s_per_image']:.4f} | {r['cvxpy_s_per_image']:.3f}"
        f" | {r['clarabel_solve_s_per_image']:.3f} | {r['speedup_vs_clarabel_solve']:.1f}x | "
        f"{r['objective_gap_vs_cvxpy']:.1e} | {r['certified_gap_max']:.1e} | "
        f"{r['iterations_max']} | {r['violation_max']:.1e} | {r['cvxpy_note']} |")
  lines += [
      "", "### jaxopt as the ADMM's building blocks", "",
      "The engine as kept projects the box and the luminance intervals with "
      "`jaxopt.projection.projection_box` (the same program as `jnp.clip`: identical "
      "jaxpr) and the window balls in closed form in the cell layout. The variant "
      "projects each window's ball with `jaxopt.projection.projection_l2_ball` vmapped over the "
      "windows of a group, which cuts the windows out of the cell layout and puts them back at "
      "every iteration. Same batch, interleaved, same run:", "",
      "| size | batch | kept s | jaxopt l2-ball s | ratio (jaxopt / kept) | same iterations | "
      "objective rel. diff (max) |", "|---|---|---|---|---|---|---|"]
  for r in result["jaxopt"]:
    lines.append(f"| {r['size']} | {r['batch']} | {r['kept_s']:.3f} | {r['jaxopt_l2_s']:.3f} | "
                 f"{r['ratio_jaxopt_l2_over_kept']:.2f} | {r['iterations_equal']} | "
                 f"{r['objective_rel_diff_max']:.1e} |")
  slow = [r["ratio_jaxopt_l2_over_kept"] for r in result["jaxopt"]]
  if slow:
    lines += ["", f"`projection_l2_ball` is not used in the engine: the variant took "
              f"{min(slow):.2f}-{max(slow):.2f}x the kept engine's time (the budget is 1.05x)."
              if min(slow) > 1.05 else
              f"The variant took {min(slow):.2f}-{max(slow):.2f}x the kept engine's time."]
  return "\n".join(lines)
