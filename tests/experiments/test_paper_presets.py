"""End-to-end: the paper presets at the papers' sizes, through the binaries, with counts cut down.

- GTSRB-IC (``attention_masks.py:gtsrb_paper``): a 43-class GTSRB tree in the official layout ->
  ``prepare_data`` (the paper's centre-seeded segmenter; Table 1 beside the official counts,
  foreground share, example figure, Figure 2) -> the Table 4 study with the Keras-style VGG-19
  (fully connected head) at 32 px, adversarial training from scratch: our cells beside the
  paper's, its claims judged, the input-dimension table.
- MS-COCO-IC (``coco_paper``): a COCO-2014 instances-JSON tree with the paper's ten classes ->
  one crop per kept object (Table 1 beside the paper's, Figure 3) -> the study at 64 px; then
  ``experiments.report`` combines both workdirs into the two-dataset Table 4 beside the paper's
  and refuses two studies of one dataset.
- The perceptual study (``perceptual_cam.py:imagenet_paper``): scikit-image's photographs as an
  image folder at 224 px, a Keras MobileNetV2 1.0 ``.h5`` (random weights, BatchNorm statistics
  recalibrated on the photographs so that its logits depend on the input), CAM at ``out_relu``.

Only counts are overridden (epochs, images, batch size, attack steps); architectures, input sizes,
class lists, crops and threat models are the presets'. Measured costs of these runs and the
full-size projections: ``docs/paper_runs.md``.
"""

from __future__ import annotations

import collections
import csv
import os

import numpy as np
import pytest

from experiments import common
from experiments.configs import attention_masks as masks_cfgs
from experiments.configs import data as data_config
from experiments.configs import prepare_data as prep_cfgs
from experiments import papers
from experiments.masks_study import claims
from experiments.masks_study import report as masks_report
from percadv_jax import data as pdata
from percadv_jax import io
from percadv_jax.data.coco import PAPER_CLASSES
from tests.data.coco_fixture import write_coco
from tests.data.gtsrb_fixture import write_gtsrb
from tests.experiments import paper_fixtures

pytestmark = pytest.mark.slow

EPS8 = repr(8 / 255)
# Counts only: 2 training steps of 8 images per model, PGD-2 training, PGD-2 / APGD-2 on 8 test
# images, the eps curve at 0 and 8/255, AutoAttack with 2 iterations, 20 queries and 2 targets,
# the adaptive column's segmenter at 32 px.
MASKS_COUNTS = ("--config.train.epochs=1", "--config.train.batch_size=8",
                "--config.train.attack.steps=2", "--config.data.num_train=16",
                "--config.data.num_test=16", "--config.eval.steps=2",
                "--config.eval.apgd_steps=2", "--config.eval.examples=8",
                "--config.eval.curve_examples=8", f"--config.eval.curve_eps=(0.0, {EPS8})",
                "--config.eval.diagnostic_examples=8", "--config.eval.stronger_steps=2",
                "--config.eval.autoattack.iterations=2", "--config.eval.autoattack.queries=20",
                "--config.eval.autoattack.targets=2", "--config.eval.adaptive.work_size=32",
                "--config.eval.checklist.examples=8", "--config.eval.checklist.restarts=2",
                "--config.eval.checklist.square_queries=10")


def _csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def _ok(proc):
  assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
  return proc


def _prepare(preset, raw, data_dir, reports):
  return _ok(paper_fixtures.run_binary(
      "experiments.prepare_data", f"--config=experiments/configs/prepare_data.py:{preset}",
      f"--config.raw_dir={raw}", f"--config.data.data_dir={data_dir}", f"--workdir={reports}"))


def _study(preset, data_dir, workdir, *extra):
  return _ok(paper_fixtures.run_binary(
      "experiments.attention_masks", f"--config=experiments/configs/attention_masks.py:{preset}",
      f"--config.data.data_dir={data_dir}", f"--workdir={workdir}", *MASKS_COUNTS, *extra))


def _cache_arrays(preset, data_dir, split):
  """The prepared cache of ``split`` read back with the preset's own data options."""
  d = prep_cfgs.get_config(preset).data
  src = pdata.load(d.dataset, split=split, data_dir=data_dir, image_size=d.image_size,
                   **data_config.options(d))
  return src, pdata.to_arrays(src)


