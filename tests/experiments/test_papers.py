"""The papers' facts, the presets' labels, our tables beside the paper's, the claims' intervals and
verdicts, the combined report's rule and the input-dimension analysis, checked by hand."""

import os

import numpy as np
import pytest

from experiments import common, papers
from experiments import report as combined_report
from experiments.configs import attention_masks as masks_cfgs
from experiments.configs import perceptual_cam as perc_cfgs
from experiments.configs import prepare_data as prep_cfgs
from experiments.configs import report as report_cfgs
from experiments.masks_study import claims, dimension, evaluate, report
from percadv_jax import io

ROWS = papers.TABLE4_ROWS


# ---------------------------------------------------------------------------------- the facts
def test_table4_rows_are_the_ones_the_text_fixes():
  for (ds, regime, metric), figure in papers.TEXT_FIGURES.items():
    (c,) = [c for c in papers.CLAIMS
            if (c.dataset, c.regime, c.metric, c.kind) == (ds, regime, metric, "gain")]
    assert c.paper == figure
  for (ds, regime, metric), bound in papers.ABSTRACT_LOWER_BOUND.items():
    t = papers.TABLE4[ds]
    assert t[f"masked_{regime}"][metric] - t[f"full_{regime}"][metric] > bound
  gains = {(c.dataset, c.regime, c.metric): c.paper for c in papers.CLAIMS if c.kind == "gain"}
  assert gains == {("coco_ic", "natural", "pgd"): 0.73, ("gtsrb_ic", "natural", "pgd"): 19.69,
                   ("coco_ic", "adversarial", "natural"): 11.41,
                   ("coco_ic", "adversarial", "pgd"): 22.82,
                   ("gtsrb_ic", "adversarial", "pgd"): 9.32}
  assert all(c.paper >= 0 for c in papers.CLAIMS if c.kind == "no_loss")
  train, test = zip(*papers.TABLE1_COCO.values())
  assert (sum(train), sum(test)) == papers.TABLE1_COCO_TOTAL == (100000, 51271)
  from percadv_jax.data.coco import PAPER_CLASSES
  assert tuple(papers.TABLE1_COCO) == PAPER_CLASSES


# --------------------------------------------------------------------------- preset labels
def _paper_presets(module):
  return [p for p in module.PRESETS if p.endswith("_paper") or p == "gtsrb_grabcut"]


@pytest.mark.parametrize("module,sources", [
    (masks_cfgs, masks_cfgs.FIELD_SOURCES), (prep_cfgs, prep_cfgs.FIELD_SOURCES),
    (perc_cfgs, papers.PERCEPTUAL_CAM_FIELD_SOURCES)])
def test_every_paper_preset_field_is_labelled(module, sources):
  presets = _paper_presets(module)
  assert presets
  for preset in presets:
    assert preset in sources, f"{module.__name__}:{preset} has no FIELD_SOURCES"
    assert papers.check_sources(module.get_config(preset), sources[preset]) == [], preset


def test_the_label_check_can_fail():
  c = masks_cfgs.get_config("gtsrb_paper")
  labels = dict(masks_cfgs.FIELD_SOURCES["gtsrb_paper"])
  del labels["train.epochs"]
  labels["train.nope"] = ("ours", "x")
  labels["seed"] = ("guess", "x")
  assert papers.check_sources(c, labels) == [
      "train.epochs: unlabelled", "train.nope: labelled but not a field",
      "seed: label ('guess', 'x') is not (one of ('paper', 'inferred', 'ours'), reason)"]


