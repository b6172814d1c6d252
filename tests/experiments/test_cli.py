"""The command line: config files, overrides, validation before any work, one-line errors."""

import ml_collections
import pytest

from experiments import cli, masks_study, perceptual_study
from experiments.configs import attention_masks, perceptual_cam
from tests.experiments.test_binaries import run_binary

MASKS = "experiments.attention_masks"


def _one_line_error(proc, *needles):
  assert proc.returncode != 0
  err = proc.stderr.strip()
  assert "Traceback" not in err, err[-2000:]
  lines = [l for l in err.splitlines() if l.startswith(("error:", "FATAL"))]
  assert len(lines) == 1, err[-2000:]
  for n in needles:
    assert n in lines[0], lines[0]
  return lines[0]


@pytest.mark.parametrize("args,needles", [
    (["--config.data.dataset=mnist"], ["data.dataset", "mnist"]),
    (["--config.train.epochs=abc"], ["epochs"]),
    (["--config.nope=1"], ["nope"]),
    (["--config=experiments/configs/attention_masks.py:paperz"], ["paperz"]),
    (["--config=experiments/configs/nothere.py"], ["nothere.py"]),
    (["--config.models=full_natural,half"], ["half"]),
    (["--config.eval.eps=-0.1"], ["eval.eps"]),
    (["--config.data.dataset=gtsrb_ic"], ["data.data_dir"]),
    (["stray"], ["unexpected arguments: stray"]),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, args, needles):
  workdir = tmp_path / "w"
  proc = run_binary(MASKS, f"--workdir={workdir}", *args, timeout=300)
  _one_line_error(proc, *needles)
  assert not workdir.exists()  # nothing written: validated before any work


def test_workdir_problems_are_one_line(tmp_path):
  f = tmp_path / "a_file"
  f.write_text("x")
  _one_line_error(run_binary(MASKS, f"--workdir={f}", timeout=300), str(f))
  _one_line_error(run_binary(MASKS, f"--workdir={f / 'sub'}", timeout=300), str(f))


def test_perceptual_validation_needs_no_training():
  c = perceptual_cam.get_config("quick")
  c.cam.layer = "nope"
  with pytest.raises(ValueError, match="unknown layer 'nope'"):
    perceptual_study.validate(c)
  c = perceptual_cam.get_config("quick")
  c.ball.window = 64
  with pytest.raises(ValueError, match="ball.window"):
    perceptual_study.validate(c)
  c = perceptual_cam.get_config("quick")
  c.data.split = "val2"
  with pytest.raises(ValueError, match="data.split"):
    perceptual_study.validate(c)
  for field, value, msg in [("cam.energy_top_k", (0.1, 1.5), "cam.energy_top_k"),
                            ("sanity.nulls", ("random_model", "noise"), "sanity.nulls"),
                            ("sanity.cascade", ("all", "all"), "sanity.cascade"),
                            ("sanity.null_stage", "half", "sanity.null_stage"),
                            ("sanity.random_maps", 0, "sanity.random_maps"),
                            ("sanity.deletion_steps", -1, "sanity.deletion_steps"),
                            ("sanity.deletion_baseline", "black", "sanity.deletion_baseline")]:
    c = perceptual_cam.get_config("quick")
    group, name = field.split(".")
    c[group][name] = value
    with pytest.raises(ValueError, match=msg):
      perceptual_study.validate(c)
  c = perceptual_cam.get_config("quick")  # comma lists, as --config.sanity.nulls=a,b gives
  c.sanity.nulls, c.cam.energy_top_k = ("smooth_random,other_image",), ("0.05,0.25",)
  perceptual_study.validate(c)
  assert c.sanity.nulls == ("smooth_random", "other_image")
  assert c.cam.energy_top_k == (0.05, 0.25)


def test_comma_lists_are_split_once_by_the_command_line():
  """``--config.models=a,b`` arrives as ``("a,b",)``: ``cli.split_comma_lists`` splits every
  tuple of strings; ``validate`` only checks (it refuses a comma entry, changing nothing)."""
  c = attention_masks.get_config("quick")
  c.models = ("full_natural,masked_natural",)
  c.data.classes = (" car , dining table",)
  with pytest.raises(ValueError, match=r"models entry 'full_natural,masked_natural' holds a "
                     r"comma: give each name as its own entry, \('full_natural', "
                     r"'masked_natural'\)"):
    masks_study.validate(c)
  assert c.models == ("full_natural,masked_natural",)  # unchanged
  cli.split_comma_lists(c)
  assert c.models == ("full_natural", "masked_natural")
  assert c.data.classes == ("car", "dining table")
  assert c.eval.curve_eps == attention_masks.get_config("quick").eval.curve_eps  # not strings


@pytest.mark.parametrize("module,preset,field,value", [
    ("masks", "quick", "models", "full_natural,masked_natural"),
    ("sweep", "quick", "checkpoints", "init:0,init:1"),
    ("sweep", "quick", "attacks", "pgd,fgsm"),
    ("report", None, "studies", "runs/a,runs/b"),
    ("benchmark", "pipeline_quick", "stages", "pgd,train"),
])
def test_validate_changes_nothing(tmp_path, module, preset, field, value):
  from experiments import benchmarks, report, sweep_grid
  from experiments.configs import benchmark as bench_cfgs
  from experiments.configs import report as report_cfgs
  from experiments.configs import sweep as sweep_cfgs
  mod, cfgs = {"masks": (masks_study, attention_masks), "sweep": (sweep_grid, sweep_cfgs),
               "report": (report, report_cfgs), "benchmark": (benchmarks, bench_cfgs)}[module]
  c = cfgs.get_config(preset)
  c[field] = (value,)  # what ml_collections makes of --config.<field>=<value>
  before = c.to_dict()
  with pytest.raises(ValueError, match=rf"{field} entry '{value}' holds a comma"):
    mod.validate(c)
  assert c.to_dict() == before
  if module != "report":  # report.validate also looks for the studies on disk
    cli.split_comma_lists(c)
    after = c.to_dict()
    mod.validate(c)
    assert c.to_dict() == after
  c = ml_collections.ConfigDict(before, type_safe=False)
  c[field] = value  # a string through the Python API: refused, not split
  with pytest.raises(ValueError, match=rf"{field} must be a tuple of names, got the string"):
    mod.validate(c)
  assert c[field] == value


def test_perceptual_validate_changes_nothing():
  c = perceptual_cam.get_config("quick")
  c.seeds = (1, 0)
  before = c.to_dict()
  perceptual_study.validate(c)
  assert c.to_dict() == before
  c.seeds = (-1,)
  with pytest.raises(ValueError, match=r"seeds entry must be an integer >= 0, got -1"):
    perceptual_study.validate(c)


def test_presets_and_help():
  for mod in (attention_masks, perceptual_cam):
    for name in mod.PRESETS:
      assert mod.get_config(name).to_dict()
  proc = run_binary(MASKS, "--helpfull", timeout=300)
  assert "--config" in proc.stdout and "--workdir" in proc.stdout


def test_fast_adversarial_training_is_a_config_choice():
  c = attention_masks.get_config("quick")
  c.train.attack.kind, c.train.guard = "fgsm_rs", "rollback"
  masks_study.validate(c)
  adv = masks_study.train_config(c, "masked_adversarial")
  nat = masks_study.train_config(c, "masked_natural")
  assert adv.attack.kind == "fgsm_rs" and adv.guard == "rollback" and adv.masked
  assert nat.guard == "off" and not nat.adversarial  # the guard watches adversarial runs only
  c.train.attack.kind = "cw"
  with pytest.raises(ValueError, match="kind"):
    masks_study.validate(c)
