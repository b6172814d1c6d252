r"""The masks paper's two-dataset Table 4 from several finished ``attention_masks`` workdirs.

  python -m experiments.report --workdir=runs/table4 \
      --config=experiments/configs/report.py --config.studies="('runs/gtsrb','runs/coco')"

Writes ``table4.md/.csv`` (rows: the four models; columns: natural and PGD accuracy per
dataset), ``results.json`` (the table and each study's findings) and ``summary.md``.
"""

from __future__ import annotations

import os
from typing import Any

from experiments import cli


def validate(config: Any) -> None:
  if isinstance(config.studies, str):
    config.studies = tuple(s.strip() for s in config.studies.split(",") if s.strip())
  if not config.studies:
    raise ValueError("studies is empty: give the workdirs of finished attention_masks runs")
  for w in config.studies:
    if not os.path.isfile(os.path.join(w, "results.json")):
      raise ValueError(f"{w} holds no finished attention_masks run (no results.json)")


def run(config: Any, workdir: str) -> dict:
  from experiments.masks_study import report
  from percadv_jax import io
  validate(config)
  io.lock_config(workdir, config)
  results = [io.read_json(os.path.join(w, "results.json")) for w in config.studies]
  for w, r in zip(config.studies, results):
    if r.get("study") != "attention_masks":
      raise ValueError(f"{w}/results.json is not an attention_masks result")
  columns, rows = report.combined_table(results)
  io.write_table(os.path.join(workdir, "table4"), rows, columns, digits=2)
  findings = {r["dataset"]["name"]: r["findings"] for r in results}
  out = {"table": {"columns": columns, "rows": rows}, "studies": list(config.studies),
         "findings": findings}
  io.write_json(os.path.join(workdir, "results.json"), out)
  lines = ["# Table 4: foreground attention masks, natural and PGD accuracy (%)", "",
           io.markdown_table(rows, columns, 2)]
  for name, fs in findings.items():
    lines += [f"On {report.DATASET_LABELS.get(name, name)}:", ""] + [f"- {s}" for s in fs] + [""]
  with io.atomic_open(os.path.join(workdir, "summary.md")) as f:
    f.write("\n".join(lines))
  return out


def _report(out: dict, workdir: str) -> None:
  print(open(os.path.join(workdir, "table4.md")).read())


if __name__ == "__main__":
  cli.define_flags("report")
  cli.main(run, validate=validate, report=_report)
