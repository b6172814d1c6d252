"""AutoAttack's kinds (APGD-T, FAB-T, Square) and ``autoattack``: guarantees, gradient masking,
golden comparisons with torchattacks 3.5.1 on the same weights, the cascade, bad input."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from percadv_jax import attacks as A
from percadv_jax.attacks import fab, losses
from percadv_jax.attacks.square import eta_pattern
from tests.attacks import attack_models as M

N = 32
# The budgets of the direct calls: the guarantee tests and the golden comparisons share their
# compiles (same shapes and hyper-parameters; a mask of ones is the unmasked attack, bit for bit).
STEPS, QUERIES = 20, 300


@pytest.fixture(scope="module")
def trained():
  _, variables, f, (x, y) = M.trained_model(steps=200)
  return dict(variables=variables, f=f, x=x[:N], y=y[:N])


@pytest.fixture(scope="module")
def rand(trained):
  """N test images (some pixels on the box boundary), random masks, per-example eps."""
  rng = np.random.default_rng(0)
  x = trained["x"].copy()
  x[0, :2] = 0.0
  x[1, :2] = 1.0
  y = np.asarray(jnp.argmax(trained["f"](x), axis=1)).astype(np.int32)
  mask = (rng.uniform(size=(N, M.SIZE, M.SIZE, 1)) < 0.7).astype(np.float32)
  eps = np.linspace(0.05, 0.3, N).astype(np.float32)
  return dict(f=trained["f"], x=x, y=y, mask=mask, eps=eps)


def _distance(xa, x, norm):
  d = (np.asarray(xa) - x).reshape(len(x), -1)
  return np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)


def _robust(f, xa, y):
  return np.asarray(jnp.argmax(f(jnp.asarray(xa)), 1)) == y


def run(kind, f, x, y, *, eps, norm="linf", mask=None, seed=0):
  """The kind's function at the shared budgets (per-example eps, a mask, unroll=1: loops)."""
  eps = np.broadcast_to(np.float32(eps), (len(x),))
  mask = np.ones(x.shape[:3] + (1,), np.float32) if mask is None else mask
  common = dict(eps=eps, norm=norm, mask=mask)
  if kind == "apgd_t":
    return A.apgd_t(f, x, y, key=jax.random.key(seed), steps=STEPS, unroll=1, **common)
  if kind == "fab_t":
    return A.fab_t(f, x, y, steps=STEPS, unroll=1, **common)
  return A.square(f, x, y, key=jax.random.key(seed), queries=QUERIES, **common)


