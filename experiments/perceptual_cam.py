r"""The perceptual paper's study: are SSIM-constrained perturbations semantically explainable?

  python -m experiments.perceptual_cam --workdir=runs/perceptual            # synthetic signs
  python -m experiments.perceptual_cam --workdir=runs/perceptual \
      --config=experiments/configs/perceptual_cam.py:quick
  python -m experiments.perceptual_cam --workdir=runs/imagenet \
      --config=experiments/configs/perceptual_cam.py:imagenet_paper \
      --config.data.data_dir=IMAGES --config.model.keras_weights=mnv2.h5

Presets and fields: ``experiments/configs/perceptual_cam.py``; what the run writes:
``experiments/perceptual_study``. A killed run restarted with the same command resumes.
"""

from __future__ import annotations

import os

from experiments import cli


def _report(results: dict, workdir: str) -> None:
  for part in ("paper", "addition"):
    print("The paper's question:" if part == "paper" else "The project's addition:")
    for line in results["answer"][part]:
      print("-", line)
  print(f"results in {os.path.abspath(workdir)}")


def main() -> None:
  from experiments import perceptual_study
  cli.main(perceptual_study.run, validate=perceptual_study.validate, report=_report)


if __name__ == "__main__":
  cli.define_flags("perceptual_cam")
  main()
