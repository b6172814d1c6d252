r"""Benchmark: the JAX quality-ball LP solver against the CVXPY (Clarabel) reference.

Same instances for both (skimage photographs resized to each size, gradients ~ N(0, 1)); window 8,
stride 4, e1 = e2 = 0.05 by default. For every size: CVXPY per image (build + solve wall time and
Clarabel's own solve time), ``solve_linear`` on one image and on a batch of 16 (median
of ``--repeats`` timed runs after a warm-up/compile run), the objective gap to CVXPY and the
violation. CVXPY on the batch is estimated as 16 x its single-image time (stated in the table).

  python -m experiments.benchmark_perceptual --workdir=/tmp/bench_perc --sizes=32,64,224
"""

from __future__ import annotations

import os
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Output directory.", required=True)
flags.DEFINE_list("sizes", ["32", "64", "224"], "Image sides.")
flags.DEFINE_integer("batch", 16, "Batch size of the vmapped run.")
flags.DEFINE_integer("window", 8, "Window side.")
flags.DEFINE_integer("stride", 4, "Window stride.")
flags.DEFINE_float("eps", 0.05, "e1 = e2.")
flags.DEFINE_float("tol", 1e-3, "Certified relative gap of solve_linear.")
flags.DEFINE_integer("repeats", 3, "Timed runs of the JAX solver (median).")
flags.DEFINE_integer("cvxpy_batch", 1, "Images actually solved by CVXPY per size (>= 1).")
flags.DEFINE_integer("seed", 0, "Seed of the gradients.")


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


def run(config: dict, workdir: str) -> list[dict]:
  import jax
  import numpy as np
  from percadv_jax import io
  from percadv_jax.perceptual import QualityBall, solve_linear, solve_linear_cvxpy

  os.makedirs(workdir, exist_ok=True)
  io.write_json(os.path.join(workdir, "config.json"), config)
  ball = QualityBall(window=config["window"], stride=config["stride"],
                     eps_structure=config["eps"], eps_luminance=config["eps"])
  rows = []
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
  io.write_table(os.path.join(workdir, "results"), rows)
  io.write_json(os.path.join(workdir, "results.json"), rows)
  return rows


def main(argv):
  del argv
  config = {"sizes": [int(s) for s in FLAGS.sizes], "batch": FLAGS.batch,
            "window": FLAGS.window, "stride": FLAGS.stride, "eps": FLAGS.eps, "tol": FLAGS.tol,
            "repeats": FLAGS.repeats, "cvxpy_batch": FLAGS.cvxpy_batch, "seed": FLAGS.seed}
  run(config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