@pytest.mark.parametrize("kind", ["apgd_t", "fab_t", "square"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_guarantees(rand, kind, norm):
  f, x, y, mask = rand["f"], rand["x"], rand["y"], rand["mask"]
  eps = rand["eps"] * (1.0 if norm == "linf" else 8.0)
  xa = np.asarray(run(kind, f, x, y, eps=eps, norm=norm, mask=mask))
  assert xa.shape == x.shape and xa.dtype == np.float32
  assert np.all(_distance(xa, x, norm) <= eps + 1e-6), kind
  assert xa.min() >= 0.0 and xa.max() <= 1.0
  outside = np.broadcast_to(mask == 0, x.shape)
  assert np.array_equal(xa[outside], x[outside])
  broken = ~_robust(f, xa, y)
  # It breaks some examples (the larger radii), and returns x for the others (AutoAttack).
  assert 0 < broken.sum() < N, kind
  np.testing.assert_array_equal(xa[~broken], x[~broken])
  # Deterministic from the key (FAB-T with one restart uses none).
  np.testing.assert_array_equal(np.asarray(run(kind, f, x, y, eps=eps, norm=norm, mask=mask)),
                                xa)


def test_fab_restarts_keep_the_guarantees(rand):
  f, x, y, mask, eps = rand["f"], rand["x"], rand["y"], rand["mask"], rand["eps"] * 8
  one = run("fab_t", f, x, y, eps=eps, norm="l2", mask=mask)
  two = A.fab_t(f, x, y, key=jax.random.key(0), eps=eps, steps=STEPS, norm="l2", mask=mask,
                restarts=2, unroll=1)
  assert np.all(_distance(two, x, "l2") <= eps + 1e-6)
  outside = np.broadcast_to(mask == 0, x.shape)
  assert np.array_equal(np.asarray(two)[outside], x[outside])
  # Restart 0 is the single run: more restarts never lose a broken example.
  assert np.all(_robust(f, two, y) <= _robust(f, one, y))


def test_kinds_through_robust_accuracy_and_the_cascade(rand, tmp_path):
  f, x, y, mask = rand["f"], rand["x"], rand["y"], rand["mask"]
  kinds = {"fab_t": A.Attack("fab_t", eps=0.1, steps=22, masked=True),
           "apgd_t": A.Attack("apgd_t", eps=0.1, steps=33, targets=2, masked=True),
           "square": A.Attack("square", eps=0.1, steps=50, masked=True)}
  assert [a.label for a in kinds.values()] == ["FAB-T-22", "APGD-T-33", "SQUARE-50"]
  assert kinds["apgd_t"].loss == "dlr" and kinds["square"].loss == "margin"
  key, outside = jax.random.key(0), np.broadcast_to(mask == 0, x.shape)
  # Batches of 8 in both: the cascade's compacted survivors run in batches of 8 too, so the
  # two evaluations share their compiles.
  from experiments import evaluation as store  # the experiments' store keeps cascades too
  runs = [A.robust_accuracy(f, x, y, kinds, key=key, mask=mask, batch_size=8,
                            return_adversarial=True, cascade=False)]
  runs += [store.evaluate(str(tmp_path), {"model": "tiny"}, logits_fn=f, attacks=kinds, key=key,
                          data={"image": x, "label": y, "mask": mask}, batch_size=8,
                          return_adversarial=True, cascade=True) for _ in range(2)]
  full, cas, again = runs  # again: read back from the store
  for ev in runs:
    for name, xa in ev.x_adv.items():
      assert np.all(ev.linf[name] <= 0.1 + 1e-6)
      assert np.array_equal(xa[outside], x[outside])
  assert len(list(tmp_path.glob("*.npz"))) == 1
  for name in kinds:
    np.testing.assert_array_equal(cas.survived[name], again.survived[name])
  # The first attack (FAB-T: deterministic) sees every example in both; then only survivors.
  np.testing.assert_array_equal(cas.survived["fab_t"], full.survived["fab_t"])
  assert np.all(cas.survived["apgd_t"] <= cas.survived["fab_t"])
  assert np.all(cas.survived["square"] <= cas.survived["apgd_t"])
  np.testing.assert_array_equal(cas.robust, cas.survived["square"])
  skipped = ~cas.survived["fab_t"]
  assert skipped.any() and np.all(cas.linf["apgd_t"][skipped] == 0)
  np.testing.assert_array_equal(cas.x_adv["apgd_t"][skipped], x[skipped])
  s = cas.summary()
  assert s["per_attack"]["square"] == s["robust"] <= s["per_attack"]["fab_t"] < s["clean"]
  # The cascade's worst case is the attacks' per-example worst case (AutoAttack's semantics).
  assert s["robust"] == pytest.approx(full.summary()["robust"], abs=2 / N)
  # The Attack equals its function (FAB-T with one restart is deterministic; batches of 8).
  direct = np.concatenate([A.fab_t(f, x[i:i + 8], y[i:i + 8], eps=0.1, steps=22,
                                   mask=mask[i:i + 8]) for i in range(0, N, 8)])
  np.testing.assert_array_equal(_robust(f, direct, y), full.survived["fab_t"])


def test_square_breaks_a_gradient_masked_model_where_pgd_fails():
  w = np.random.default_rng(0).normal(size=(8 * 8 * 3, 4)).astype(np.float32)

  def masked(x):  # zero input gradient everywhere: gradient masking by construction
    return jax.lax.stop_gradient(x).reshape(x.shape[0], -1) @ w

  x = np.random.default_rng(1).uniform(size=(32, 8, 8, 3)).astype(np.float32)
  y = np.asarray(jnp.argmax(masked(x), 1))
  assert not np.any(jax.grad(lambda v: jnp.sum(masked(v)))(x))
  attacks = {"pgd": A.Attack("pgd", eps=0.06, steps=10),
             "square": A.Attack("square", eps=0.06, steps=300)}
  acc = A.robust_accuracy(masked, x, y, attacks, key=jax.random.key(0)).summary()["per_attack"]
  # PGD stays at its random start; the score-based search breaks about half the images.
  assert acc["pgd"] >= 0.85, acc
  assert acc["square"] <= acc["pgd"] - 0.3, acc


def test_randomised_model_eot(trained):
  f, x, y = trained["f"], trained["x"][:8], trained["y"][:8]

  def noisy(xa, keys):  # a randomised model: Gaussian input noise drawn from per-example keys
    noise = jax.vmap(lambda k: jax.random.normal(k, xa.shape[1:]))(keys)
    return f(jnp.clip(xa + 0.05 * noise, 0.0, 1.0))

  ev = A.autoattack(noisy, x, y, key=jax.random.key(0), eps=0.1, version="rand")
  assert list(ev.survived) == ["apgd_ce", "apgd_dlr"]
  assert all(a.eot == 20 for a in A.autoattack_attacks(0.1, version="rand").values())
  assert np.all(ev.linf["apgd_ce"] <= 0.1 + 1e-6)
  assert ev.summary()["robust"] < ev.summary()["clean"]
  with pytest.raises(ValueError, match="key"):
    A.autoattack(noisy, x, y, key=None, eps=0.1, version="rand")
  with pytest.raises(ValueError, match="eot"):  # a randomised model with a deterministic attack
    A.robust_accuracy(noisy, x, y, {"a": A.Attack("apgd", eot=2), "b": A.Attack("apgd")},
                      key=jax.random.key(0))


# --- golden comparisons with torchattacks 3.5.1 (same weights, same images) -----------------


@pytest.fixture(scope="module")
def golden(trained):
  torch = pytest.importorskip("torch")
  torchattacks = pytest.importorskip("torchattacks")
  assert torchattacks.__version__ == "3.5.1"
  threads = torch.get_num_threads()
  torch.set_num_threads(1)  # a tiny model: more threads only contend on a busy machine
  model = M.torch_tiny_cnn(trained["variables"])
  x, y = trained["x"], trained["y"]
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  yt = torch.from_numpy(y.astype(np.int64))
  with torch.no_grad():
    diff = np.abs(model(xt).numpy() - np.asarray(trained["f"](x))).max()
  assert diff < 1e-4, diff

  def theirs(attack):
    xa = attack(xt, yt)
    with torch.no_grad():
      return (model(xa).argmax(1) == yt).numpy()

  yield dict(torch=torch, ta=torchattacks, model=model, f=trained["f"], x=x, y=y,
             theirs=theirs)
  torch.set_num_threads(threads)


def _spread_agrees(ours, theirs, n):
  """The seeds' robust accuracies: the two ranges overlap (up to one example)."""
  return min(ours) <= max(theirs) + 1 / n and min(theirs) <= max(ours) + 1 / n


def test_losses_and_projections_match_torchattacks(golden):
  torch, ta = golden["torch"], golden["ta"]
  rng = np.random.default_rng(0)
  z = rng.normal(size=(16, 10)).astype(np.float32)
  y, t = rng.integers(0, 10, 16), rng.integers(0, 10, 16)
  ref = ta.APGDT(golden["model"]).dlr_loss_targeted(torch.tensor(z), torch.tensor(y),
                                                    torch.tensor(t)).numpy()
  np.testing.assert_allclose(losses.dlr_targeted(z, y, t), ref, rtol=1e-5, atol=1e-6)
  from torchattacks.attacks import fab as tfab
  for scale in (0.1, 3.0, 300.0):  # the hyperplane near, across, beyond the box
    pts = rng.uniform(size=(12, 75)).astype(np.float32)
    w = rng.normal(size=(12, 75)).astype(np.float32)
    w[:, :5] = 0.0
    b = (np.sum(w * pts, 1) + scale * rng.normal(size=12)).astype(np.float32)
    for norm in ("linf", "l2"):
      theirs = getattr(tfab, f"projection_{norm}")(torch.tensor(pts), torch.tensor(w),
                                                   torch.tensor(b)).numpy()
      ours = np.asarray(jax.jit(getattr(fab, f"projection_{norm}"))(pts, w, b))
      np.testing.assert_allclose(ours, theirs, atol=1e-4)
  sq = ta.Square(golden["model"])
  for side in (1, 3, 6, 7):
    pattern = np.asarray(eta_pattern(9, 9, jnp.array([1]), jnp.array([2]), jnp.int32(side),
                                     jnp.array([False])))[0, ..., 0]
    window = pattern[1:1 + side, 2:2 + side]
    ref = sq.eta(side).numpy()  # randomly transposed
    assert min(np.abs(window - ref).max(), np.abs(window - ref.T).max()) < 1e-6
    assert np.abs(pattern).sum() == pytest.approx(np.abs(window).sum())


@pytest.mark.parametrize("norm, eps", [("linf", 0.08), ("l2", 0.8)])
def test_fab_t_matches_torchattacks(golden, norm, eps):
  """FAB-T with one restart is deterministic: the same examples are broken."""
  f, x, y, ta = golden["f"], golden["x"], golden["y"], golden["ta"]
  ref = golden["theirs"](ta.FAB(golden["model"], norm={"linf": "Linf", "l2": "L2"}[norm],
                                eps=eps, steps=STEPS, n_restarts=1, multi_targeted=True,
                                n_classes=M.NUM_CLASSES))
  ours = _robust(f, run("fab_t", f, x, y, eps=eps, norm=norm), y)
  assert 0.1 < ref.mean() < 0.9, ref.mean()  # a radius where the comparison means something
  assert np.sum(ours != ref) <= 1, (ours.mean(), ref.mean())


@pytest.mark.parametrize("kind, eps", [("apgd_t", 0.08), ("square", 0.1)])
def test_random_attacks_match_torchattacks_within_the_seed_spread(golden, kind, eps):
  f, x, y, ta, model = golden["f"], golden["x"], golden["y"], golden["ta"], golden["model"]
  seeds = range(3)
  if kind == "apgd_t":
    theirs = [golden["theirs"](ta.APGDT(model, eps=eps, steps=STEPS, seed=s,
                                        n_classes=M.NUM_CLASSES)).mean() for s in seeds]
  else:
    theirs = [golden["theirs"](ta.Square(model, eps=eps, n_queries=QUERIES, p_init=0.8, seed=s,
                                         resc_schedule=False)).mean() for s in seeds]
  ours = [_robust(f, run(kind, f, x, y, eps=eps, seed=s), y).mean() for s in seeds]
  assert 0.1 < np.mean(theirs) < 0.9, theirs
  assert _spread_agrees(ours, theirs, len(y)), (ours, theirs)


def test_autoattack_matches_torchattacks(golden):
  """torchattacks' AutoAttack (its standard version) with its budgets cut the same way on both
  sides, and its Square's schedule unrescaled as AutoAttack's."""
  f, x, y, ta, model = golden["f"], golden["x"], golden["y"], golden["ta"], golden["model"]
  eps, budgets = 0.08, (65, 22, 22, QUERIES)  # loops, not unrolled: quick to compile
  ours_attacks = [A.Attack(kind, steps=b) for kind, b in zip(
      ("apgd", "apgd_t", "fab_t", "square"), budgets)]
  theirs, ours = [], []
  for s in range(3):
    aa = ta.AutoAttack(model, norm="Linf", eps=eps, version="standard",
                       n_classes=M.NUM_CLASSES, seed=s)
    apgd, apgdt, fab_, sq = aa._autoattack.attacks
    apgd.steps, apgdt.steps, fab_.steps = budgets[:3]
    sq.n_queries, sq.rescale_schedule = QUERIES, False
    theirs.append(golden["theirs"](aa).mean())
    ev = A.autoattack(f, x, y, key=jax.random.key(s), eps=eps, version="custom", batch_size=8,
                      attacks=ours_attacks)
    ours.append(ev.summary()["robust"])
    assert list(ev.survived) == ["APGD-65", "APGD-T-22", "FAB-T-22", "SQUARE-300"]
  assert 0.05 < np.mean(theirs) < 0.9, theirs
  assert _spread_agrees(ours, theirs, len(y)), (ours, theirs)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    (dict(version="plus"), "version"),
    (dict(eps=-0.1), "eps"),
    (dict(key=None), "key"),
    (dict(mask=np.ones((N, 4, 4, 1), np.float32), masked=True), "mask"),
    (dict(masked=True), "mask"),
    (dict(version="custom", attacks=[A.Attack("apgd_t", targets=4)]), "targets"),
    (dict(version="custom", attacks=["apgd-x"]), "apgd-x"),
    (dict(version="custom"), "custom"),
    (dict(attacks=["square"]), "custom"),
    (dict(norm="l1"), "norm"),
])
def test_autoattack_bad_input_raises_before_any_work(rand, monkeypatch, kwargs, match):
  from percadv_jax import parallel
  calls = []
  monkeypatch.setattr(parallel, "map_examples", lambda *a, **k: calls.append(1))
  kw = dict(key=jax.random.key(0), eps=0.1)
  kw.update(kwargs)
  with pytest.raises(ValueError, match=match):
    A.autoattack(rand["f"], rand["x"], rand["y"], **kw)
  assert not calls  # no evaluation ran