@pytest.fixture(scope="module")
def gtsrb(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("gtsrb_paper")
  raw, data_dir, reports, workdir = (str(tmp / n) for n in ("raw", "data", "reports", "study"))
  write_gtsrb(raw, classes=range(43), per_class=1, num_test=43, defects=False)
  _prepare("gtsrb_paper", raw, data_dir, reports)
  proc = _study("gtsrb_paper", data_dir, workdir)
  return {"data_dir": data_dir, "reports": reports, "workdir": workdir, "stdout": proc.stdout}


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("coco_paper")
  raw, data_dir, reports, workdir = (str(tmp / n) for n in ("raw", "data", "reports", "study"))
  truth = write_coco(raw, year=2014, splits=("train", "val"), per_class=(3, 2))
  _prepare("coco_paper", raw, data_dir, reports)
  # The trust checks and AutoAttack ran on GTSRB-IC above; here the same code would only
  # recompile.
  proc = _study("coco_paper", data_dir, workdir, "--config.eval.diagnostics=False",
                "--config.eval.autoattack.version=off")
  return {"data_dir": data_dir, "reports": reports, "workdir": workdir, "truth": truth,
          "stdout": proc.stdout}


def _check_dataset_artefacts(preset, data_dir, reports, splits, names):
  """Table 1 == the caches' labels beside the paper's / official counts, foreground share == the
  caches' masks, the example figure and the paper's figure of the dataset."""
  table = _csv(os.path.join(reports, "table1.csv"))
  assert [r["class"] for r in table[:-1]] == list(names)
  assert table[-1]["class"] == "total"
  share = {r["split"]: r for r in _csv(os.path.join(reports, "foreground_share.csv"))}
  counts = {}
  for split in splits:
    src, arrays = _cache_arrays(preset, data_dir, split)
    assert src.info.num_classes == len(names)
    counts[split] = np.bincount(arrays["label"], minlength=len(names))
    assert [int(r[split]) for r in table[:-1]] == counts[split].tolist()
    assert int(table[-1][split]) == len(src)
    fg = arrays["mask"].reshape(len(src), -1).mean(axis=1)
    assert int(share[split]["examples"]) == len(src)
    assert float(share[split]["mean"]) == pytest.approx(fg.mean(), abs=1e-4)
    assert float(share[split]["min"]) == pytest.approx(fg.min(), abs=1e-4)
    assert 0 < fg.min() and fg.max() < 1  # masks mark an object, not the whole image
  assert [int(r["total"]) for r in table[:-1]] == sum(counts.values()).tolist()
  dataset = prep_cfgs.get_config(preset).data.dataset
  for name in (f"examples_{dataset}.png",
               "figure2_gtsrb_ic.png" if dataset == "gtsrb_ic" else "figure3_coco_ic.png"):
    with open(os.path.join(reports, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
  if dataset == "gtsrb_ic":  # GTSRB's official totals beside ours
    for split in splits:
      assert int(table[-1][f"official {split}"]) == papers.GTSRB_OFFICIAL[split]
      assert int(table[-1][f"{split} - official {split}"]) == (
          counts[split].sum() - papers.GTSRB_OFFICIAL[split])
  else:  # the paper's Table 1 beside ours, per class
    for k, (ours, theirs) in enumerate((("train", "train"), ("val", "test"))):
      for row in table[:-1]:
        assert int(row[f"paper {theirs}"]) == papers.TABLE1_COCO[row["class"]][k]
        assert int(row[f"{ours} - paper {theirs}"]) == int(row[ours]) - int(row[f"paper {theirs}"])
      assert int(table[-1][f"paper {theirs}"]) == papers.TABLE1_COCO_TOTAL[k]
  return counts


def _check_study(workdir, *, dataset, num_classes, image_size, stdout):
  """Table 4 == results.json; the preset's model and training; the findings."""
  res = io.read_json(os.path.join(workdir, "results.json"))
  cfg = io.read_json(os.path.join(workdir, "config.json"))
  cfg = cfg.get("config", cfg)
  assert cfg["model"]["variant"] == "imagenet" and cfg["model"]["width"] == 1.0
  assert cfg["train"]["adversarial_init"] == "scratch"
  d = res["dataset"]
  assert (d["name"], d["num_classes"], d["image_size"]) == (dataset, num_classes, image_size)
  assert d["num_train"] == 16 and d["num_eval"] == 8
  rows = _csv(os.path.join(workdir, "table.csv"))
  assert [r["model"] for r in rows] == [masks_cfgs.MODEL_LABELS[n] for n in papers.TABLE4_ROWS]
  for row, name in zip(rows, papers.TABLE4_ROWS):
    m = res["models"][name]
    assert m["n"] == 8 and m["train_steps"] == 2  # 16 images / batch 8, one epoch
    for label, fn in masks_report.TABLE_METRICS:
      want = masks_report.cell(fn, m)  # "-": a column this model has not
      column = masks_report.ours_column(dataset, label)
      if column not in row:  # a column the study does not write (AutoAttack off)
        assert want == "-", (name, column)
        continue
      got = row[column]
      assert (got == want) if want == "-" else float(got) == want, name
    for label, fn, key in masks_report.PAPER_METRICS:  # the paper's cell and the difference
      theirs = papers.TABLE4[dataset][name][key]
      assert float(row[masks_report.paper_column(dataset, label)]) == theirs
      assert float(row[masks_report.diff_column(dataset, label)]) == pytest.approx(
          common.pct(fn(m)) - theirs, abs=0.006)
    assert m["robust"] <= min(m["per_attack"].values())
    assert max(m["per_attack"].values()) <= m["clean"]
    assert [c["eps"] for c in m["curve"]] == pytest.approx([0.0, 8 / 255])
    tc = io.read_json(os.path.join(workdir, "models", name, "config.json"))
    tc = tc.get("config", tc)
    assert tc["model"] == "vgg19" and tc["model_kwargs"]["variant"] == "imagenet"
    assert tc["adversarial"] == name.endswith("adversarial") and not tc["init_from"]
  for s in masks_report.findings(res["models"]):
    assert s in res["findings"]
  judged = res["claims"]  # the paper's claims on this dataset, with intervals over 8 images
  assert [(c["regime"], c["metric"], c["kind"]) for c in judged] == [
      (c.regime, c.metric, c.kind) for c in papers.CLAIMS if c.dataset == dataset]
  for c in judged:
    assert c["verdict"] in claims.VERDICTS and c["ours"]["n"] == 8
    assert c["text"] in res["findings"]
  summary = open(os.path.join(workdir, "summary.md")).read()
  for s in res["findings"]:
    assert s in summary and s in stdout
  for name in ("curves.png", "dimension.png", "training.png"):
    with open(os.path.join(workdir, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  dims = _csv(os.path.join(workdir, "dimension.csv"))
  assert [int(r["images"]) for r in dims] == [2, 2, 2, 2]
  for r in dims:  # full-image models attack every pixel, masked models the foreground
    assert float(r["N, X attacked px"]) == image_size ** 2
    assert float(r["N, X_F attacked px"]) < image_size ** 2
  return res


def test_gtsrb_paper_end_to_end(gtsrb):
  names = tuple(pdata.load("gtsrb_ic", split="test", data_dir=gtsrb["data_dir"],
                           image_size=32).info.class_names)
  assert len(names) == 43 and len(set(names)) == 43
  counts = _check_dataset_artefacts("gtsrb_paper", gtsrb["data_dir"], gtsrb["reports"],
                                    ("train", "test"), names)
  assert counts["train"].tolist() == [1] * 43 and counts["test"].tolist() == [1] * 43
  _check_study(gtsrb["workdir"], dataset="gtsrb_ic", num_classes=43, image_size=32,
               stdout=gtsrb["stdout"])


def test_coco_paper_one_crop_per_object(coco):
  truth = coco["truth"]
  counts = _check_dataset_artefacts("coco_paper", coco["data_dir"], coco["reports"],
                                    ("train", "val"), PAPER_CLASSES)
  for split in ("train", "val"):  # one crop per kept annotation, per class
    kept = collections.Counter(t["category"] for t in truth[split])
    assert counts[split].tolist() == [kept[c] for c in PAPER_CLASSES], split
    assert counts[split].sum() == len(truth[split])
  assert any(t["second"] for t in truth["train"])  # two objects of one class: two crops
  _check_study(coco["workdir"], dataset="coco_ic", num_classes=10, image_size=64,
               stdout=coco["stdout"])


def test_report_combines_both_datasets(gtsrb, coco, tmp_path):
  out = str(tmp_path / "table4")
  studies = (gtsrb["workdir"], coco["workdir"])
  proc = _ok(paper_fixtures.run_binary(
      "experiments.report", "--config=experiments/configs/report.py",
      f"--config.studies={studies!r}", f"--workdir={out}"))
  rows = _csv(os.path.join(out, "table4.csv"))
  assert [r["model"] for r in rows] == [masks_cfgs.MODEL_LABELS[n] for n in papers.TABLE4_ROWS]
  assert list(rows[0])[2].startswith("MS-COCO-IC")  # the paper's column order
  for w, ds, label in zip(studies, ("gtsrb_ic", "coco_ic"), ("GTSRB-IC", "MS-COCO-IC")):
    res = io.read_json(os.path.join(w, "results.json"))
    for row, name in zip(rows, papers.TABLE4_ROWS):
      m = res["models"][name]
      assert float(row[f"{label} natural (%)"]) == common.pct(m["clean"])
      assert float(row[f"{label} PGD (%)"]) == common.pct(m["per_attack"]["pgd"])
      assert float(row[f"{label} PGD, paper (%)"]) == papers.TABLE4[ds][name]["pgd"]
  combined = io.read_json(os.path.join(out, "results.json"))
  assert set(combined["findings"]) == {"gtsrb_ic", "coco_ic"}
  assert combined["cross_dataset"]["paper"] == -13.5
  assert combined["cross_dataset"]["text"] in proc.stdout
  assert open(os.path.join(out, "table4.md")).read().strip() in proc.stdout
  # Two studies of one dataset: one error naming both, nothing written.
  bad = str(tmp_path / "bad")
  proc = paper_fixtures.run_binary(
      "experiments.report", "--config=experiments/configs/report.py",
      f"--config.studies={(gtsrb['workdir'], gtsrb['workdir'])!r}", f"--workdir={bad}")
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  (line,) = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert "2 studies of GTSRB-IC" in line and gtsrb["workdir"] in line
  assert not os.path.exists(bad)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("imagenet_paper")
  folder, h5, workdir = str(tmp / "images"), str(tmp / "mnv2.h5"), str(tmp / "study")
  paper_fixtures.write_photo_folder(folder)
  src = pdata.load("image_folder", split="test", data_dir=folder, image_size=224)
  x = pdata.to_arrays(src)["image"]
  paper_fixtures.write_mobilenet_v2_h5(h5, x)
  proc = _ok(paper_fixtures.run_binary(
      "experiments.perceptual_cam", "--config=experiments/configs/perceptual_cam.py:imagenet_paper",
      f"--config.data.data_dir={folder}", f"--config.model.keras_weights={h5}",
      f"--workdir={workdir}", "--config.data.num_images=3", "--config.data.candidates=6",
      "--config.attack.ssim_steps=2", "--config.attack.pgd_steps=2",
      "--config.attack.diagnostics=False", "--config.report.bootstrap=200",
      "--config.attack.checklist.enabled=False"))
  return {"x": x, "h5": h5, "workdir": workdir, "stdout": proc.stdout}


def test_imagenet_paper_on_photographs(imagenet):
  import jax
  from percadv_jax.models import load_keras_weights
  module, variables = load_keras_weights("mobilenet_v2", imagenet["h5"])
  assert module.width == 1.0 and module.num_classes == 1000
  logits = np.asarray(jax.jit(module.apply)(variables, imagenet["x"]))
  assert np.abs(logits - logits[:1]).max() > 1e-2 * np.abs(logits).max()  # input-sensitive
  assert len(set(logits.argmax(-1).tolist())) > 1
  w = imagenet["workdir"]
  res = io.read_json(os.path.join(w, "results.json"))
  assert res["seeds"] == [0, 1]
  assert res["model"]["cam_layer"] == "out_relu"
  d = res["data"]
  assert (d["dataset"], d["image_size"], d["label_source"]) == ("image_folder", 224, "prediction")
  assert d["num_images"] == 3
  for seed, sel in d["selection"].items():  # labels = the model's own predictions
    assert sel["labels"] == logits[sel["indices"]].argmax(-1).tolist(), seed
  ssim = res["attacks"]["ssim"]
  assert ssim["n"] == 6 and ssim["successes"] > 0  # 3 images x 2 seeds
  assert ssim["ball_violation_max"] <= 1e-4
  for name in ("ssim", "linf", "l2"):
    st = res["attacks"][name]
    assert 0 <= st["successes"] <= st["n"]
    for kind in ("one_minus_ssim", "abs_d"):  # agreement rests on the fooled images only
      assert res["agreement"][name][f"{kind}/grad_cam_pp_pearson"]["n"] <= st["successes"]
  rows = _csv(os.path.join(w, "attacks.csv"))
  for row, name in zip(rows, ("ssim", "linf", "l2")):
    assert int(row["fooled"]) == res["attacks"][name]["successes"]
  paper, addition = res["answer"]["paper"], res["answer"]["addition"]
  assert paper[0].startswith("Answer (from the 1 - SSIM map")
  assert "nothing to compare" not in paper[0] and "nothing to compare" not in paper[1]
  assert "nothing to compare" not in addition[0] and "nothing to compare" not in addition[1]
  assert f"n = {res['agreement']['ssim']['one_minus_ssim/grad_cam_pp_pearson']['n']}" \
      in addition[2]
  assert f"n = {res['direct']['ssim']['one_minus_ssim/energy_top10']['n']}" in paper[2]
  for layers in res["sanity"]["cascade"]["layers"].values():  # above out_relu: the head only
    assert layers["above_cam"] == ["predictions"] == layers["logits"]
  for line in paper + addition:
    assert line in imagenet["stdout"]
  for name in ("ssim", "linf", "l2"):
    with open(os.path.join(w, "figures", f"{name}.png"), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
