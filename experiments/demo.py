r"""The demo: both studies on the built-in synthetic signs, one report.

With no flags it trains and evaluates the masks paper's four models (Table 4 layout) and runs
the perceptual study (SSIM quality-ball attack vs Linf / L2 PGD against Grad-CAM++ and the
foreground masks), sized to finish in about 7 minutes (<= 15) on 2 CPU cores, and writes
``report.md`` (tables and figures) into ``--workdir``. ``--quick`` runs both at toy sizes in
about a minute (the numbers then mean nothing). A killed demo restarted with the same flags
skips finished models, evaluations and attacks.

  python -m experiments.demo                       # -> runs/demo/report.md
  python -m experiments.demo --quick --workdir=/tmp/demo
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Sequence

from experiments import attention_masks, common, perceptual_cam
from experiments.configs import attention_masks as masks_cfgs
from experiments.configs import perceptual_cam as perc_cfgs
from percadv_jax import io


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  """The two studies' configurations (presets ``demo`` or ``quick``)."""
  preset: str
  masks: masks_cfgs.MasksConfig
  perceptual: perc_cfgs.PerceptualConfig


def make_config(*, quick: bool = False, seed: int = 0) -> DemoConfig:
  preset = "quick" if quick else "demo"
  return DemoConfig(
      preset=preset,
      masks=dataclasses.replace(masks_cfgs.PRESETS[preset](), seed=seed),
      perceptual=dataclasses.replace(perc_cfgs.PRESETS[preset](), seed=seed))


def run(config: DemoConfig, workdir: str) -> dict:
  """Runs both studies in ``workdir/attention_masks`` and ``workdir/perceptual_cam``.

  Returns:
    ``{"attention_masks": results, "perceptual_cam": results, "seconds": {...}, "report": path}``
  """
  common.prepare_workdir(workdir, config)
  seconds = {}
  t0 = time.perf_counter()
  masks = attention_masks.run(config.masks, os.path.join(workdir, "attention_masks"))
  seconds["attention_masks"] = time.perf_counter() - t0
  t1 = time.perf_counter()
  perc = perceptual_cam.run(config.perceptual, os.path.join(workdir, "perceptual_cam"))
  seconds["perceptual_cam"] = time.perf_counter() - t1
  seconds["total"] = time.perf_counter() - t0
  common.log(workdir, "done", **seconds)
  report = os.path.join(workdir, "report.md")
  text = "\n".join([
      "# percadv_jax demo report", "",
      f"Both studies on the built-in synthetic signs ({config.preset} sizes; this run: "
      f"{seconds['total'] / 60:.1f} min, of which the masks study "
      f"{seconds['attention_masks'] / 60:.1f} min and the perceptual study "
      f"{seconds['perceptual_cam'] / 60:.1f} min; a resumed run counts only the resumed part). "
      "Per-study outputs (results.json, CSV tables, configs, checkpoints) are in "
      "`attention_masks/` and `perceptual_cam/`.", "",
      attention_masks.summary_markdown(config.masks, masks, prefix="attention_masks/"),
      perceptual_cam.summary_markdown(config.perceptual, perc, prefix="perceptual_cam/"),
  ])
  with io.atomic_open(report) as f:
    f.write(text)
  return {"attention_masks": masks, "perceptual_cam": perc, "seconds": seconds,
          "report": report}


def _define_flags():
  from absl import flags
  flags.DEFINE_string("workdir", "runs/demo", "Output directory (resumable).")
  flags.DEFINE_bool("quick", False, "Toy sizes: about a minute; the numbers mean nothing.")
  flags.DEFINE_integer("seed", 0, "Seed of data, models, attacks.")
  flags.register_validator("workdir", lambda v: bool(v and v.strip()),
                           "--workdir must be a non-empty path")


def main(argv: Sequence[str]) -> None:
  from absl import app, flags, logging
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  fv = flags.FLAGS
  out = run(make_config(quick=fv.quick, seed=fv.seed), fv.workdir)
  print(f"report written to {os.path.abspath(out['report'])} "
        f"({out['seconds']['total'] / 60:.1f} min)", file=sys.stdout)


if __name__ == "__main__":
  from absl import app
  _define_flags()
  app.run(main)
