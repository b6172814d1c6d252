r"""The masks paper's Table 4: {full image, masked} x {natural, adversarial training}, VGG-19.

  python -m experiments.attention_masks --workdir=runs/masks            # synthetic signs
  python -m experiments.attention_masks --workdir=runs/masks \
      --config=experiments/configs/attention_masks.py:quick              # ~1 min smoke run
  python -m experiments.attention_masks --workdir=runs/gtsrb \
      --config=experiments/configs/attention_masks.py:gtsrb_paper --config.data.data_dir=DATA

Several GPUs or hosts (``--config.train.data_parallel=True``, the paper presets' setting: each
batch split over every device of every process; the batch size a multiple of the device count):

  python -m experiments.attention_masks --workdir=runs/gtsrb \
      --config=experiments/configs/attention_masks.py:gtsrb_paper --config.data.data_dir=DATA
  # every GPU of this host; on several hosts the same command on each (a shared workdir) with
  #   --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0 (1 on the other)

Presets and fields: ``experiments/configs/attention_masks.py``; what the run writes:
``experiments/masks_study``. A killed run restarted with the same command resumes.
"""

from __future__ import annotations

import os

from experiments import cli


def _run(config, workdir: str) -> dict | None:
  from experiments import masks_study
  cli.initialize_multihost()
  return masks_study.run(config, workdir)


def _report(results: dict | None, workdir: str) -> None:
  if results is None:  # a process other than 0 of a multi-process run: process 0 reports
    return
  print(open(os.path.join(workdir, "table.md")).read())
  for s in results["findings"]:
    print("-", s)
  print(f"results in {os.path.abspath(workdir)}")


def main() -> None:
  from experiments import masks_study
  cli.main(_run, validate=masks_study.validate, report=_report)


if __name__ == "__main__":
  cli.define_flags("attention_masks", multihost=True)
  main()