@pytest.mark.parametrize("make, match", [
    (lambda: A.Attack("square", steps=0), "steps"),
    (lambda: A.Attack("apgd_t", targets=0), "targets"),
    (lambda: A.Attack("pgd", targets=3), "targets"),
    (lambda: A.Attack("square", loss="dlr"), "objective"),
    (lambda: A.Attack("fab_t", eot=5), "eot"),
])
def test_attack_fields_are_validated(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_functions_validate(rand):
  f, x, y = rand["f"], rand["x"], rand["y"]
  with pytest.raises(ValueError, match="targets"):
    A.apgd_t(f, x, y, key=jax.random.key(0), eps=0.1, targets=M.NUM_CLASSES)
  with pytest.raises(ValueError, match="targets"):
    A.fab_t(f, x, y, eps=0.1, targets=M.NUM_CLASSES)
  with pytest.raises(ValueError, match="queries"):
    A.square(f, x, y, key=jax.random.key(0), eps=0.1, queries=0)
  with pytest.raises(ValueError, match="p_init"):
    A.square(f, x, y, key=jax.random.key(0), eps=0.1, p_init=1.5)
  with pytest.raises(ValueError, match="key"):
    A.square(f, x, y, key=None, eps=0.1)
  with pytest.raises(ValueError, match="eps"):
    A.fab_t(f, x, y, eps=-1.0)
  three = jax.jit(lambda xa: f(xa)[:, :3])
  with pytest.raises(ValueError, match="4 classes"):
    A.apgd_t(three, x, y % 3, key=jax.random.key(0), eps=0.1)
  with pytest.raises(ValueError, match="targets"):
    A.robust_accuracy(f, x, y, {"t": A.Attack("fab_t", targets=M.NUM_CLASSES)})


def test_repr_names_targets_and_eot_only_when_set():
  # The repr is an evaluation's id in the experiments' store.
  assert repr(A.Attack("pgd", eps=0.5)) == (
      "Attack(kind='pgd', eps=0.5, steps=10, norm='linf', restarts=1, loss='ce', "
      "step_factor=None, masked=False)")
  assert repr(A.Attack("fab_t", eps=0.5, targets=3)).endswith("masked=False, targets=3)")
  assert repr(A.Attack("apgd", eps=0.5, eot=20)).endswith("masked=False, eot=20)")
  assert A.Attack("apgd", eot=20) != A.Attack("apgd") and hash(A.Attack("apgd_t", targets=2))


def test_cascade_pads_few_survivors_to_a_power_of_two_only(rand, monkeypatch):
  # A stage on fewer examples than batch_size runs at the power of two at or above their number
  # (one compile per power of two), and the padding changes no result: the same evaluation with
  # every stage padded to batch_size is identical, field by field (the norms up to float
  # rounding: XLA's reductions may group differently at another batch shape).
  from percadv_jax import parallel
  from percadv_jax.attacks import evaluation
  calls, map_examples = [], parallel.map_examples

  def spy(fn, args, data, *, batch_size, **kw):
    calls.append((len(data["label"]), batch_size))
    return map_examples(fn, args, data, batch_size=batch_size, **kw)

  monkeypatch.setattr(parallel, "map_examples", spy)
  f, x, y = rand["f"], rand["x"], rand["y"]
  kinds = {"fgsm": A.Attack("fgsm", eps=0.1), "pgd": A.Attack("pgd", eps=0.1, steps=2)}

  def run():
    return A.robust_accuracy(f, x, y, kinds, key=jax.random.key(0), batch_size=N, cascade=True)
  ev = run()
  rows = [m for m, _ in calls[1:]]  # after the clean pass: one call per attack
  assert rows == [int(ev.clean.sum()), int(ev.survived["fgsm"].sum())] and rows[1] < N
  nd = parallel.num_devices()
  for m, bs in calls[1:]:
    want = N if m >= N else max(-(-(1 << (m - 1).bit_length()) // nd) * nd, nd)
    assert bs == min(N, want) >= m
  assert any(bs < N for _, bs in calls[1:])
  monkeypatch.setattr(evaluation, "_stage_batch_size", lambda rows, batch_size, mesh: batch_size)
  full = run()
  assert np.array_equal(ev.clean, full.clean)
  assert ev.survived.keys() == full.survived.keys()
  for name in ev.survived:
    assert np.array_equal(ev.survived[name], full.survived[name]), name
    for norm in ("linf", "l2"):
      np.testing.assert_allclose(getattr(ev, norm)[name], getattr(full, norm)[name], rtol=1e-6)
