"""Tiny end-to-end run of the CAM benchmark (``experiments/benchmarks/cam.py``, preset
``cam_quick`` of ``experiments/configs/benchmark.py``)."""

import os

import pytest

from experiments import benchmarks
from experiments.configs import benchmark as presets
from percadv_jax import io


def test_benchmark_cam_writes_tables(tmp_path):
  workdir = str(tmp_path / "bench")
  config = presets.get_config("cam_quick")  # vgg19_small, grad_cam, batch 2, 32 px, width 1/16
  config.results_file = str(tmp_path / "benchmarks.md")
  # (same model and shapes as test_cam_model's vgg19 case: the CAM compile is shared)
  rows = benchmarks.run(config, workdir)
  assert len(rows) == 1 and rows[0]["layer"] == "block5_conv4"
  assert rows[0]["cam_s"] > 0 and rows[0]["fwd_bwd_s"] > 0
  assert abs(rows[0]["ratio"] - rows[0]["cam_s"] / rows[0]["fwd_bwd_s"]) < 1e-12
  for f in ("config.json", "metrics.jsonl", "benchmark_cam.md", "benchmark_cam.csv",
            "results.json"):
    assert os.path.exists(os.path.join(workdir, f)), f
  assert io.read_json(os.path.join(workdir, "results.json"))["rows"][0]["method"] == "grad_cam"
  text = open(config.results_file).read()
  assert text.count("<!-- begin benchmark_cam -->") == 1 and "| vgg19_small | grad_cam |" in text
  other = presets.get_config("cam_quick")
  other.batch_size = 3
  with pytest.raises(ValueError, match="different configuration.*batch_size: 2 -> 3"):
    benchmarks.run(other, workdir)
  other = presets.get_config("cam_quick")
  other.models = ("resnet",)
  with pytest.raises(ValueError, match="unknown models entry 'resnet'"):
    benchmarks.run(other, str(tmp_path / "b2"))
  assert not os.path.exists(tmp_path / "b2")
