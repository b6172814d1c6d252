r"""The demo: both studies on the built-in synthetic signs, one report.

  python -m experiments.demo --workdir=runs/demo                       # -> runs/demo/report.md
  python -m experiments.demo --workdir=/tmp/demo --config=experiments/configs/demo.py:quick

It trains and evaluates the masks paper's four models (Table 4 layout) and runs the perceptual
study (SSIM quality-ball attack vs Linf / L2 PGD against Grad-CAM++ and the foreground masks),
sized to finish in about 13 minutes on 2 CPU cores (target: 15), and writes ``report.md`` (tables
and figures; the masks paper's Table 4 beside the synthetic one, labelled as other datasets) into
``--workdir``. A killed demo restarted with the same command skips finished
models, evaluations and attacks.
"""

from __future__ import annotations

import os
import time
from typing import Any

from experiments import cli, masks_study, perceptual_study
from percadv_jax import io


def validate(config: Any) -> None:
  """Checks both studies' configurations and the preset named in the report."""
  from experiments.configs import demo as presets
  if config.preset not in presets.PRESETS:
    raise ValueError(f"unknown preset {config.preset!r}; choose one of "
                     f"{', '.join(presets.PRESETS)}")
  masks_study.validate(config.masks)
  perceptual_study.validate(config.perceptual)


def run(config: Any, workdir: str) -> dict:
  """Runs both studies in ``workdir/attention_masks`` and ``workdir/perceptual_cam``.

  Returns:
    ``{"attention_masks": results, "perceptual_cam": results, "seconds": {...}, "report": path}``
  """
  validate(config)
  masks_study.check_inputs(config.masks)  # both studies' inputs, before anything is written
  perceptual_study.check_inputs(config.perceptual)
  io.lock_config(workdir, config)
  seconds = {}
  t0 = time.perf_counter()
  masks = masks_study.run(config.masks, os.path.join(workdir, "attention_masks"))
  seconds["attention_masks"] = time.perf_counter() - t0
  t1 = time.perf_counter()
  perc = perceptual_study.run(config.perceptual, os.path.join(workdir, "perceptual_cam"))
  seconds["perceptual_cam"] = time.perf_counter() - t1
  seconds["total"] = time.perf_counter() - t0
  io.log_event(workdir, "done", **seconds)
  report = os.path.join(workdir, "report.md")
  text = "\n".join([
      "# percadv_jax demo report", "",
      f"Both studies on the built-in synthetic signs ({config.preset} sizes; this run: "
      f"{seconds['total'] / 60:.1f} min, of which the masks study "
      f"{seconds['attention_masks'] / 60:.1f} min and the perceptual study "
      f"{seconds['perceptual_cam'] / 60:.1f} min; a resumed run counts only the resumed part). "
      "Per-study outputs (results.json, CSV tables, configs, checkpoints) are in "
      "`attention_masks/` and `perceptual_cam/`. The masks paper's Table 4 is set beside ours "
      "for its pattern only: its numbers are of other datasets (MS-COCO-IC, GTSRB-IC), so its "
      "claims are judged here for their direction only.", "",
      masks_study.report.summary_markdown(config.masks, masks, prefix="attention_masks/"),
      perceptual_study.report.summary_markdown(config.perceptual, perc,
                                               prefix="perceptual_cam/"),
  ])
  with io.atomic_open(report) as f:
    f.write(text)
  return {"attention_masks": masks, "perceptual_cam": perc, "seconds": seconds,
          "report": report}


def _report(out: dict, workdir: str) -> None:
  print(f"report written to {os.path.abspath(out['report'])} "
        f"({out['seconds']['total'] / 60:.1f} min)")


if __name__ == "__main__":
  cli.define_flags("demo", default_preset="demo")
  cli.main(run, validate=validate, report=_report)
