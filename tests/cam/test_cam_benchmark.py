"""Tiny end-to-end run of experiments/benchmark_cam.py."""

import os

import pytest

from experiments import benchmark_cam
from percadv_jax import io


def test_benchmark_cam_writes_tables(tmp_path):
  workdir = str(tmp_path / "bench")
  config = benchmark_cam.Config(models=("vgg19_small",), methods=("grad_cam",), batch_size=2,
                                image_size=32, width=0.0625, num_classes=4, repeats=1)
  # (same model and shapes as test_cam_model's vgg19 case: the CAM compile is shared)
  rows = benchmark_cam.run(config, workdir)
  assert len(rows) == 1 and rows[0]["layer"] == "block5_conv4"
  assert rows[0]["cam_s"] > 0 and rows[0]["fwd_bwd_s"] > 0
  assert abs(rows[0]["ratio"] - rows[0]["cam_s"] / rows[0]["fwd_bwd_s"]) < 1e-12
  for f in ("config.json", "metrics.jsonl", "benchmark_cam.md", "benchmark_cam.csv",
            "results.json"):
    assert os.path.exists(os.path.join(workdir, f)), f
  assert io.read_json(os.path.join(workdir, "results.json"))["rows"][0]["method"] == "grad_cam"
  with pytest.raises(ValueError, match="different configuration"):
    benchmark_cam.run(benchmark_cam.Config(models=("vgg19_small",), batch_size=3), workdir)
  with pytest.raises(ValueError, match="unknown model"):
    benchmark_cam.run(benchmark_cam.Config(models=("resnet",)), str(tmp_path / "b2"))
