r"""The masks paper's two-dataset Table 4 from finished ``attention_masks`` workdirs, beside the
paper's.

  python -m experiments.report --workdir=runs/table4 \
      --config=experiments/configs/report.py --config.studies="('runs/gtsrb','runs/coco')"

Rule (``experiments.masks_study.report.check_combinable``): at most one study per dataset, each
of a dataset of the paper's Table 4 (MS-COCO-IC, GTSRB-IC), all of one family (the same model,
training attack and evaluation attacks, as the ``gtsrb_paper`` and ``coco_paper`` presets are);
otherwise one error names the studies. Writes:

- ``table4.md/.csv``: rows N X, N X_F, A X, A X_F; per dataset (MS-COCO-IC first, as the paper)
  natural and PGD accuracy as ours, the paper's and ours minus the paper's (points), then our
  APGD and worst-case columns;
- ``results.json``: the table, the studies, each study's findings and judged claims, and the
  claim across the datasets (GTSRB-IC's adversarial masking gain is the smaller);
- ``summary.md``: the table and the finding lines.
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
  r = io.json_object(r, path, "an attention_masks result")
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


def load_studies(workdirs: Any) -> list[dict]:
  """``[{"workdir", "results", "config"}]`` of finished ``attention_masks`` workdirs."""
  from percadv_jax import io
  studies = []
  for w in workdirs:
    r = read_study(w)
    path = os.path.join(w, "config.json")  # written by every study; absent fields compare unequal
    c = io.read_json(path) if os.path.exists(path) else {}
    studies.append({"workdir": w, "results": r, "config": c.get("config", c)})
  return studies


def run(config: Any, workdir: str) -> dict:
  from experiments.masks_study import claims, evaluate, report
  from percadv_jax import io
  validate(config)
  studies = load_studies(config.studies)
  report.check_combinable(studies)
  io.lock_config(workdir, config)
  results = [s["results"] for s in studies]
  columns, rows = report.combined_table(results)
  io.write_table(os.path.join(workdir, "table4"), rows, columns, digits=2)
  findings = {r["dataset"]["name"]: r["findings"] for r in results}
  per_example = {s["results"]["dataset"]["name"]: evaluate.load_per_example(
      s["workdir"], s["results"]["models"]) for s in studies}
  across = claims.cross_dataset(per_example)
  out = {"table": {"columns": columns, "rows": rows}, "studies": list(config.studies),
         "findings": findings,
         "claims": {r["dataset"]["name"]: r.get("claims", []) for r in results},
         "cross_dataset": across}
  io.write_json(os.path.join(workdir, "results.json"), out)
  lines = ["# Table 4: foreground attention masks, natural and PGD accuracy (%), ours beside "
           "the paper's", "",
           "Rows as the paper (N = natural training, A = adversarial; X = full image, X_F = "
           "foreground only); 'ours - paper' in points; APGD, worst case, AutoAttack and PGD "
           "with masks from the attacked image are ours only.", "",
           io.markdown_table(rows, columns, 2)]
  if across is not None:
    lines += ["Across the datasets:", "", f"- {across['text']}", ""]
  for name, fs in findings.items():
    lines += [f"On {report.label(name)}:", ""] + [f"- {s}" for s in fs] + [""]
  with io.atomic_open(os.path.join(workdir, "summary.md")) as f:
    f.write("\n".join(lines))
  return out


def _report(out: dict, workdir: str) -> None:
  print(open(os.path.join(workdir, "table4.md")).read())
  if out["cross_dataset"] is not None:
    print("-", out["cross_dataset"]["text"])
  for fs in out["findings"].values():
    for s in fs:
      print("-", s)


if __name__ == "__main__":
  cli.define_flags("report")
  cli.main(run, validate=validate, report=_report)
