"""The robustness checklist: each item's numbers are recomputed from the per-example records the
checklist's own evaluations returned; a normal model passes the attack items, a model whose input
gradient is stopped flags the black-box, large-eps and transfer items.

Models: the trained TinyCNN (normal) and the same model behind ``jax.lax.stop_gradient`` on its
input (the gradient is zero everywhere: gradient attacks move only by their random start, the
Square Attack and transferred examples are unaffected).
"""

import json

import jax
import numpy as np
import pytest

from percadv_jax import attacks as A
from percadv_jax.attacks import checklist as K
from percadv_jax.attacks import core as C
from percadv_jax.attacks import diagnostics as D
from tests.attacks import attack_models as M

# The module fixture compiles the checklist's six attacks for two models (about 30 s of CPU).
pytestmark = pytest.mark.slow

N = 32
EPS = 0.1
ATTACK = A.Attack("pgd", eps=EPS, steps=5)
OPTIONS = K.Options(examples=N, restarts=2, square_queries=100, trust=None)


def _recording(f, x, y, calls):
  """``evaluate`` that runs ``robust_accuracy`` and keeps each Evaluation."""
  def evaluate(attacks, *, key, return_adversarial):
    ev = A.robust_accuracy(f, x[:N], y[:N], attacks, key=key,
                           return_adversarial=return_adversarial)
    calls.append(ev)
    return ev
  return evaluate


@pytest.fixture(scope="module")
def setup():
  _, _, f, (x, y) = M.trained_model(steps=200)
  x, y = x[:N], y[:N]
  masked = jax.jit(lambda v: f(jax.lax.stop_gradient(v)))
  out = {"f": f, "masked": masked, "x": x, "y": y}
  for name, fn in (("normal", f), ("stopped", masked)):
    calls = []
    ck = K.run(fn, x, y, attack=ATTACK, key=jax.random.key(0), options=OPTIONS, seed=3,
               evaluate=_recording(fn, x, y, calls), return_adversarial=True)
    out[name] = (ck, calls)
  return out


def _items(ck):
  return {i["name"]: i for i in ck.items}


def test_items_listed_in_order_json_and_numbers_recomputed(setup):
  ck, (ev, ev_more) = setup["normal"]
  assert [i["name"] for i in ck.items] == list(K.ITEMS) and ck.n == N
  json.dumps(ck.to_json())  # plain numbers only: the checklist goes into JSON files
  it = _items(ck)
  clean, surv = ev.clean, {"attack": ev.survived["attack"], **ev_more.survived}
  assert sorted(ev_more.names) == ["fgsm", "large_eps", "more_restarts", "more_steps", "square"]
  acc = {k: float(v.mean()) for k, v in surv.items()}
  assert it["more_iterations"]["accuracy"] == acc["attack"]
  assert it["more_iterations"]["change"] == pytest.approx(acc["more_steps"] - acc["attack"])
  assert it["more_restarts"]["accuracy_more"] == acc["more_restarts"]
  assert it["single_step"]["fgsm_accuracy"] == acc["fgsm"]
  white = surv["attack"] & surv["more_steps"] & surv["more_restarts"]
  only = int((clean & ~surv["square"] & white).sum())
  assert it["black_box"]["n_black_box_only"] == only
  assert it["black_box"]["white_box_accuracy"] == float(white.mean())
  big = it["success_vs_eps"]
  assert big["large_eps"] == 0.5
  assert big["large_eps_success"] == pytest.approx(1 - acc["large_eps"] / clean.mean())
  h = it["hyperparameters"]
  assert h["attack"]["steps"] == 5 and h["attack"]["eps"] == EPS and h["seed"] == 3
  assert h["checklist_attacks"]["more_steps"] == repr(A.Attack("pgd", eps=EPS, steps=10))
  assert h["options"]["square_queries"] == 100 and h["n"] == N
  # The evaluated attack's adversarial images came back, and they are the ones it scored.
  assert ck.x_adv.shape == setup["x"].shape
  np.testing.assert_array_equal(np.asarray(C.correct(setup["f"], ck.x_adv, setup["y"])) & clean,
                                surv["attack"])