def test_our_choices_are_not_credited_to_the_paper():
  ours = ("model.variant", "train.adversarial_init", "train.optimizer", "train.epochs",
          "train.learning_rate", "train.attack.eps", "train.attack.steps", "eval.eps",
          "eval.steps", "eval.apgd_steps", "data.image_size")
  for preset in ("gtsrb_paper", "coco_paper"):
    labels = masks_cfgs.FIELD_SOURCES[preset]
    for field in ours:
      assert labels[field][0] == "ours", (preset, field)
  assert masks_cfgs.FIELD_SOURCES["coco_paper"]["data.min_area"][0] == "ours"
  assert masks_cfgs.FIELD_SOURCES["coco_paper"]["data.margin"][0] == "ours"
  assert masks_cfgs.FIELD_SOURCES["coco_paper"]["data.num_train"][0] == "inferred"
  assert papers.PERCEPTUAL_CAM_FIELD_SOURCES["imagenet_paper"]["attack.ssim_steps"][0] == "ours"
  # The paper's segmenter in the paper preset, ours in its own.
  assert masks_cfgs.get_config("gtsrb_paper").data.segmenter == "centre"
  assert masks_cfgs.FIELD_SOURCES["gtsrb_paper"]["data.segmenter"][0] == "paper"
  assert masks_cfgs.get_config("gtsrb_grabcut").data.segmenter == "roi"
  assert masks_cfgs.FIELD_SOURCES["gtsrb_grabcut"]["data.segmenter"][0] == "ours"
  assert prep_cfgs.get_config("gtsrb_paper").data.to_dict() == \
      masks_cfgs.get_config("gtsrb_paper").data.to_dict()
  assert prep_cfgs.get_config("coco_paper").data.num_train == 100000


# -------------------------------------------------------------------------- bootstrap by hand
def test_bootstrap_difference_by_hand():
  # d = [1, 0]: resample means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4 -> 95% interval [0, 1].
  ci = common.bootstrap_difference([1, 0], [0, 0], resamples=4000, seed=0)
  assert ci == {"mean": 0.5, "lo": 0.0, "hi": 1.0, "n": 2}
  means = common.bootstrap_means([1, 0], resamples=20000, seed=1)
  assert set(np.unique(means)) == {0.0, 0.5, 1.0}
  np.testing.assert_allclose([np.mean(means == v) for v in (0, 0.5, 1)], [0.25, 0.5, 0.25],
                             atol=0.015)
  # Paired: two models right on the same images differ by exactly 0; unpaired they do not.
  a = [1, 0, 1, 1, 0, 1]
  assert common.bootstrap_difference(a, a, resamples=500, seed=0)[
      "lo"] == common.bootstrap_difference(a, a, resamples=500, seed=0)["hi"] == 0.0
  unpaired = common.bootstrap_difference(a, a, resamples=500, seed=0, paired=False)
  assert unpaired["lo"] < 0 < unpaired["hi"]
  # Large n: the percentile interval of a proportion is p +- 1.96 sqrt(p (1 - p) / n).
  x = np.arange(10000) % 4 == 0
  ci = common.bootstrap_difference(x, resamples=4000, seed=0)
  half = 1.96 * np.sqrt(0.25 * 0.75 / x.size)
  assert ci["mean"] == 0.25
  np.testing.assert_allclose([ci["lo"], ci["hi"]], [0.25 - half, 0.25 + half], atol=0.0015)
  with pytest.raises(ValueError, match="same length"):
    common.bootstrap_difference([1, 0], [1], resamples=10, seed=0)


@pytest.mark.parametrize("kind,paper,lo,hi,want", [
    ("gain", 5.0, 3.0, 7.0, "holds"), ("gain", 5.0, 6.0, 9.0, "holds"),
    ("gain", 5.0, 1.0, 4.0, "direction holds"), ("gain", 5.0, -1.0, 4.0, "does not hold"),
    ("gain", 5.0, -5.0, -1.0, "does not hold"), ("gain", -13.5, -20.0, -15.0, "holds"),
    ("gain", -13.5, -10.0, -2.0, "direction holds"), ("gain", -13.5, -3.0, 2.0, "does not hold"),
    ("gain", None, 1.0, 2.0, "direction holds"), ("gain", None, -1.0, 1.0, "does not hold"),
    ("no_loss", 0.0, -1.0, 0.5, "holds"), ("no_loss", 2.18, -3.0, -1.0, "does not hold")])
def test_verdict_rule(kind, paper, lo, hi, want):
  assert claims.verdict(kind, paper, {"lo": lo, "hi": hi})[0] == want


def test_verdict_without_records():
  assert claims.verdict("gain", 1.0, None)[0] == "not judged"


