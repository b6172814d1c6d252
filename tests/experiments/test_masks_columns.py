"""The masks study's extra Table 4 columns: AutoAttack and PGD with masks from the attacked image.

The AutoAttack budget equals ``attacks.autoattack_attacks``'s "standard" at AutoAttack's
budgets; ``evaluate_extra_columns`` on a tiny model equals the library's evaluations run by hand
(the cascade; the BPDA pipeline on the raw images) and resumes from the store; the table shows
the columns ("-" for full-image models in the adaptive one), the notes and findings; bad fields
are refused naming them.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import attention_masks as masks_cfgs
from experiments.masks_study import evaluate, report, validate
from percadv_jax import attacks
from percadv_jax.data import segment

N, S, K = 12, 8, 4


def test_autoattack_at_autoattacks_budgets_is_its_standard_version():
  c = masks_cfgs.get_config("gtsrb_paper")
  for masked in (False, True):
    got = evaluate.autoattack_attacks(c, masked)
    want = attacks.autoattack_attacks(c.eval.eps, version="standard", masked=masked)
    assert list(got) == list(want) == list(evaluate.AUTOATTACK_NAMES)
    for name, w in want.items():  # targets None = AutoAttack's 9 (on 10 or more classes)
      assert got[name] == (dataclasses.replace(w, targets=9) if w.kind in attacks.attack
                           .TARGETED_KINDS else w)
  q = masks_cfgs.get_config("quick")
  small = evaluate.autoattack_attacks(q, True)
  assert [(a.kind, a.steps, a.targets, a.masked) for a in small.values()] == [
      ("apgd", 2, None, True), ("apgd_t", 2, 1, True), ("fab_t", 2, 1, True),
      ("square", 20, None, True)]
  # Fewer classes: targets at most the classes - 1; below 4 classes no APGD-T (its DLR reads 4).
  q.eval.autoattack.targets = 9
  assert [a.targets for a in evaluate.autoattack_attacks(q, True, 5).values()] == [
      None, 4, 4, None]
  three = evaluate.autoattack_attacks(q, True, 3)
  assert list(three) == ["apgd_ce", "fab_t", "square"] and three["fab_t"].targets == 2
  q.eval.autoattack.version = "off"
  assert evaluate.autoattack_attacks(q, True) is None
  assert evaluate.adaptive_attack(q) == attacks.Attack("pgd", eps=q.eval.eps, steps=q.eval.steps,
                                                       masked=False)


@pytest.mark.parametrize("field,value,match", [
    ("autoattack.version", "plus", "eval.autoattack.version"),
    ("autoattack.targets", 0, "eval.autoattack.targets"),
    ("autoattack.queries", 0, "eval.autoattack.queries"),
    ("adaptive.segmenter", "otsu", "eval.adaptive.segmenter"),
    ("adaptive.steps", -1, "eval.adaptive.steps"),
    ("adaptive.work_size", 4, "eval.adaptive.work_size")])
def test_bad_fields_are_refused(field, value, match):
  c = masks_cfgs.get_config("quick")
  group, leaf = field.split(".")
  c.eval[group][leaf] = value
  with pytest.raises(ValueError, match=match):
    validate(c)


def _tiny():
  """A 4-class linear model on 8 px images of a bright square on a dark background."""
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 0.2, (N, S, S, 3)).astype(np.float32)
  x[:, 2:6, 2:6] += rng.uniform(0.5, 0.8, (N, 1, 1, 3)).astype(np.float32)
  mask = np.zeros((N, S, S, 1), np.float32)
  mask[:, 2:6, 2:6] = 1
  w = jnp.asarray(rng.normal(size=(S * S * 3, K)).astype(np.float32))
  f = jax.tree_util.Partial(lambda w, x: x.reshape(x.shape[0], -1) @ w, w)
  y = np.asarray(jnp.argmax(f(x * mask), -1)).astype(np.int32)
  return f, {"image": x, "mask": mask, "label": y}


def test_extra_columns_equal_the_library_run_by_hand_and_resume(tmp_path):
  c = masks_cfgs.get_config("quick")
  c.eval.adaptive.work_size = 16
  f, raw = _tiny()
  masked = {**raw, "image": raw["image"] * raw["mask"]}
  key = jax.random.key(3)
  store = str(tmp_path / "evaluations")
  kw = dict(spec={"model": "m", "step": 1, "seed": 0}, key=key, store=store, batch_size=8,
            worst=np.ones(N, bool))
  out = evaluate.evaluate_extra_columns(c, f, name="m", masked=True, data=masked,
                                        eval_arrays=raw, **kw)
  aa = attacks.robust_accuracy(f, masked["image"], raw["label"],
                               evaluate.autoattack_attacks(c, True), key=jax.random.fold_in(key, 1),
                               mask=raw["mask"], batch_size=8, cascade=True)
  assert {k: out["autoattack"][k] for k in ("clean", "robust", "per_attack")} == {
      k: aa.summary()[k] for k in ("clean", "robust", "per_attack")}
  assert out["autoattack"]["robust_all"] == aa.robust.mean()
  seg = segment.batch_segmenter("centre", work_size=16)
  ad = attacks.robust_accuracy(attacks.bpda_masked_logits(f, seg), raw["image"], raw["label"],
                               {"pgd": evaluate.adaptive_attack(c)},
                               key=jax.random.fold_in(key, 2), mask=raw["mask"], batch_size=8)
  assert out["adaptive"]["per_attack"] == ad.summary()["per_attack"]
  assert out["adaptive"]["clean"] == ad.summary()["clean"] == np.mean(
      np.argmax(f(raw["image"] * seg(raw["image"])), -1) == raw["label"])
  files = sorted(os.listdir(store))
  again = evaluate.evaluate_extra_columns(c, f, name="m", masked=True, data=masked,
                                          eval_arrays=raw, **kw)
  assert sorted(os.listdir(store)) == files  # read back, nothing recomputed
  assert {k: again[k]["per_attack"] for k in again} == {k: out[k]["per_attack"] for k in out}
  full = evaluate.evaluate_extra_columns(c, f, name="f", masked=False, data=raw,
                                         eval_arrays=raw, **kw)
  assert set(full) == {"autoattack"}  # no adaptive column for a full-image model


def _summary(clean, pgd, apgd, aa=None, adaptive=None):
  m = {"clean": clean, "robust": min(pgd, apgd), "per_attack": {"pgd": pgd, "apgd": apgd}}
  if aa is not None:
    m["autoattack"] = {"robust": aa, "robust_all": min(aa, pgd, apgd), "seconds": 2.0,
                       "per_attack": {}}
  if adaptive is not None:
    m["adaptive"] = {"clean": 0.8, "per_attack": {"pgd": adaptive}, "seconds": 5.0}
  return m


def test_table_notes_and_findings():
  models = {"full_natural": _summary(0.9, 0.2, 0.1, aa=0.05),
            "masked_natural": _summary(0.9, 0.4, 0.3, aa=0.3, adaptive=0.1)}
  columns, rows = report.table("synthetic_signs", models)
  assert columns[-2:] == ["synthetic signs AutoAttack (%)",
                          "synthetic signs PGD, masks from the attacked image (%)"]
  assert [r["paper row"] for r in rows] == ["N, X", "N, X_F"]
  assert [r[columns[-2]] for r in rows] == [5.0, 30.0]
  assert [r[columns[-1]] for r in rows] == ["-", 10.0]
  found = report.findings(models)
  assert any("AutoAttack finds" in s and "'Full image, natural training'" in s and "5.0%" in s
             for s in found)
  assert not any("AutoAttack finds" in s and "Masked" in s for s in found)
  assert any("lowers the PGD accuracy of the fixed-mask setting: 40.0% -> 10.0%" in s
             for s in found)
  demo = masks_cfgs.get_config("demo")
  notes = report.extra_column_notes(demo, models)
  assert len(notes) == 2 and f"up to {demo.eval.autoattack.targets} targets" in notes[0]
  assert f"centre segmenter at {demo.eval.adaptive.work_size} px" in notes[1]
  assert "Masked (foreground only), natural training 80.0%, 5.0 s" in notes[1]
  # Without the extra columns the table keeps the paper's and our first two extra columns.
  plain = {n: _summary(0.9, 0.2, 0.1) for n in models}
  assert report.table("synthetic_signs", plain)[0][-1] == "synthetic signs worst case (%)"