def test_normal_model_passes_the_attack_items(setup):
  it = _items(setup["normal"][0])
  for name in ("success_vs_eps", "single_step", "black_box"):
    assert it[name]["status"] == "pass", it[name]["evidence"]
  assert it["success_vs_eps"]["large_eps_success"] == 1.0
  assert it["single_step"]["fgsm_accuracy"] > it["single_step"]["iterative_accuracy"]
  assert it["transfer"]["status"] == "skip" and it["trust_gradients"]["status"] == "skip"
  line = K.summary(setup["normal"][0])
  counts = setup["normal"][0].to_json()["counts"]
  assert line.startswith(f"checklist: {counts['pass']} pass, {counts['flag']} flag")


def test_doubling_iterations_of_a_converged_attack_passes(setup):
  """At eps 0.25 PGD-5 already breaks every example: twice the steps or more restarts change
  nothing."""
  ck = K.run(setup["f"], setup["x"], setup["y"], attack=A.Attack("pgd", eps=0.25, steps=5),
             key=jax.random.key(1), options=OPTIONS)
  for name in ("more_iterations", "more_restarts"):
    it = _items(ck)[name]
    assert it["status"] == "pass" and it["accuracy"] == it["accuracy_more"] == 0.0


def test_stopped_gradient_flags_black_box_and_large_eps(setup):
  ck, (ev, ev_more) = setup["stopped"]
  it = _items(ck)
  assert it["black_box"]["status"] == "flag" and it["black_box"]["n_black_box_only"] > 0
  assert it["success_vs_eps"]["status"] == "flag"
  assert it["success_vs_eps"]["large_eps_success"] < 0.5  # only the random start moves
  assert "black_box" in ck.to_json()["flagged"] and "black_box" in K.summary(ck)


def test_transfer_beating_white_box_flags(setup):
  """The normal model's PGD examples fool the stopped-gradient model (same function) more often
  than its own gradient attacks do; the reverse transfer does not beat white-box PGD."""
  x, y = setup["x"], setup["y"]
  normal_adv = setup["normal"][0].x_adv
  stopped_adv = setup["stopped"][0].x_adv
  opts = K.Options(examples=N, restarts=2, square_queries=100, trust=None)
  ck = K.run(setup["masked"], x, y, attack=ATTACK, key=jax.random.key(0), options=opts,
             source_adv=normal_adv, source_name="normal")
  t = _items(ck)["transfer"]
  assert t["status"] == "flag" and t["transfer_success"] > t["white_box_success"]
  assert t["n_transfer_only"] > 0 and t["source_linf_max"] <= EPS + 1e-6
  ck = K.run(setup["f"], x, y, attack=ATTACK, key=jax.random.key(0), options=opts,
             source_adv=stopped_adv, source_name="stopped")
  t = _items(ck)["transfer"]
  assert t["status"] == "pass" and t["transfer_success"] <= t["white_box_success"]


def test_curve_and_trust_checks_become_items(setup):
  ck, (ev, _) = setup["normal"]
  f, x, y = setup["f"], setup["x"], setup["y"]
  trust = {"gradients": {"name": "gradients", "tripped": False, "evidence": "fine"},
           "large_eps": {"name": "large_eps", "tripped": True, "evidence": "stuck", "eps": 0.5,
                         "accuracy": 0.5, "clean_accuracy": 1.0}}
  curve = [{"eps": 0.0, "robust": 0.9, "clean": 0.9}, {"eps": 0.03, "robust": 0.95,
                                                        "clean": 0.9}]
  calls = []
  out = K.run(f, x, y, attack=ATTACK, key=jax.random.key(0), options=OPTIONS,
              trust_checks=trust, curve=curve, evaluate=_recording(f, x, y, calls))
  it = _items(out)
  assert "large_eps" not in calls[1].names  # the trust check's result is reused
  s = it["success_vs_eps"]
  assert s["status"] == "flag" and s["large_eps_success"] == 0.5 and s["curve_rises"] == 1
  assert [p["eps"] for p in s["curve"]] == [0.0, 0.03]
  assert it["trust_gradients"]["status"] == "pass"
  assert it["trust_large_eps"]["status"] == "flag" and it["trust_large_eps"]["accuracy"] == 0.5
  assert it["trust_randomness"]["status"] == "skip"