# ---------------------------------------------------------------------------- fake studies
def _summary(clean, pgd, apgd=None):
  apgd = pgd if apgd is None else apgd
  return {"n": len(clean), "clean": float(np.mean(clean)), "robust": float(np.mean(
      np.asarray(pgd) & np.asarray(apgd))), "per_attack": {"pgd": float(np.mean(pgd)),
                                                           "apgd": float(np.mean(apgd))},
          "curve": [{"eps": 0.0, "per_attack": {"pgd": float(np.mean(clean))}},
                    {"eps": 8 / 255, "per_attack": {"pgd": float(np.mean(pgd))}}]}


def _study(seed, n=40, size=32, masked_px=None):
  """Models and per-example records of one dataset: random outcomes, masked models better."""
  rng = np.random.default_rng(seed)
  fg = rng.integers(50, 600, n) if masked_px is None else np.asarray(masked_px)
  models, records = {}, {}
  for k, name in enumerate(ROWS):
    clean = rng.random(n) < 0.6 + 0.05 * k
    pgd = clean & (rng.random(n) < 0.2 + 0.15 * k)
    apgd = pgd & (rng.random(n) < 0.9)
    models[name] = _summary(clean, pgd, apgd)
    records[name] = {"clean": clean, "pgd": pgd, "apgd": apgd, "robust": pgd & apgd,
                     "foreground": fg, "attacked": fg if name.startswith("masked")
                     else np.full(n, size * size), "label": np.zeros(n, np.int64),
                     "channels": np.int64(3)}
  return models, records


def test_table4_ours_beside_the_papers():
  studies = {"gtsrb_ic": _study(1)[0], "coco_ic": _study(2)[0]}
  # Studies given GTSRB-IC first: the table keeps the paper's order, MS-COCO-IC first.
  columns, rows = report.table4([("gtsrb_ic", studies["gtsrb_ic"]),
                                 ("coco_ic", studies["coco_ic"])])
  head = ["model", "paper row"]
  for ds in ("MS-COCO-IC", "GTSRB-IC"):
    for m in ("natural", "PGD"):
      head += [f"{ds} {m} (%)", f"{ds} {m}, paper (%)", f"{ds} {m}, ours - paper"]
  head += [f"{ds} {m} (%)" for ds in ("MS-COCO-IC", "GTSRB-IC") for m in ("APGD", "worst case")]
  assert columns == head
  assert [r["paper row"] for r in rows] == ["N, X", "N, X_F", "A, X", "A, X_F"]
  for row, name in zip(rows, ROWS):
    for ds, lab in (("coco_ic", "MS-COCO-IC"), ("gtsrb_ic", "GTSRB-IC")):
      m = studies[ds][name]
      for metric, key, ours in (("natural", "natural", m["clean"]),
                                ("PGD", "pgd", m["per_attack"]["pgd"])):
        assert row[f"{lab} {metric} (%)"] == round(100 * ours, 2)
        assert row[f"{lab} {metric}, paper (%)"] == papers.TABLE4[ds][name][key]
        assert row[f"{lab} {metric}, ours - paper"] == round(
            round(100 * ours, 2) - papers.TABLE4[ds][name][key], 2)
      assert row[f"{lab} worst case (%)"] == round(100 * m["robust"], 2)
  # A dataset the paper does not use: our columns only, and the paper's table beside, unchanged.
  models = _study(3)[0]
  columns, _ = report.table("synthetic_signs", models)
  assert not any("paper" in c for c in columns[2:])
  columns, rows = report.paper_beside("synthetic_signs", models)
  assert columns[2:4] == ["ours: synthetic signs natural (%)", "ours: synthetic signs PGD (%)"]
  for row, name in zip(rows, ROWS):
    for ds in papers.TABLE4_DATASETS:
      assert row[f"paper: {papers.DATASET_LABELS[ds]} PGD (%)"] == papers.TABLE4[ds][name]["pgd"]


