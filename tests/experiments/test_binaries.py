"""End-to-end: the demo's quick preset (both studies), tables == results.json, resume, configs."""

import csv
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import common, demo, masks_study, papers
from experiments.configs import attention_masks as masks_cfgs
from experiments.configs import demo as demo_cfgs
from experiments.configs import perceptual_cam as perceptual_cfgs
from experiments.masks_study import claims
from percadv_jax.attacks import checklist
from experiments.masks_study import report as masks_report
from experiments.perceptual_study import agreement, question
from percadv_jax import attacks, io

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = "--config=experiments/configs/demo.py:quick"


# End-to-end runs of the binaries (the quick demo alone: ~6 min on 2 cores).
pytestmark = pytest.mark.slow


def _env():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.setdefault("JAX_PLATFORMS", "cpu")
  env["PERCADV_QUIET"] = "1"
  return env


def run_binary(*args, timeout=900):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("demo"))
  proc = run_binary("experiments.demo", QUICK, f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.path.join(workdir, "report.md") in proc.stdout.replace(os.path.abspath(workdir),
                                                                   workdir)
  return workdir


def _csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_demo_writes_every_file(quick_demo):
  w = quick_demo
  for rel in ["config.json", "report.md", "metrics.jsonl",
              "attention_masks/config.json", "attention_masks/results.json",
              "attention_masks/table.md", "attention_masks/table.csv",
              "attention_masks/curves.png", "attention_masks/curves.csv",
              "attention_masks/dimension.md", "attention_masks/dimension.csv",
              "attention_masks/dimension_curves.csv", "attention_masks/dimension.png",
              "attention_masks/summary.md", "perceptual_cam/results.json",
              "perceptual_cam/attacks.md", "perceptual_cam/attacks.csv",
              "perceptual_cam/agreement.md", "perceptual_cam/agreement.csv",
              "perceptual_cam/replication.csv", "perceptual_cam/question.md",
              "perceptual_cam/question.csv", "perceptual_cam/cascade.csv",
              "perceptual_cam/deletion.csv", "perceptual_cam/lp_comparison.csv",
              "perceptual_cam/figures/ssim.png", "perceptual_cam/figures/linf.png",
              "perceptual_cam/figures/l2.png", "perceptual_cam/summary.md"]:
    assert os.path.getsize(os.path.join(w, rel)) > 0, rel
  report = open(os.path.join(w, "report.md")).read()
  assert "(attention_masks/curves.png)" in report and "(perceptual_cam/figures/ssim.png)" in report
  assert "(attention_masks/dimension.png)" in report
  with open(os.path.join(w, "attention_masks", "curves.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  for name in masks_cfgs.MODEL_NAMES:
    assert os.path.isdir(os.path.join(w, "attention_masks", "models", name, "checkpoints"))
    assert os.path.getsize(os.path.join(w, "attention_masks", "per_example", f"{name}.npz"))


def test_masks_table_equals_results_json(quick_demo):
  d = os.path.join(quick_demo, "attention_masks")
  res = io.read_json(os.path.join(d, "results.json"))
  rows = _csv(os.path.join(d, "table.csv"))
  assert [r["model"] for r in rows] == [masks_cfgs.MODEL_LABELS[n] for n in papers.TABLE4_ROWS]
  ds = res["dataset"]["name"]
  assert not any("paper" in c for c in list(rows[0])[2:])  # no paper numbers of this dataset
  for row, name in zip(rows, papers.TABLE4_ROWS):
    m = res["models"][name]
    for label, fn in masks_report.TABLE_METRICS:
      want = masks_report.cell(fn, m)  # "-": the adaptive column of a full-image model
      got = row[masks_report.ours_column(ds, label)]
      assert (got == want) if want == "-" else float(got) == want, (name, label)
    assert (masks_report.adaptive(m) is None) == name.startswith("full")
    assert m["autoattack"]["robust"] <= m["autoattack"]["clean"] == m["clean"]
    assert m["autoattack"]["robust_all"] <= min(m["robust"], m["autoattack"]["robust"])
    assert m["robust"] <= min(m["per_attack"].values())
    assert max(m["per_attack"].values()) <= m["clean"]
    acc = [c["per_attack"]["pgd"] for c in m["curve"]]
    assert m["curve"][0]["eps"] == 0 and acc[0] == m["curve"][0]["clean"]  # eps 0: no change
    assert acc[0] >= acc[-1]
  md = open(os.path.join(d, "table.md")).read()
  for row in rows:
    for v in list(row.values())[2:]:
      assert (f"| {v} |" if v == "-" else f"{float(v):.2f}") in md
  assert res["dataset"]["num_classes"] == 10 and res["dataset"]["image_size"] == 32
  summary = open(os.path.join(d, "summary.md")).read()  # the trust checks, in the notes
  for name in masks_cfgs.MODEL_NAMES:
    checks = res["models"][name]["trust_checks"]
    assert set(checks) == {"gradients", "randomness", "stronger_attack", "large_eps"}
    assert res["models"][name]["checks"] in summary


def test_masks_checklist_for_every_model(quick_demo):
  """checklist.json / .md hold every item for the four models, the masked ones with the
  transfer from the full-image model of their training; summary.md has one line per model."""
  d = os.path.join(quick_demo, "attention_masks")
  data = io.read_json(os.path.join(d, "checklist.json"))
  results = io.read_json(os.path.join(d, "results.json"))
  md = open(os.path.join(d, "checklist.md")).read()
  summary = open(os.path.join(d, "summary.md")).read()
  assert sorted(data) == sorted(masks_cfgs.MODEL_NAMES)
  for name, c in data.items():
    items = {i["name"]: i for i in c["items"]}
    assert [i["name"] for i in c["items"]] == list(checklist.ITEMS)
    assert c["n"] == 32 and items["hyperparameters"]["n"] == 32
    assert sum(c["counts"].values()) == len(checklist.ITEMS)
    assert c["flagged"] == [i["name"] for i in c["items"] if i["status"] == "flag"]
    assert results["models"][name]["checklist"]["items"] == c["items"]
    transfer = items["transfer"]
    if name.startswith("masked_"):
      assert transfer["status"] in ("pass", "flag")
      assert transfer["source"] == masks_cfgs.MODEL_LABELS[name.replace("masked", "full")]
      assert transfer["source_linf_max"] <= 8 / 255 + 1e-6  # within the masked threat model
    else:
      assert transfer["status"] == "skip"
    assert f"## {masks_cfgs.MODEL_LABELS[name]} ({name})" in md
    assert f"- {masks_cfgs.MODEL_LABELS[name]}: {checklist.summary(c)}" in summary


def test_demo_report_sets_the_papers_table_beside_ours(quick_demo):
  d = os.path.join(quick_demo, "attention_masks")
  res = io.read_json(os.path.join(d, "results.json"))
  report = open(os.path.join(quick_demo, "report.md")).read()
  assert "**Different datasets**" in report
  beside = res["paper_beside"]
  assert [r["paper row"] for r in beside["rows"]] == ["N, X", "N, X_F", "A, X", "A, X_F"]
  for row, name in zip(beside["rows"], papers.TABLE4_ROWS):
    for ds in papers.TABLE4_DATASETS:
      for metric, key in (("natural", "natural"), ("PGD", "pgd")):
        cell = row[f"paper: {papers.DATASET_LABELS[ds]} {metric} (%)"]
        assert cell == papers.TABLE4[ds][name][key]
        assert f"| {cell:.2f} |" in report
  # The claims' directions, with intervals over the demo's test images, among the findings.
  for c in res["claims"]:
    assert c["paper"] is None and c["verdict"] in claims.VERDICTS
    assert c["ours"]["n"] == res["dataset"]["num_eval"]
    assert c["text"] in report
  for f in res["dimension"]["findings"]:
    assert f["text"] in report


def test_perceptual_tables_equal_results_json(quick_demo):
  d = os.path.join(quick_demo, "perceptual_cam")
  res = io.read_json(os.path.join(d, "results.json"))
  rows = _csv(os.path.join(d, "attacks.csv"))
  assert len(rows) == 3
  for row, name in zip(rows, ("ssim", "linf", "l2")):
    st = res["attacks"][name]
    assert float(row["success (%)"]) == common.pct(st["success_rate"])
    assert int(row["fooled"]) == st["successes"] <= st["n"]
    assert float(row["SSIM mean"]) == round(st["ssim_mean"], 4)
    assert float(row["Linf mean"]) == round(st["linf_mean"], 4)
    assert 0 <= st["success_rate"] <= 1 and st["ssim_mean"] <= 1
  assert res["attacks"]["ssim"]["ball_violation_max"] <= 1e-4  # inside the quality ball
  assert res["attacks"]["linf"]["facts"]["eps"] == pytest.approx(  # matched radii
      res["attacks"]["ssim"]["linf_median"], rel=1e-5)
  agree = _csv(os.path.join(d, "agreement.csv"))
  assert len(agree) == 6
  for row in agree:
    name = {"SSIM quality ball": "ssim", "Linf PGD": "linf", "L2 PGD": "l2"}[row["attack"]]
    kind = {"abs(d)": "abs_d", "1 - SSIM map": "one_minus_ssim"}[row["map"]]
    entry = res["agreement"][name]
    assert row["Pearson vs Grad-CAM++"] == common.fmt_ci(entry[f"{kind}/grad_cam_pp_pearson"])
    assert int(row["n"]) == entry[f"{kind}/grad_cam_pp_pearson"]["n"] <= \
        res["attacks"][name]["successes"]
    e = entry[f"{kind}/mask_energy_ratio"]
    if np.isfinite(e["mean"]):
      assert e["lo"] <= e["mean"] <= e["hi"]
  paper, addition = res["answer"]["paper"], res["answer"]["addition"]
  assert paper[0].startswith("Answer (from the 1 - SSIM map")
  assert paper[1].startswith("From abs(d)")
  assert addition[0].startswith("Versus Lp PGD (from the 1 - SSIM map")
  assert not any(a.startswith("Reliability") for a in addition)  # off in the quick preset
  summary = open(os.path.join(d, "summary.md")).read()  # the paper's question first, then ours
  first, second = summary.index("### The paper's question"), summary.index("### The project's")
  assert first < second
  assert all(0 <= summary.index(line) < second for line in paper)
  assert all(summary.index(line) > second for line in addition)


def test_perceptual_direct_answer_and_baselines(quick_demo):
  d = os.path.join(quick_demo, "perceptual_cam")
  res = io.read_json(os.path.join(d, "results.json"))
  rows = _csv(os.path.join(d, "question.csv"))
  config = perceptual_cfgs.get_config("quick")
  measures = agreement.measure_names(config.cam.energy_top_k)
  assert len(rows) == 3 * 2 * len(measures)
  names = {"SSIM quality ball": "ssim", "Linf PGD": "linf", "L2 PGD": "l2"}
  kinds = {"abs(d)": "abs_d", "1 - SSIM map": "one_minus_ssim"}
  nulls = res["sanity"]["nulls"]
  assert nulls == list(perceptual_cfgs.NULLS)
  for row in rows:
    name, kind = names[row["attack"]], kinds[row["map"]]
    m = next(m for m in measures if question.measure_label(m) == row["measure"])
    st = res["direct"][name]
    key = f"{kind}/{m}"
    assert row["value"] == question.fmt(st[key])
    assert int(row["n"]) == st[key]["n"] <= res["attacks"][name]["successes"]
    for null in nulls:
      assert row[f"value - {question.NULL_LABELS[null]}"] == question.fmt(st.get(f"{key}-{null}"))
    positive = question.status(st, kind, m, nulls)["positive"]
    assert row["positive"] == ("yes" if positive else "no")
    if np.isfinite(st[key]["mean"]) and m != "spearman":
      assert 0 <= st[key]["mean"] <= 1
  san = res["sanity"]
  for layers in san["cascade"]["layers"].values():
    assert layers["logits"] == ["predictions"]
    assert 1 < len(layers["above_cam"]) < len(layers["all"])
    assert layers["above_cam"] == layers["all"][-len(layers["above_cam"]):]
  for curves in san["deletion"]["curves"].values():  # step 0 is the clean image for every order
    start = {name: c["logit"][0] for name, c in curves.items()}
    assert max(start.values()) - min(start.values()) < 1e-4 * max(1.0, abs(start["random"]))
  assert san["deletion"]["fraction"][0] == 0 and san["deletion"]["fraction"][-1] == 1
  for seed, smooth in san["smooth"].items():
    assert smooth["sigma"] >= 0 and smooth["lag"] >= 1, seed
  dele = _csv(os.path.join(d, "deletion.csv"))
  assert [r["CAM"] for r in dele] == ["Grad-CAM++"]  # the direct answer's CAM
  assert dele[0]["faithful"] == ("yes" if san["faithful"] else "no")


def test_perceptual_checklist_per_seed(quick_demo):
  """checklist.json / .md hold every item for each seed's Linf PGD evaluation (no transfer
  source); its more-iterations numbers are the store's record of PGD with twice the steps on
  the same images; summary.md and report.md carry one line per seed."""
  d = os.path.join(quick_demo, "perceptual_cam")
  config = perceptual_cfgs.get_config("quick")
  res = io.read_json(os.path.join(d, "results.json"))
  data = io.read_json(os.path.join(d, "checklist.json"))
  md = open(os.path.join(d, "checklist.md")).read()
  summary = open(os.path.join(d, "summary.md")).read()
  report = open(os.path.join(quick_demo, "report.md")).read()
  assert sorted(data) == sorted(str(s) for s in res["seeds"]) and res["checklist"] == data
  for seed, c in data.items():
    assert [i["name"] for i in c["items"]] == list(checklist.ITEMS)
    items = {i["name"]: i for i in c["items"]}
    n = min(config.attack.checklist.examples, res["data"]["num_images"])
    assert c["n"] == n and items["hyperparameters"]["white_box"] == ["linf"]
    assert items["transfer"]["status"] == "skip"
    assert sum(c["counts"].values()) == len(checklist.ITEMS)
    line = f"- MobileNetV2 seed {seed}, Linf PGD: {checklist.summary(c)}"
    assert line in summary and line in report
    assert f"## MobileNetV2 seed {seed}, Linf PGD" in md
    # more_iterations against the store: PGD with twice the steps on the same n images
    eps = res["attacks"]["linf"]["facts"]["eps"]
    pgd = attacks.Attack("pgd", eps=eps, steps=config.attack.pgd_steps, norm="linf")
    more = dataclasses.replace(pgd, steps=2 * pgd.steps)
    store = os.path.join(d, f"seed_{seed}", "evaluations")
    records = {}
    for f in os.listdir(store):
      if f.endswith(".json") and not f.endswith(".checks.json"):
        spec = io.read_json(os.path.join(store, f))
        if spec.get("data") == f"checklist{n}":
          with np.load(os.path.join(store, f[:-5] + ".npz")) as z:
            ev = attacks.Evaluation.from_arrays(dict(z))
          records.update({name: (a, ev) for name, a in spec["attacks"].items()})
    assert records["attack"][0] == repr(pgd) and records["more_steps"][0] == repr(more)
    more_it = items["more_iterations"]
    assert more_it["accuracy"] == float(records["attack"][1].survived["attack"].mean())
    assert more_it["accuracy_more"] == float(records["more_steps"][1].survived["more_steps"].mean())
    assert more_it["change"] == more_it["accuracy_more"] - more_it["accuracy"]


def test_resume_skips_finished_work_and_refuses_other_configs(quick_demo):
  w = quick_demo
  masks_dir = os.path.join(w, "attention_masks")
  stages = os.path.join(w, "perceptual_cam", "seed_0", "evaluations")
  before = ({f: os.path.getmtime(os.path.join(stages, f)) for f in os.listdir(stages)},
            io.read_json(os.path.join(masks_dir, "results.json")))
  out = demo.run(demo_cfgs.get_config("quick"), w)
  events = io.read_jsonl(os.path.join(masks_dir, "metrics.jsonl"))
  skipped = {e["model"] for e in events if e["event"] == "skip"}
  assert skipped == set(masks_cfgs.MODEL_NAMES)
  assert {f: os.path.getmtime(os.path.join(stages, f)) for f in os.listdir(stages)} == before[0]
  assert out["attention_masks"]["table"] == before[1]["table"]
  for name in masks_cfgs.MODEL_NAMES:  # no training step ran again
    steps = [r["step"] for r in io.read_jsonl(
        os.path.join(masks_dir, "models", name, "metrics.jsonl"))]
    assert len(steps) == len(set(steps))
  other = demo_cfgs.get_config("quick")
  other.masks.seed = 1
  config_before = open(os.path.join(masks_dir, "config.json")).read()
  with pytest.raises(ValueError, match=r"different configuration \(seed: 0 -> 1\)"):
    masks_study.run(other.masks, masks_dir)
  assert open(os.path.join(masks_dir, "config.json")).read() == config_before


def test_masks_study_data_parallel_processes(tmp_path):
  """``experiments.attention_masks`` as two jax.distributed processes on loopback (one CPU
  device each) with ``train.data_parallel``: it finishes, process 0 alone writes the events,
  and a run left at its first checkpoint (the later checkpoints and the evaluation removed, as a
  kill during training leaves it) resumes from there to the same table."""
  import shutil

  from tests.parallel.test_parallel import _env as device_env, _free_port
  workdir = tmp_path / "w"

  def run_both():
    addr = f"127.0.0.1:{_free_port()}"
    args = [sys.executable, "-m", "experiments.attention_masks",
            "--config=experiments/configs/attention_masks.py:quick", f"--workdir={workdir}",
            "--config.models=full_natural", "--config.train.data_parallel=True",
            "--config.data.num_train=64", "--config.data.num_test=16",
            "--config.train.batch_size=16", "--config.train.checkpoint_every=2",
            "--config.eval.examples=16", "--config.eval.curve_examples=16",
            "--config.eval.batch_size=16", "--config.eval.diagnostics=False",
            "--config.eval.checklist.enabled=False", "--config.eval.autoattack.version=off",
            "--config.eval.adaptive.enabled=False",
            f"--coordinator_address={addr}", "--num_processes=2"]
    procs = [subprocess.Popen(args + [f"--process_id={i}"], cwd=ROOT, env=device_env(1),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    logs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [log[1][-2000:] for log in logs]
    assert "results in" in logs[0][0] and "results in" not in logs[1][0]  # process 0 reports
    return io.read_json(workdir / "results.json")

  first = run_both()
  model = workdir / "models" / "full_natural"
  config = io.read_json(model / "config.json")
  assert config["data_parallel"] and first["models"]["full_natural"]["train_steps"] == 4
  events = [e["event"] for e in io.read_jsonl(workdir / "metrics.jsonl")]
  assert events == ["start", "trained", "evaluated", "done"]  # once: process 0 logs
  steps = [r["step"] for r in io.read_jsonl(model / "metrics.jsonl")]
  assert steps == [2, 4]
  # A kill after the step-2 checkpoint leaves neither the later checkpoint nor the evaluation.
  shutil.rmtree(model / "checkpoints" / "4")
  for p in ("eval", "evaluations", "per_example"):
    shutil.rmtree(workdir / p)
  os.remove(workdir / "results.json")
  second = run_both()
  assert [r["step"] for r in io.read_jsonl(model / "metrics.jsonl")] == [2, 4]
  loss = [r["loss"] for r in io.read_jsonl(model / "metrics.jsonl")]
  assert second["table"] == first["table"]
  np.testing.assert_allclose(second["models"]["full_natural"]["final_train_loss"], loss[-1])
  assert second["models"]["full_natural"]["clean"] == first["models"]["full_natural"]["clean"]
