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
  """Checks the configuration (changing nothing); ``read_study`` reads the results."""
  from experiments import common
  common.check_names(config.studies, "studies")
  if not config.studies:
    raise ValueError("studies is empty: give the workdirs of finished attention_masks runs")
  for w in config.studies:
    if not os.path.isfile(os.path.join(w, "results.json")):
      raise ValueError(f"{w} holds no finished attention_masks run (no results.json)")


def read_study(workdir: str) -> dict:
  """The ``results.json`` of the finished ``attention_masks`` run in ``workdir``, checked to
  hold what the combined table reads.

  Raises:
    ValueError: the file is corrupt or of another schema (naming it and what is missing).
  """
  from percadv_jax import io
  path = os.path.join(workdir, "results.json")
  try:
    r = io.read_json(path)
  except ValueError as e:
    raise ValueError(f"{e} by running the attention_masks study in {workdir} again") from None
  if not isinstance(r, dict):
    raise ValueError(f"{path} is not an attention_masks result (a JSON object expected, got "
                     f"{type(r).__name__})")
  if r.get("study") != "attention_masks":
    raise ValueError(f"{path} is not an attention_masks result (its study is "
                     f"{r.get('study')!r})")
  missing = [] if "findings" in r else ["findings"]
  if not isinstance(r.get("dataset"), dict) or "name" not in r["dataset"]:
    missing.append("dataset.name")
  models = r.get("models")
  if not isinstance(models, dict):
    missing.append("models")
  else:
    for n, m in models.items():
      m = m if isinstance(m, dict) else {}
      missing += [f"models.{n}.clean"] if "clean" not in m else []
      per_attack = m.get("per_attack") if isinstance(m.get("per_attack"), dict) else {}
      missing += [f"models.{n}.per_attack.pgd"] if "pgd" not in per_attack else []
  if missing:
    raise ValueError(f"{path} lacks {', '.join(missing)}: not a finished attention_masks "
                     "result; run that study again to rewrite it")
  return r


def run(config: Any, workdir: str) -> dict:
  from experiments.masks_study import report
  from percadv_jax import io
  validate(config)
  results = [read_study(w) for w in config.studies]
  io.lock_config(workdir, config)
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
