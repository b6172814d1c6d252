"""percadv_jax.train: exact resume after a kill, adversarial training, masked semantics."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from percadv_jax import attacks, io, train

MODEL_KW = {"variant": "small", "width": 0.125, "batch_norm": True}
# PGD-3 with step 3/255 (= 1.125 eps / 3) in the masked setting.
ATTACK = attacks.Attack("pgd", eps=8 / 255, steps=3, step_factor=1.125, masked=True)


def _toy(n: int, seed: int, fragile: float = 0.0) -> dict:
  """Two classes told apart by the object's brightness (0.5 -/+ 0.12) under pixel noise.

  A robust classifier exists (an eps=8/255 shift moves the mean brightness by <= 0.031); the
  object fills a square mask. ``fragile > 0`` adds a non-robust feature (Tsipras et al. 2019):
  a checkerboard of amplitude ``fragile`` whose sign is the label, perfectly predictive and easy
  to learn, which natural training leans on and an eps >= ``fragile`` attack flips.
  """
  rng = np.random.default_rng(seed)
  y = (np.arange(n) % 2).astype(np.int32)
  mask = np.zeros((n, 32, 32, 1), np.float32)
  mask[:, 6:26, 6:26] = 1
  obj = 0.5 + np.where(y == 1, 0.12, -0.12)[:, None, None, None]
  x = obj + rng.normal(0, 0.15, (n, 32, 32, 3))
  background = rng.uniform(0, 1, (n, 32, 32, 3))
  x = np.where(mask > 0, x, background)
  checkerboard = (np.indices((32, 32)).sum(0) % 2 * 2 - 1)[None, :, :, None]
  x = x + fragile * np.where(y == 1, 1.0, -1.0)[:, None, None, None] * checkerboard
  return {"image": np.clip(x, 0, 1).astype(np.float32), "mask": mask, "label": y}


@pytest.fixture(scope="module")
def toy():
  return _toy(128, 0), _toy(64, 1)


def _config(**kw):
  base = dict(model_kwargs=MODEL_KW, batch_size=32, steps=8, checkpoint_every=3, log_every=2,
              seed=3, adversarial=True, masked=True, attack=ATTACK,
              optimizer=train.OptimizerConfig(name="adam", learning_rate=3e-3,
                                              schedule="cosine", warmup_steps=0))
  base.update(kw)
  return train.TrainConfig(**base)


class _Killed(Exception):
  pass


def test_kill_after_checkpoint_and_resume_gives_the_same_parameters(toy, tmp_path):
  data, _ = toy
  cfg = _config()
  full = train.fit(cfg, str(tmp_path / "a"), data, num_classes=2)
  assert int(full.step) == 8

  def kill(step, state, metrics):
    if step == 5:  # checkpoints exist at step 3; steps 4 and 5 are lost
      raise _Killed()

  wd = str(tmp_path / "b")
  metrics = os.path.join(wd, "metrics.jsonl")
  with pytest.raises(_Killed):
    train.fit(cfg, wd, data, num_classes=2, on_step=kill)
  assert train.checkpoint.latest_step(os.path.join(wd, "checkpoints")) == 3
  # The kill landed inside a logging window (record 4 written, checkpoint 3), and a kill during
  # a write leaves a torn last line.
  assert [r["step"] for r in io.read_jsonl(metrics)] == [2, 3, 4]
  with open(metrics, "a") as f:
    f.write('{"step": 5, "loss": 0.')

  def kill7(step, state, metrics):
    if step == 7:  # checkpoint 6 exists; step 7 is lost
      raise _Killed()

  with pytest.raises(_Killed), pytest.warns(UserWarning, match=r"dropping line 4, a record"):
    train.fit(cfg, wd, data, num_classes=2, on_step=kill7)
  with open(metrics, "a") as f:
    f.write('{"step": 8, "lo')
  with pytest.warns(UserWarning, match=rf"{metrics}: dropping line 5, a record torn"):
    resumed = train.fit(cfg, wd, data, num_classes=2)
  assert int(resumed.step) == 8
  for a, b in zip(jax.tree.leaves((full.params, full.batch_stats, full.opt_state, full.key)),
                  jax.tree.leaves((resumed.params, resumed.batch_stats, resumed.opt_state,
                                   resumed.key))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The run changed the parameters, and a different seed gives different ones.
  init = train.build(cfg, num_classes=2, image_shape=(32, 32, 3), total=8)
  assert not np.allclose(jax.tree.leaves(init.params)[0], jax.tree.leaves(full.params)[0])
  # The resumed run wrote the uninterrupted run's records, one per line, nothing torn.
  def records(path):
    with open(path) as f:
      lines = f.read().split("\n")
    assert lines[-1] == ""
    return [{k: v for k, v in json.loads(line).items() if k not in ("time", "steps_per_sec")}
            for line in lines[:-1]]
  assert records(metrics) == records(os.path.join(tmp_path / "a", "metrics.jsonl"))
  # A finished run is restored, not retrained; metrics.jsonl logged every 2 steps and at the
  # checkpoints (every 3 steps).
  again = train.fit(cfg, wd, data, num_classes=2,
                    on_step=lambda *a: pytest.fail("a finished run was retrained"))
  np.testing.assert_array_equal(jax.tree.leaves(again.params)[0],
                                jax.tree.leaves(full.params)[0])
  steps = [r["step"] for r in io.read_jsonl(os.path.join(wd, "metrics.jsonl"))]
  assert steps == [2, 3, 4, 6, 8] and all(np.isfinite(
      [r["loss"] for r in io.read_jsonl(os.path.join(wd, "metrics.jsonl"))]))
  with pytest.raises(ValueError, match="different configuration"):
    train.fit(_config(seed=4), wd, data, num_classes=2)


def test_masked_step_ignores_the_background_and_attacks_only_the_foreground(toy):
  data, _ = toy
  cfg = _config()  # the resume test's configuration: its compiled step is reused
  state = train.build(cfg, num_classes=2, image_shape=(32, 32, 3), total=8)
  batch = {k: v[:32] for k, v in data.items()}
  other = dict(batch, image=np.where(batch["mask"] > 0, batch["image"], 1.0 - batch["image"]))
  step = train.jit_train_step(adversarial=True, masked=True, attack=ATTACK)
  s1, m1 = step(state, batch)
  s2, m2 = step(state, other)
  moved = False
  for a, b, c in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params),
                     jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    moved |= not np.array_equal(np.asarray(a), np.asarray(c))
  assert moved
  # What the model sees: x * mask when masked (background-free), x otherwise.
  variables = state.variables()
  for masked in (True, False):
    outs = [np.asarray(train.make_logits_fn(state.apply_fn, variables, mask=b["mask"],
                                            masked=masked)(b["image"])) for b in (batch, other)]
    assert np.array_equal(outs[0], outs[1]) == masked
  # The masked adversary: zero outside the mask, within eps of x * mask on the foreground.
  x_adv = train.adversarial_examples(state.apply_fn, variables, batch["image"],
                                     batch["label"], batch["mask"], key=jax.random.PRNGKey(0),
                                     attack=ATTACK, masked=True)
  x_adv = np.asarray(x_adv)
  x0 = batch["image"] * batch["mask"]
  assert np.all(x_adv[np.broadcast_to(batch["mask"], x_adv.shape) == 0] == 0)
  assert np.abs(x_adv - x0).max() <= ATTACK.eps + 1e-6
  assert np.abs(x_adv - x0).max() > ATTACK.eps / 2


@pytest.mark.slow  # a training run: ~30-50 s
def test_adversarial_training_raises_pgd_accuracy(tmp_path):
  # eps 16/255 moves the object's mean brightness by at most 0.063 < 0.12: a robust classifier
  # exists, but the naturally trained one leans on the fragile checkerboard (amplitude 0.04 <
  # eps). Measured over seeds 0-2: natural PGD accuracy 0.02-0.5, adversarial 0.52-1.0, the gap
  # >= 0.38 for every seed (without the fragile feature the gap was 0-0.5, CPU-dependent).
  data, test = _toy(512, 2, fragile=0.04), _toy(64, 1, fragile=0.04)
  attack = attacks.Attack("pgd", eps=16 / 255, steps=3, step_factor=1.125)  # step 6/255
  results = {}
  for adversarial in (False, True):
    cfg = _config(adversarial=adversarial, masked=False, steps=80, checkpoint_every=80,
                  log_every=20, seed=0, bn_recalibration_batches=4, attack=attack,
                  optimizer=train.OptimizerConfig(name="adam", learning_rate=3e-3,
                                                  schedule="cosine", warmup_steps=2))
    state = train.fit(cfg, str(tmp_path / str(adversarial)), data, num_classes=2)
    results[adversarial] = attacks.robust_accuracy(
        train.make_logits_fn(state.apply_fn, state.variables()), test["image"], test["label"],
        {"pgd": attack}, key=jax.random.PRNGKey(1), batch_size=64)
  nat, adv = results[False].summary(), results[True].summary()
  assert nat["clean"] >= 0.9 and adv["clean"] >= 0.9, (nat, adv)
  assert adv["per_attack"]["pgd"] > nat["per_attack"]["pgd"] + 0.2, (nat, adv)
  for ev in results.values():
    r = ev.summary()
    assert r["robust"] == r["per_attack"]["pgd"] <= r["clean"]
    np.testing.assert_array_equal(ev.robust, ev.clean & ev.survived["pgd"])


def test_schedules_and_optimizers():
  cfg = train.OptimizerConfig(name="sgd", learning_rate=0.1, schedule="piecewise",
                              warmup_steps=10)
  s = train.make_schedule(cfg, 110)
  assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(0.1)
  assert float(s(10 + 60)) == pytest.approx(0.01) and float(s(109)) == pytest.approx(0.001)
  c = train.make_schedule(train.OptimizerConfig(schedule="cosine", learning_rate=1.0), 100)
  assert float(c(0)) == pytest.approx(1.0) and float(c(100)) == pytest.approx(0.0, abs=1e-6)
  with pytest.raises(ValueError, match="optimizer"):
    train.make_optimizer(train.OptimizerConfig(name="lamb"), 10)
  with pytest.raises(ValueError, match="eps"):
    attacks.Attack(eps=-1.0)
  # One SGD step with momentum 0 is params - lr * grad.
  tx = train.make_optimizer(train.OptimizerConfig(name="sgd", learning_rate=0.5, momentum=0.0,
                                                  schedule="constant"), 10)
  p = {"w": jnp.ones(3)}
  upd, _ = tx.update({"w": jnp.full(3, 2.0)}, tx.init(p), p)
  np.testing.assert_allclose(upd["w"], -1.0)


def _linear_apply(variables, x, train=False):
  """Two logits (0, sum(w * x)): the CE input gradient's sign is sign(w) for label 0, and
  -sign(w) for label 1, wherever the start point lies."""
  del train
  z = jnp.sum(x * variables["params"]["w"], axis=(1, 2, 3))
  return jnp.stack([jnp.zeros_like(z), z], axis=-1)


def test_fgsm_rs_step_equals_the_hand_computed_one():
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (6, 8, 8, 3)).astype(np.float32)
  x[:, :2] = 0.0  # pixels on the box's edges
  x[:, -2:] = 1.0
  y = np.array([0, 1, 0, 1, 0, 1], np.int32)
  eps = 8 / 255
  attack = attacks.Attack("fgsm_rs", eps=eps)
  assert attack.factor == 1.25 and attack.steps == 1  # Wong et al.'s step 1.25 eps
  key = jax.random.PRNGKey(5)

  def adv(w):
    return np.asarray(train.adversarial_examples(
        _linear_apply, {"params": {"w": jnp.asarray(w)}}, x, y, None, key=key, attack=attack,
        masked=False))
  # A zero gradient moves nothing: the result is the random start, uniform in the ball
  # intersected with [0, 1].
  start = adv(np.zeros((8, 8, 3), np.float32))
  d = start - x
  assert np.all(np.abs(d) <= eps + 1e-7) and start.min() >= 0 and start.max() <= 1
  free = (x > eps) & (x < 1 - eps)
  assert abs(d[free].mean()) < 0.05 * eps and np.abs(d[free]).max() > 0.95 * eps
  assert abs(np.mean(np.abs(d[free])) - eps / 2) < 0.05 * eps  # uniform: E|d| = eps / 2
  w = rng.normal(size=(8, 8, 3)).astype(np.float32)
  sign = np.sign(w)[None] * np.where(y == 0, 1.0, -1.0)[:, None, None, None]
  expected = np.clip(x + np.clip(start + 1.25 * eps * sign - x, -eps, eps), 0, 1)
  np.testing.assert_allclose(adv(w), expected, atol=1e-7)
  with pytest.raises(ValueError, match="kind"):
    attacks.Attack("bim")


def test_overfitting_guard_rolls_back_or_stops_on_a_collapse(toy, tmp_path, monkeypatch):
  data, _ = toy  # 128 examples: 32 held out, 96 train = 3 steps of 32 per epoch
  cfg = _config(adversarial=False, steps=9, checkpoint_every=100, log_every=100,
                guard="rollback", guard_examples=32, guard_steps=1)
  train_idx, guard_idx = train.split_guard(cfg, 128)
  assert len(guard_idx) == 32 and sorted(set(train_idx) | set(guard_idx)) == list(range(128))
  # The guard's figure is the PGD accuracy on the held-out batch: with eps = 0 the natural one.
  from percadv_jax.train import loop
  state = train.build(cfg, num_classes=2, image_shape=(32, 32, 3), total=9)
  batch = {k: v[guard_idx] for k, v in data.items()}
  zero = loop._Guard(dataclasses.replace(cfg, attack=attacks.Attack(eps=0.0, masked=True)),
                     batch)
  logits = state.apply_fn(state.variables(), batch["image"] * batch["mask"], train=False)
  natural = float(np.mean(np.argmax(np.asarray(logits), -1) == batch["label"]))
  assert zero.accuracy(state) == pytest.approx(natural)
  # A constructed collapse: 0.5, 0.6, then 0.2 (< 0.6 - guard_drop) after the third epoch.
  scripted = iter([0.5, 0.6, 0.2])
  monkeypatch.setattr(loop._Guard, "accuracy", lambda self, state: next(scripted))
  seen = {}
  final = train.fit(cfg, str(tmp_path / "rb"), data, num_classes=2,
                    on_step=lambda step, s, m: seen.setdefault(step, s))
  assert 9 not in seen and int(final.step) == 9  # stopped at the collapse, marked finished
  for a, b in zip(jax.tree.leaves(final.params), jax.tree.leaves(seen[6].params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # epoch 2's parameters
  events = [r for r in io.read_jsonl(str(tmp_path / "rb" / "metrics.jsonl")) if "event" in r]
  assert [(r["step"], r["event"]) for r in events] == [
      (3, "guard"), (6, "guard"), (9, "guard"), (9, "catastrophic_overfitting")]
  assert events[-1]["action"] == "rollback" and events[-1]["restored_step"] == 6
  assert events[-1]["previous_guard_pgd_accuracy"] == 0.6
  again = train.fit(cfg, str(tmp_path / "rb"), data, num_classes=2,
                    on_step=lambda *a: pytest.fail("a stopped run was retrained"))
  np.testing.assert_array_equal(jax.tree.leaves(again.params)[0],
                                jax.tree.leaves(final.params)[0])
  # guard="stop" keeps the collapsed epoch's parameters.
  scripted = iter([0.5, 0.6, 0.2])
  stop = dataclasses.replace(cfg, guard="stop")
  seen.clear()
  final = train.fit(stop, str(tmp_path / "st"), data, num_classes=2,
                    on_step=lambda step, s, m: seen.setdefault(step, s))
  events = [r for r in io.read_jsonl(str(tmp_path / "st" / "metrics.jsonl")) if "event" in r]
  assert events[-1]["action"] == "stop" and events[-1]["restored_step"] == 9
  assert not np.array_equal(jax.tree.leaves(final.params)[0],
                            jax.tree.leaves(seen[6].params)[0])


def test_a_config_json_from_before_the_new_fields_still_matches(tmp_path):
  from percadv_jax.train import loop
  cfg = train.TrainConfig()
  old = cfg.to_dict()
  for k in ("guard", "guard_examples", "guard_steps", "guard_drop"):
    del old[k]
  del old["attack"]["masked"], old["attack"]["step_factor"]
  io.write_json(str(tmp_path / "config.json"), old)
  loop._lock_config(str(tmp_path), cfg)  # the defaults of the new fields: same run
  with pytest.raises(ValueError, match="guard: 'off' -> 'stop'"):
    loop._lock_config(str(tmp_path), dataclasses.replace(cfg, guard="stop"))
  with pytest.raises(ValueError, match="guard"):
    dataclasses.replace(cfg, guard="sometimes").validate()


@pytest.mark.slow  # a training run: ~30-50 s
def test_bfloat16_training_follows_float32(toy, tmp_path):
  # Mixed precision (precision="bfloat16"): the model computes in bf16, the master weights,
  # optimiser state, BatchNorm statistics and losses stay float32, and training follows the
  # float32 run within bf16's rounding. On the tiny CNN of the sharding tests (well conditioned):
  import optax
  from tests.parallel import _tiny
  batch = {k: jnp.asarray(v) for k, v in _tiny.toy_data(64, seed=0).items()}
  runs = {}
  for p in ("float32", "bfloat16"):
    state = init = train.create_train_state(0, _tiny.TinyCNN(), optax.sgd(0.1, momentum=0.9),
                                            input_shape=(1, _tiny.SIZE, _tiny.SIZE, 3))
    step, losses = train.jit_train_step(precision=p), []
    for _ in range(5):
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
    update = np.concatenate([np.ravel(a - b) for a, b in zip(jax.tree.leaves(state.params),
                                                               jax.tree.leaves(init.params))])
    runs[p] = state, losses, update
  (_, l32, u32), (b16, l16, u16) = runs["float32"], runs["bfloat16"]
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(
      (b16.params, b16.batch_stats, b16.opt_state)) if jnp.issubdtype(leaf.dtype, jnp.floating))
  assert l16 != l32 and l16[-1] < 0.8 * l16[0]  # it computed in bf16, and it trained
  np.testing.assert_allclose(l16, l32, rtol=0.01)
  assert u16 @ u32 / np.linalg.norm(u16) / np.linalg.norm(u32) > 0.99
  # TrainConfig.precision reaches fit's step (the small VGG-19 takes bf16 inputs): the first
  # loss, of the same weights, within bf16's rounding.
  first = {}
  for p in ("float32", "bfloat16"):
    cfg = _config(precision=p, adversarial=False, steps=1, checkpoint_every=1)
    train.fit(cfg, str(tmp_path / p), toy[0], num_classes=2)
    first[p] = io.read_jsonl(str(tmp_path / p / "metrics.jsonl"))[0]["loss"]
  assert first["bfloat16"] != first["float32"]
  np.testing.assert_allclose(first["bfloat16"], first["float32"], rtol=0.02)
  with pytest.raises(ValueError, match="precision"):
    _config(precision="float16").validate()


def test_models_built_apart_share_their_compiled_attacks():
  # make_logits_fn of equal modules built apart (one per seed) is one function: the jitted
  # attacks see the same static part and compile once; another model compiles its own.
  from percadv_jax import models
  mods = [models.get_model("vgg19", num_classes=10, **MODEL_KW) for _ in range(2)]
  other = models.get_model("vgg19", num_classes=10, **{**MODEL_KW, "width": 0.25})
  x = jnp.asarray(np.random.default_rng(0).random((2, 32, 32, 3), np.float32))
  variables = [m.init(jax.random.key(i), x, train=False) for i, m in enumerate(mods)]
  fns = [train.make_logits_fn(m.apply, v) for m, v in zip(mods, variables)]
  tree = jax.tree_util.tree_structure
  assert tree(fns[0]) == tree(fns[1])
  assert tree(fns[0]) != tree(train.make_logits_fn(mods[0].apply, variables[0], masked=True))
  assert tree(fns[0]) != tree(train.make_logits_fn(
      other.apply, other.init(jax.random.key(2), x, train=False)))
  for m, v, f in zip(mods, variables, fns):  # each keeps its own weights
    np.testing.assert_allclose(f(x), m.apply(v, x, train=False), rtol=1e-6, atol=1e-6)
  traces = []
  step = jax.jit(lambda f, x: (traces.append(1), f(x))[1])
  for f in fns:
    step(f, x)
  assert len(traces) == 1
