r"""The masks paper's Table 4: {full image, masked} x {natural, adversarial training}, VGG-19.

  python -m experiments.attention_masks --workdir=runs/masks            # synthetic signs
  python -m experiments.attention_masks --workdir=runs/masks \
      --config=experiments/configs/attention_masks.py:quick              # ~1 min smoke run
  python -m experiments.attention_masks --workdir=runs/gtsrb \
      --config=experiments/configs/attention_masks.py:gtsrb_paper --config.data.data_dir=DATA

Presets and fields: ``experiments/configs/attention_masks.py``; what the run writes:
``experiments/masks_study``. A killed run restarted with the same command resumes.
"""

from __future__ import annotations

import os

from experiments import cli


def _report(results: dict, workdir: str) -> None:
  print(open(os.path.join(workdir, "table.md")).read())
  for s in results["findings"]:
    print("-", s)
  print(f"results in {os.path.abspath(workdir)}")


def main() -> None:
  from experiments import masks_study
  cli.main(masks_study.run, validate=masks_study.validate, report=_report)


if __name__ == "__main__":
  cli.define_flags("attention_masks")
  main()