def test_claims_by_hand():
  models, records = _study(4)
  judged = claims.judge("coco_ic", models, records)
  assert [(c["regime"], c["metric"], c["kind"]) for c in judged] == [
      (c.regime, c.metric, c.kind) for c in papers.CLAIMS if c.dataset == "coco_ic"]
  for c in judged:
    key = {"natural": "clean", "pgd": "pgd"}[c["metric"]]
    m, f = records[f"masked_{c['regime']}"][key], records[f"full_{c['regime']}"][key]
    assert c["ours"]["mean"] == pytest.approx(100 * (m.mean() - f.mean()))
    assert c["ours"]["lo"] <= c["ours"]["mean"] <= c["ours"]["hi"]
    assert c["ours"]["n"] == 40
    t = papers.TABLE4["coco_ic"]
    assert c["paper"] == round(t[f"masked_{c['regime']}"][c["metric"]]
                               - t[f"full_{c['regime']}"][c["metric"]], 2)
    assert c["verdict"] == claims.verdict(c["kind"], c["paper"], c["ours"])[0]
    assert f"({c['paper']:+.2f} points)" in c["text"] and c["verdict"] in c["text"]
    assert f"{c['ours']['mean']:+.2f} points, 95% CI [{c['ours']['lo']:+.2f}" in c["text"]
  # Without per-example records: no interval, not judged; other datasets: directions only.
  assert {c["verdict"] for c in claims.judge("coco_ic", models, {})} == {"not judged"}
  other = claims.judge("synthetic_signs", models, records)
  assert len(other) == len({(c.regime, c.metric, c.kind) for c in papers.CLAIMS})
  assert all(c["paper"] is None and c["verdict"] != "holds" for c in other
             if c["kind"] == "gain")
  # Across the datasets: GTSRB-IC's adversarial PGD gain minus MS-COCO-IC's.
  _, gtsrb = _study(5, n=30)
  across = claims.cross_dataset({"coco_ic": records, "gtsrb_ic": gtsrb})
  d = {ds: (r["masked_adversarial"]["pgd"].astype(float) - r["full_adversarial"]["pgd"]).mean()
       for ds, r in (("coco_ic", records), ("gtsrb_ic", gtsrb))}
  assert across["paper"] == round(9.32 - 22.82, 2)
  assert across["ours"]["mean"] == pytest.approx(100 * (d["gtsrb_ic"] - d["coco_ic"]))
  assert (across["ours"]["n"], across["ours"]["n_other"]) == (30, 40)
  assert claims.cross_dataset({"coco_ic": records}) is None


# ------------------------------------------------------------------- the combined report's rule
def _write_study(root, name, dataset, *, image_size=32, seed=0, config=None):
  w = os.path.join(root, name)
  models, records = _study(seed, size=image_size)
  os.makedirs(w)
  cfg = (config or masks_cfgs.get_config("gtsrb_paper" if dataset == "gtsrb_ic"
                                         else "coco_paper")).to_dict()
  io.write_json(os.path.join(w, "config.json"), cfg)
  judged = claims.judge(dataset, models, records)
  io.write_json(os.path.join(w, "results.json"), {
      "study": "attention_masks", "dataset": {"name": dataset, "image_size": image_size},
      "models": models, "claims": judged, "findings": [c["text"] for c in judged]})
  for n, r in records.items():
    evaluate.save_per_example(evaluate.per_example_path(w, n), r)
  return w


def _combine(studies, out):
  c = report_cfgs.get_config()
  c.studies = tuple(studies)
  return combined_report.run(c, out)


def test_combined_report_beside_the_paper(tmp_path):
  g = _write_study(str(tmp_path), "g", "gtsrb_ic", seed=1)
  c = _write_study(str(tmp_path), "c", "coco_ic", image_size=64, seed=2)
  out = _combine([g, c], str(tmp_path / "t4"))
  import csv
  with open(tmp_path / "t4" / "table4.csv") as f:
    rows = list(csv.DictReader(f))
  for row, name in zip(rows, ROWS):
    for ds, lab in (("coco_ic", "MS-COCO-IC"), ("gtsrb_ic", "GTSRB-IC")):
      assert float(row[f"{lab} PGD, paper (%)"]) == papers.TABLE4[ds][name]["pgd"]
      assert float(row[f"{lab} natural, paper (%)"]) == papers.TABLE4[ds][name]["natural"]
  summary = open(tmp_path / "t4" / "summary.md").read()
  assert out["cross_dataset"]["text"] in summary
  for fs in out["findings"].values():
    for s in fs:
      assert s in summary


