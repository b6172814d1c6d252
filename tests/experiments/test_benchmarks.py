"""The benchmarks end to end at their ``*_quick`` sizes (``experiments.benchmarks``), their
command line's one-line errors (``experiments.benchmark``) and the results file's sections."""

import importlib.util
import json
import math
import os

import jax
import pytest

from experiments import benchmarks
from experiments.benchmarks import conv, results
from experiments.configs import benchmark as presets
from percadv_jax import io
from tests.experiments.test_binaries import run_binary

HAS_TORCH = importlib.util.find_spec("torch") is not None
CONFIG = "--config=experiments/configs/benchmark.py"


def _quick(name, tmp_path, **overrides):
  """The ``<name>_quick`` preset, recorded into a temporary results file."""
  c = presets.get_config(f"{name}_quick")
  c.results_file = str(tmp_path / "benchmarks.md")
  for k, v in overrides.items():
    c[k] = v
  return c


def _finite(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _section(path, name):
  text = open(path).read()
  begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
  assert text.count(begin) == 1 and text.count(end) == 1, text
  return text[text.index(begin):text.index(end)]


def test_every_benchmark_has_a_quick_preset_that_validates():
  for name in benchmarks.BENCHMARKS:
    c = presets.get_config(f"{name}_quick")
    assert c.benchmark == name and c.record
    benchmarks.validate(c)
    assert presets.get_config(name).benchmark == name
  with pytest.raises(ValueError, match="no benchmark chosen.*attacks_quick"):
    benchmarks.validate(presets.get_config(None))
  with pytest.raises(ValueError, match="unknown preset 'nope'"):
    presets.get_config("nope")


@pytest.mark.parametrize("preset,field,value", [
    ("attacks_quick", "skip", ("torch", "jax")),
    ("attacks_quick", "eps", -0.1),
    ("autoattack_quick", "targets", 4),
    ("cam_quick", "layer", "nope"),
    ("perceptual_quick", "sizes", (4,)),
    ("pipeline_quick", "stages", ("pgd,warp",)),
    ("training_quick", "guard_examples", 40),
    ("attacks_quick", "tag", "a b"),
])
def test_validation_names_the_field(preset, field, value):
  c = presets.get_config(preset)
  c[field] = value
  with pytest.raises(ValueError, match=field.rstrip("s")):
    benchmarks.validate(c)


def test_cli_bad_value_is_one_line_before_any_work(tmp_path):
  workdir = tmp_path / "w"
  proc = run_binary("experiments.benchmark", f"{CONFIG}:cam_quick", "--config.models=resnet",
                    f"--workdir={workdir}", timeout=300)
  assert proc.returncode == 1, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: unknown models entry 'resnet'"), lines
  assert not workdir.exists()


def test_results_file_replaces_its_section(tmp_path):
  path = str(tmp_path / "benchmarks.md")
  results.update("benchmark_a", "first", path=path)
  results.update("benchmark_b", "other", path=path)
  results.update("benchmark_a", "second", path=path)
  text = open(path).read()
  assert text.startswith("# Benchmark results") and "experiments.benchmark --config" in text
  assert "second" in _section(path, "benchmark_a") and "first" not in text
  assert "other" in _section(path, "benchmark_b")
  assert text.index("benchmark_a") < text.index("benchmark_b")  # replaced in place


@pytest.mark.slow  # a benchmark at tiny size: ~20-40 s
def test_attacks(tmp_path):
  skip = () if HAS_TORCH else ("torch",)
  c = _quick("attacks", tmp_path, skip=skip)
  w = str(tmp_path / "w")
  rows = benchmarks.run(c, w)
  methods = [r["method"] for r in rows]
  assert methods[:4] == ["floor", "ours", "ours_unroll", "foolbox"]
  assert any(m.startswith("torch_") for m in methods) == HAS_TORCH
  for r in rows:
    assert _finite(r["median_s"]) and r["median_s"] > 0, r
    assert r["vs_ours"] == pytest.approx(r["median_s"] / rows[1]["median_s"])
  res = io.read_json(os.path.join(w, "results.json"))
  assert set(res["ratios"]) >= {"a_ours_over_floor", "a_unroll_over_floor", "b_foolbox_over_ours"}
  assert all(_finite(v) for v in res["ratios"].values())
  if HAS_TORCH:  # the PyTorch port computes the Flax model's logits
    assert res["torch_max_logit_diff"] < 1e-4
  assert "| ours |" in open(os.path.join(w, "benchmark_attacks.md")).read()
  assert "| a_ours_over_floor |" in _section(c.results_file, "benchmark_attacks")
  assert json.load(open(os.path.join(w, "config.json")))["steps"] == 2


@pytest.mark.slow  # a benchmark at tiny size: ~20-40 s
def test_autoattack(tmp_path):
  skip = () if HAS_TORCH else ("torch",)
  c = _quick("autoattack", tmp_path, skip=skip)
  w = str(tmp_path / "w")
  rows = benchmarks.run(c, w)
  names = [r["contender"] for r in rows]
  assert names[0] == "ours" and any(n.startswith("torch_") for n in names) == HAS_TORCH
  for r in rows:
    assert _finite(r["median_s"]) and r["min_s"] <= r["median_s"] <= r["max_s"], r
    after = [r[f"after_{a}"] for a in ("apgd_ce", "apgd_t", "fab_t", "square")]
    assert after == sorted(after, reverse=True) and r["robust"] == after[-1]  # a cascade
  res = io.read_json(os.path.join(w, "results.json"))
  if HAS_TORCH:  # the PyTorch port computes the Flax model's logits
    assert res["torch_max_logit_diff"] < 1e-4
    assert all(_finite(v) and v > 0 for v in res["ratios"].values())
    assert "| torch_over_ours_median |" in _section(c.results_file, "benchmark_autoattack")
  assert "| ours |" in open(os.path.join(w, "benchmark_autoattack.md")).read()
  assert json.load(open(os.path.join(w, "config.json")))["queries"] == 5


def test_perceptual(tmp_path):
  c = _quick("perceptual", tmp_path)
  out = benchmarks.run(c, str(tmp_path / "w"))
  assert [r["run"] for r in out["rows"]] == ["single", "batch1"]
  for r in out["rows"]:
    assert r["size"] == "16x16x3" and r["violation_max"] <= 1e-5
    assert abs(r["objective_gap_vs_cvxpy"]) < 1e-2  # the certified solver agrees with CVXPY
    assert all(_finite(r[k]) for k in ("jax_s_per_image", "cvxpy_s_per_image"))
  (j,) = out["jaxopt"]
  assert j["iterations_equal"] and j["objective_rel_diff_max"] < 1e-4
  assert "| 16x16x3 | batch1 |" in _section(c.results_file, "benchmark_perceptual")


@pytest.mark.slow  # a benchmark at tiny size: ~20-40 s
def test_pipeline(tmp_path):
  # Every stage but "torch" and "ssim" (the PyTorch PGD port and the LP solver against CVXPY
  # are timed in test_attacks and test_perceptual).
  c = _quick("pipeline", tmp_path, stages=("peak", "pgd", "train", "cam"), record=False)
  w = str(tmp_path / "w")
  rows = benchmarks.run(c, w)
  names = [r["stage"] for r in rows]
  assert names == ["pgd2", "floor(2x fwd+bwd)", "train_natural", "train_adversarial(pgd1)",
                   "grad_cam"]
  for r in rows:
    assert _finite(r["images_per_sec"]) and r["images_per_sec"] > 0, r
    assert r["images_per_sec"] == pytest.approx(r["images"] / r["seconds"])
  assert 0 < rows[1]["pgd_over_floor"] < 100 and rows[0]["fraction_of_peak"] > 0
  assert [r["stage"] for r in io.read_json(os.path.join(w, "results.json"))["rows"]] == names
  assert not os.path.exists(c.results_file)  # record=False writes no results file


@pytest.mark.slow  # a train.fit compile: ~20 s on 2 busy cores
def test_loader(tmp_path):
  c = _quick("loader", tmp_path, stages=("loader", "memory"), delete_cache=True)
  w = str(tmp_path / "w")
  rows = benchmarks.run(c, w)
  assert [r["image_size"] for r in rows] == [32]
  r = rows[0]
  assert _finite(r["loader_images_per_sec"]) and r["loader_images_per_sec"] > 0
  assert r["examples"] == 64 and 64 * 32 * 32 * 4 < r["cache_gb"] * 2**30 < 2 * 64 * 32 * 32 * 4
  assert 0 < r["peak_rss_gb"] < 64 and "train_images_per_sec" not in r
  assert not os.path.exists(os.path.join(w, "cache", "loader_benchmark", "train_32px"))
  section = _section(c.results_file, "benchmark_loader")
  assert "| 32 | 64 |" in section and "peak_rss_gb" in section
  c.stages = ("pgd",)
  with pytest.raises(ValueError, match="unknown stages entry 'pgd'"):
    benchmarks.validate(c)


@pytest.mark.slow  # a benchmark at tiny size: ~20-40 s
def test_training(tmp_path):
  c = _quick("training", tmp_path, skip=("torch",))  # PyTorch: test_training_step_rates
  w = str(tmp_path / "w")
  out = benchmarks.run(c, w)
  for name in ("natural", "pgd2", "fgsm_rs"):
    r = out[name]
    assert _finite(r["images_per_s"]) and r["images_per_s"] > 0
    assert 0 <= r["pgd_accuracy"] <= r["natural_accuracy"] <= 1
    assert os.path.isdir(os.path.join(w, "runs", name))
  assert out["steps"] == {}
  section = _section(c.results_file, "benchmark_training")
  assert "| fgsm_rs |" in section and "FGSM-RS / PGD-2" in section
  assert io.read_json(os.path.join(w, "results.json"))["pgd2"] == out["pgd2"]


@pytest.mark.skipif(not HAS_TORCH, reason="torch is a benchmark-only dependency "
                    "(requirements-bench.txt)")
@pytest.mark.slow  # a benchmark at tiny size: ~20-40 s
def test_training_step_rates():
  """The one-step comparison with PyTorch: interleaved rounds, same-round ratios."""
  from experiments.benchmarks import training
  c = presets.get_config("training_quick")
  c.rounds = 1
  steps = training.step_rates(c, threads_all=2)
  assert len(steps["rounds"]) == 1
  for rd in steps["rounds"]:
    assert set(rd) == {f"{k}_{who}" for k in ("pgd2", "fgsm_rs")
                       for who in ("ours", "ours_dp", "torch_1thr", "torch_2thr")}
    assert all(_finite(v) and v > 0 for v in rd.values())
  assert steps["devices"] == jax.device_count()
  for kind in ("pgd2", "fgsm_rs"):
    for suffix in ("", "_dp"):  # one device; data-parallel over every device
      assert steps["ratios"][kind + suffix] == pytest.approx(
          [rd[f"{kind}_ours{suffix}"] / max(rd[f"{kind}_torch_1thr"], rd[f"{kind}_torch_2thr"])
           for rd in steps["rounds"]])


@pytest.mark.slow  # a benchmark at tiny size: ~20-40 s
def test_conv_workers_and_summary(tmp_path):
  contenders = ("jax_xla", "jax_auto") + (("torch_1",) if HAS_TORCH else ())
  c = _quick("conv", tmp_path, contenders=contenders)
  w = str(tmp_path / "w")
  text = benchmarks.run(c, w)  # one worker process per contender, 2 interleaved rounds
  res = io.read_json(os.path.join(w, "results.json"))["vgg_tiny"]
  assert [r["contender"] for r in res["rows"]] == list(contenders)
  for r in res["rows"]:
    assert all(_finite(r[k]) and r[k] > 0 for k in ("fwdbwd_min_s", "pgd_median_s")), r
  assert len(res["raw"]["rounds"]) == 2
  # Every variant computes the same model: logits / gradients against XLA's convolutions, and
  # the PyTorch port's logits against Flax's.
  assert res["checks"]["jax_auto"]["logits"] < 1e-4 and res["checks"]["jax_auto"]["grad"] < 1e-4
  if HAS_TORCH:
    assert res["checks"]["torch_1"]["logits"] < 1e-4
    assert _finite(res["ratios"]["jax_auto"]["torch_best_over_ours_pgd"][0])
  assert set(res["ratios"]) == {"jax_xla", "jax_auto"}
  assert "| jax_auto |" in _section(c.results_file, "benchmark_conv_vgg_tiny")
  assert conv.NOTES.strip() in _section(c.results_file, "benchmark_conv")
  c.summarise_only = True  # re-reports the same figures, measuring nothing
  assert benchmarks.run(c, w) == text == open(os.path.join(w, "benchmark_conv.md")).read().strip()


@pytest.mark.slow
def test_gpu_rows_at_tiny_size_on_the_cpu(tmp_path):
  """The ``gpu`` preset at its tiny sizes: every row, the smoke sub-run of the masks study on 43
  synthetic classes, and on a CPU the section saying the GPU rows are not measured yet."""
  c = _quick("gpu", tmp_path, skip=() if HAS_TORCH else ("torch",))
  w = str(tmp_path / "w")
  rows = benchmarks.run(c, w)
  names = [r["stage"] for r in rows]
  torch_rows = [n for n in names if n.startswith("torch_pgd2(cpu,")]
  assert len(torch_rows) == (2 if HAS_TORCH else 0)  # one thread, the default threads
  assert names == ["pgd2", "floor(2x fwd+bwd)", "train_natural", "train_adversarial(pgd1)",
                   *torch_rows, "input", "smoke(gtsrb_paper)"]
  for r in rows[:-1]:
    assert _finite(r["images_per_sec"]) and r["images_per_sec"] > 0, r
  assert all(_finite(r["torch_over_ours"]) for r in rows if r["stage"].startswith("torch"))
  assert rows[-2]["input_over_train"] == pytest.approx(
      rows[-2]["images_per_sec"] / rows[3]["images_per_sec"])
  smoke = rows[-1]
  assert smoke["models"] == 1 and smoke["num_classes"] == 43 and _finite(smoke["seconds"])
  study = io.read_json(os.path.join(w, "smoke", "results.json"))
  assert study["dataset"]["num_classes"] == 43 and list(study["models"]) == ["full_natural"]
  assert 0 <= study["models"]["full_natural"]["clean"] <= 1
  smoke_train = io.read_json(os.path.join(w, "smoke", "models", "full_natural",
                                          "config.json"))
  assert smoke_train["data_parallel"] and smoke_train["epochs"] == 1
  assert [r["stage"] for r in io.read_json(os.path.join(w, "results.json"))["rows"]] == names
  section = _section(c.results_file, "benchmark_gpu")
  assert "not measured yet" in section and "benchmark.py:gpu" in section