def test_trust_checks_run_here_against_the_evaluated_attack(setup):
  f, x, y = setup["f"], setup["x"], setup["y"]
  opts = K.Options(examples=16, restarts=2, square_queries=100,
                   trust=D.Options(stronger_steps=5, large_eps_steps=5, unroll=1))
  calls = []
  it = _items(K.run(f, x, y, attack=ATTACK, key=jax.random.key(0), options=opts,
                    evaluate=lambda a, **kw: calls.append(
                        A.robust_accuracy(f, x[:16], y[:16], a, **kw)) or calls[-1]))
  for name in D.NAMES:
    assert it[f"trust_{name}"]["status"] in ("pass", "flag")
  assert it["trust_gradients"]["n_checked"] == int(calls[0].clean.sum())
  # The stronger-attack check compares with the checklist's own PGD outcomes.
  assert it["trust_stronger_attack"]["reported_accuracy"] == float(calls[0].robust.mean())
  assert "large_eps" not in calls[1].names  # success at large eps comes from the trust check
  assert it["success_vs_eps"]["large_eps_accuracy"] == it["trust_large_eps"]["accuracy"]


def test_markdown_and_files(setup, tmp_path):
  cks = {"normal": setup["normal"][0], "stopped": setup["stopped"][0].to_json()}
  paths = K.write(str(tmp_path), cks, title="Checklist")
  md = open(paths["md"]).read()
  assert md.startswith("# Checklist") and "## normal" in md and "## stopped" in md
  assert md.count("| black_box | flag |") == 1 and md.count("| black_box | pass |") == 1
  data = json.load(open(paths["json"]))
  assert [i["name"] for i in data["stopped"]["items"]] == list(K.ITEMS)
  assert data["stopped"]["summary"] == K.summary(setup["stopped"][0])


def test_checklist_bad_input(setup):
  f, x, y = setup["f"], setup["x"], setup["y"]
  key = jax.random.key(0)
  with pytest.raises(TypeError, match="attack must be an attacks.Attack"):
    K.run(f, x, y, attack="pgd", key=key)
  with pytest.raises(ValueError, match="iterative white-box"):
    K.run(f, x, y, attack=A.Attack("fgsm", eps=EPS), key=key)
  with pytest.raises(ValueError, match="key"):
    K.run(f, x, y, attack=ATTACK, key=None)
  with pytest.raises(TypeError, match="options must be a checklist.Options"):
    K.run(f, x, y, attack=ATTACK, key=key, options={"examples": 4})
  with pytest.raises(TypeError, match="logits_fn must be callable"):
    K.run(None, x, y, attack=ATTACK, key=key)
  with pytest.raises(ValueError, match="mask="):
    K.run(f, x, y, attack=A.Attack("pgd", eps=EPS, masked=True), key=key)
  with pytest.raises(ValueError, match="source_adv must have the shape"):
    K.run(f, x, y, attack=ATTACK, key=key, source_adv=x[:4])
  with pytest.raises(ValueError, match=r"white_box\['pgd'\]"):
    K.run(f, x, y, attack=ATTACK, key=key, white_box={"pgd": np.ones(3, bool)})
  with pytest.raises(ValueError, match=r"curve\[0\]"):
    K.run(f, x, y, attack=ATTACK, key=key, curve=[{"eps": 0.1}])
  with pytest.raises(ValueError, match=r"trust_checks\['speed'\]"):
    K.run(f, x, y, attack=ATTACK, key=key, trust_checks={"speed": {}})
  with pytest.raises(ValueError, match="y must lie in"):
    K.run(f, x, y + 10, attack=ATTACK, key=key)
  with pytest.raises(ValueError, match="restarts must be an integer >= 2"):
    K.Options(restarts=1)
  with pytest.raises(ValueError, match="examples"):
    K.Options(examples=0)
  with pytest.raises(TypeError, match="trust must be None or a diagnostics.Options"):
    K.Options(trust={})
  with pytest.raises(TypeError, match="Checklist or its to_json"):
    K.summary([1, 2])