@pytest.mark.parametrize("case,needles", [
    ("same_dataset", ["2 studies of GTSRB-IC", "/a (32 px)", "/b (64 px)"]),
    ("synthetic", ["synthetic_signs", "not of a dataset of the paper"]),
    ("family", ["different settings", "train.attack.eps: 0.03137", "/a", "/b"])])
def test_combined_report_refuses_mismatched_studies(tmp_path, case, needles):
  root = str(tmp_path)
  if case == "same_dataset":
    ws = [_write_study(root, "a", "gtsrb_ic"), _write_study(root, "b", "gtsrb_ic", image_size=64)]
  elif case == "synthetic":
    ws = [_write_study(root, "a", "synthetic_signs", config=masks_cfgs.get_config("quick"))]
  else:
    other = masks_cfgs.get_config("coco_paper")
    other.train.attack.eps = 4 / 255
    ws = [_write_study(root, "a", "gtsrb_ic"), _write_study(root, "b", "coco_ic", config=other)]
  with pytest.raises(ValueError) as e:
    _combine(ws, str(tmp_path / "t4"))
  for n in needles:
    assert n in str(e.value), str(e.value)
  assert not (tmp_path / "t4").exists()  # refused before writing anything


# ------------------------------------------------------------------------- input dimension
def test_dimension_by_hand(tmp_path):
  fg = np.array([10, 80, 20, 70, 30, 60, 40, 50])  # quartiles: {10,20} {30,40} {50,60} {70,80}
  models, records = _study(6, n=8, size=10, masked_px=fg)
  columns, rows = dimension.binned(records)
  assert [r["foreground px"] for r in rows] == ["10-20", "30-40", "50-60", "70-80"]
  groups = [[0, 2], [4, 6], [7, 5], [3, 1]]
  for row, g in zip(rows, groups):
    assert row["images"] == 2
    assert row["N, X attacked px"] == 100.0
    assert row["N, X_F attacked px"] == fg[g].mean()
    for name in ROWS:
      assert row[f"{papers.ROW_LABELS[name]} PGD (%)"] == round(
          100 * records[name]["pgd"][g].mean(), 2)
  # s = mean sqrt(d), d = attacked pixels x 3 channels.
  assert dimension.sqrt_dimension(records["full_natural"], 8) == pytest.approx(np.sqrt(300))
  assert dimension.sqrt_dimension(records["masked_natural"], 4) == pytest.approx(
      np.sqrt(3 * fg[:4]).mean())
  # Matched eps x sqrt(d): full accuracy 1 -> 0 linearly over eps [0, 8]; masked 0.9 at 8.
  full = {"curve": [{"eps": 0.0, "per_attack": {"pgd": 1.0}}, {"eps": 8.0,
                                                               "per_attack": {"pgd": 0.0}}]}
  masked = {"curve": [{"eps": 0.0, "per_attack": {"pgd": 1.0}}, {"eps": 8.0,
                                                                 "per_attack": {"pgd": 0.9}}]}
  g = dimension.matched_gain(full, masked, s_full=4.0, s_masked=1.0, eps=8.0)
  # G = 90 - 0 points; at eps x s matched the full model is at eps 2: accuracy 75%; G_d = 15.
  assert g["gain"] == pytest.approx(90) and g["eps_full"] == 2.0
  assert g["gain_matched"] == pytest.approx(15) and g["share"] == pytest.approx(75 / 90)
  assert dimension.matched_gain(full, masked, 4.0, 1.0, eps=9.0) is None
  out = dimension.write(str(tmp_path), models, records, eps=8 / 255, examples=8, title="t")
  assert [f["regime"] for f in out["findings"]] == ["natural", "adversarial"]
  for f in out["findings"]:
    assert f["verdict"] in ("mostly explained", "partly explained", "not explained",
                            "no gain to explain")
  import csv
  with open(tmp_path / "dimension.csv") as f:
    assert [r["quartile"] for r in csv.DictReader(f)] == ["Q1", "Q2", "Q3", "Q4"]
  with open(tmp_path / "dimension_curves.csv") as f:
    curve_rows = list(csv.DictReader(f))
  assert len(curve_rows) == 4 * 2
  assert float(curve_rows[1]["eps x sqrt(d)"]) == pytest.approx(8 / 255 * np.sqrt(300), abs=1e-3)
  with open(tmp_path / "dimension.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------- MS-COCO-IC choices, measured on fixtures
def test_coco_paper_choices(tmp_path):
  """The numbers quoted in ``attention_masks.coco_paper``'s docstring."""
  from experiments import prepare_data
  from percadv_jax.data import cache, coco, stats
  from percadv_jax.data.coco import PAPER_CLASSES
  from tests.data.coco_fixture import write_coco
  raw = str(tmp_path / "raw")
  write_coco(raw, year=2014, splits=("train", "val"), per_class=(3, 2))
  d = prep_cfgs.get_config("coco_paper").data
  got = {}
  for min_area, margin in ((d.min_area, d.margin), (0.0, d.margin), (d.min_area, 0.0)):
    srcs = {s: cache.load_cached(coco.prepare(
        raw_dir=raw, data_dir=str(tmp_path / "c"), split=s, year=2014, classes=PAPER_CLASSES,
        crop="object", min_area=min_area, margin=margin, progress=False))
        for s in ("train", "val")}
    got[(min_area, margin)] = srcs
  preset = got[(1024.0, 0.1)]
  counts = {k: tuple(len(s) for s in v.values()) for k, v in got.items()}
  assert counts == {(1024.0, 0.1): (40, 20), (0.0, 0.1): (70, 40), (1024.0, 0.0): (40, 20)}
  share = {k: stats.foreground_share(v["train"])["mean"] for k, v in got.items()}
  assert round(share[(1024.0, 0.1)], 2) == 0.49 and round(share[(1024.0, 0.0)], 2) == 0.72
  # Table 1 of the preset: a drawn subset column, the paper's columns and the differences.
  sub = common.subset_indices(40, 20, seed=0)
  rows, columns = stats.table1(preset, subsets={"train": sub},
                               reference=prepare_data.table1_reference("coco_ic", preset))
  assert columns == ["label", "class", "train", "val", "total", "train (20 drawn)",
                     "paper train", "train (20 drawn) - paper train", "paper test",
                     "val - paper test"]
  drawn = np.bincount(preset["train"].labels[sub], minlength=10)
  for row, cls, n in zip(rows, PAPER_CLASSES, drawn):
    assert row["class"] == cls and row["train (20 drawn)"] == n
    assert row["paper train"] == papers.TABLE1_COCO[cls][0]
    assert row["train (20 drawn) - paper train"] == n - papers.TABLE1_COCO[cls][0]
    assert row["val - paper test"] == row["val"] - papers.TABLE1_COCO[cls][1]
  assert rows[-1]["paper train"] == 100000 and rows[-1]["paper test"] == 51271
  assert rows[-1]["train (20 drawn)"] == 20


def test_paper_presets_train_data_parallel_and_the_others_on_one_device():
  """``train.data_parallel`` reaches every model's ``TrainConfig``: True in both studies' paper
  presets and their synthetic stand-ins, False in the presets whose numbers are the demo's."""
  from experiments.masks_study import train_config
  from experiments.perceptual_study import model as perc_model
  for preset in masks_cfgs.PRESETS:
    c = masks_cfgs.get_config(preset)
    want = preset in masks_cfgs.FIELD_SOURCES or preset.endswith("_standin")
    assert c.train.data_parallel is want, preset
    assert all(train_config(c, name).data_parallel is want for name in c.models)
  for preset in perc_cfgs.PRESETS:
    c = perc_cfgs.get_config(preset)
    assert perc_model.train_config(c, 0).data_parallel is (preset == "imagenet_paper"), preset
