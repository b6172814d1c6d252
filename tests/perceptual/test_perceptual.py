"""Golden tests of percadv_jax.perceptual against skimage and CVXPY, plus invariants."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.metrics
from skimage.transform import resize

from percadv_jax.perceptual import (QualityBall, project, project_cvxpy, solve_linear,
                                    solve_linear_cvxpy, ssim, ssim_attack)
from percadv_jax.perceptual import windows as W


def _photo(name, size):
  img = getattr(skimage.data, name)()
  if img.ndim == 2:
    img = np.stack([img] * 3, -1)
  return resize(img[..., :3], (size, size), anti_aliasing=True).astype(np.float32)


@pytest.fixture(scope="module")
def images16():
  """Three 16x16 instances: a photograph, uniform noise, and a dark (x <= 0.1) image."""
  rng = np.random.default_rng(0)
  x = np.stack([_photo("astronaut", 16), rng.uniform(0, 1, (16, 16, 3)),
                rng.uniform(0, 0.1, (16, 16, 3))]).astype(np.float32)
  return x


# -- SSIM ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "camera"])
def test_ssim_matches_skimage(name):
  a = _photo(name, 96)
  rng = np.random.default_rng(1)
  b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
  kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
            channel_axis=-1)
  ref = skimage.metrics.structural_similarity(a, b, **kw)
  got = ssim(a[None], b[None])
  chex.assert_shape(got, (1,))
  assert abs(float(got[0]) - ref) < 1e-5
  # The map, where skimage defines it (its border crop), against a float64 reference.
  _, full = skimage.metrics.structural_similarity(a.astype(np.float64), b.astype(np.float64),
                                                  full=True, **kw)
  m = ssim(a[None], b[None], return_map=True)
  chex.assert_shape(m, (1, 86, 86, 3))
  m = np.asarray(m)[0]
  np.testing.assert_allclose(m, full[5:-5, 5:-5], atol=1e-4)


def test_ssim_uniform_batch_and_gradients():
  a = np.stack([_photo("astronaut", 32), _photo("coffee", 32)])
  b = np.clip(a[::-1] * 0.9 + 0.05, 0, 1)
  ref = [skimage.metrics.structural_similarity(a[i], b[i], use_sample_covariance=False,
                                               data_range=1, channel_axis=-1) for i in range(2)]
  np.testing.assert_allclose(np.asarray(ssim(a, b, window="uniform")), ref, atol=1e-5)
  flat = jnp.full((1, 16, 16, 3), 0.3)
  gr = jax.grad(lambda v: jnp.sum(ssim(flat, v)))(flat)
  chex.assert_tree_all_finite(gr)
  chex.assert_shape(ssim(a, b, window="uniform", return_map=True), (2, 26, 26, 3))
  assert float(ssim(flat, flat)[0]) == pytest.approx(1.0, abs=1e-6)


# -- the ball: projection ------------------------------------------------------------------------

def test_projection_matches_cvxpy_and_is_idempotent(images16):
  ball = QualityBall()
  rng = np.random.default_rng(2)
  d0 = rng.normal(0, 0.3, images16.shape).astype(np.float32)
  p, info = project(images16, d0, ball, return_info=True)
  assert bool(np.all(np.asarray(info.converged)))
  ref = project_cvxpy(images16, d0, ball)
  err = np.linalg.norm((np.asarray(p) - ref).reshape(3, -1), axis=1)
  assert np.all(err <= 1e-4 * np.linalg.norm(ref.reshape(3, -1), axis=1))
  assert float(np.max(ball.violation(images16, p))) <= 1e-5
  p2 = project(images16, p, ball)
  np.testing.assert_allclose(np.asarray(p2), np.asarray(p), atol=1e-6)
  # Every window of the projection keeps S1 and S2 >= 1 - e (up to float32).
  s1, s2 = ball.window_ssim(images16, p)
  chex.assert_shape([s1, s2], (3, 3, 3, 3))
  chex.assert_shape([info.iterations, info.converged, info.rho], (3,))
  assert float(np.min(s1)) >= 0.95 - 1e-6 and float(np.min(s2)) >= 0.95 - 1e-6
  # d far outside: some window sits on the boundary.
  assert float(np.min(s2)) <= 0.95 + 1e-4


# -- the cell layout of the ADMM engine ------------------------------------------------------------

@pytest.mark.parametrize("window,stride", [(8, 4), (5, 3), (3, 5)])
def test_cell_layout_matches_window_layout(window, stride):
  """Window sums and coverage in the cell layout == the window layout (cells of gcd(w, s);
  (5, 3): gaps between a group's windows; (3, 5): pixels in no window)."""
  rng = np.random.default_rng(6)
  v = jnp.asarray(rng.normal(size=(19, 17, 3)).astype(np.float32))
  grid = W.cell_grid(19, 17, window, stride)
  groups = W.groups(19, 17, window, stride)
  cells = W.to_cells(v, grid)
  assert cells.shape == (3, grid.hc, grid.wc, grid.cell ** 2)
  cover_ref = np.zeros((19, 17, 3), np.float32)
  cover = 0.0
  for gr, cg in zip(groups, grid.groups):
    ref = np.asarray(jnp.sum(W.extract(v, gr), axis=(1, 3)))           # [Ky, Kx, C]
    got = np.asarray(W.cell_win_sum(jnp.sum(cells, axis=-1), cg))       # [C, Ky, Kx]
    np.testing.assert_allclose(got.transpose(1, 2, 0), ref, rtol=1e-5, atol=1e-5)
    for j in range(gr.ky):
      for k in range(gr.kx):
        y0, x0 = gr.oy + j * gr.pitch, gr.ox + k * gr.pitch
        cover_ref[y0:y0 + window, x0:x0 + window] += 1
    cover = cover + W.cell_win_bcast(jnp.ones((cg.ky, cg.kx)), cg, grid)
  back = W.from_cells(W.to_cells(jnp.asarray(cover_ref), grid), jnp.zeros_like(v), grid)
  np.testing.assert_array_equal(np.asarray(back), cover_ref)             # nothing lies outside
  np.testing.assert_array_equal(np.asarray(W.to_cells(jnp.asarray(cover_ref), grid))[..., 0],
                                np.broadcast_to(np.asarray(cover), (3, grid.hc, grid.wc)))
  np.testing.assert_array_equal(np.asarray(W.from_cells(cells, jnp.zeros_like(v), grid))
                                [:grid.hc * grid.cell, :grid.wc * grid.cell],
                                np.asarray(v)[:grid.hc * grid.cell, :grid.wc * grid.cell])


# -- the linear program ----------------------------------------------------------------------------

def _check_lp(x, g, ball):
  d, info = solve_linear(x, g, ball, return_info=True)
  ref = solve_linear_cvxpy(x, g, ball)
  obj = np.sum(g * np.asarray(d), axis=(1, 2, 3))
  obj_ref = np.sum(g * ref, axis=(1, 2, 3))
  assert np.all(obj <= obj_ref * (1 + 1e-5) + 1e-6)            # no better than the optimum
  assert np.all(obj >= obj_ref * (1 - 1e-3)), (obj, obj_ref)    # and within 1e-3 of it
  assert bool(np.all(np.asarray(info.converged)))
  assert np.all(np.asarray(info.gap) <= 1e-3)
  assert float(np.max(ball.violation(x, d))) <= 1e-5
  xd = x + np.asarray(d)
  assert xd.min() >= 0.0 and xd.max() <= 1.0 + 1e-7
  return d


def test_solve_linear_matches_cvxpy(images16):
  rng = np.random.default_rng(3)
  g = rng.normal(size=images16.shape).astype(np.float32)
  _check_lp(images16, g, QualityBall())


def test_solve_linear_odd_size_and_other_window():
  """21x21 with window 6, stride 3: an odd size, 3-pixel cells, 4 groups, e1 != e2. (At 19x19
  the last row and column would lie in no window: the ball refuses that size.)"""
  rng = np.random.default_rng(4)
  x = np.stack([_photo("chelsea", 21), rng.uniform(0.2, 0.9, (21, 21, 3))]).astype(np.float32)
  g = rng.normal(size=x.shape).astype(np.float32)
  ball = QualityBall(window=6, stride=3, eps_structure=0.1, eps_luminance=0.02)
  _check_lp(x, g, ball)
  with pytest.raises(ValueError, match="does not cover every pixel of a 19x19 image"):
    solve_linear(x[:, :19, :19], g[:, :19, :19], ball)


def test_solve_linear_gapped_windows_no_luminance():
  """Window 5, stride 3 (1-pixel cells, gaps between a group's windows), luminance off."""
  rng = np.random.default_rng(7)
  x = np.stack([_photo("coffee", 14), rng.uniform(0.3, 0.8, (14, 14, 3))]).astype(np.float32)
  g = rng.normal(size=x.shape).astype(np.float32)
  _check_lp(x, g, QualityBall(window=5, stride=3, eps_structure=0.08, eps_luminance=None))


def test_admm_projection_variants_agree(images16):
  """``admm.solve``'s ``projection``: jaxopt's l2-ball projections on the windows cut out of the
  cell layout compute the closed form's projections (same iterations, same optimum); the solvers
  use the closed form."""
  from percadv_jax.perceptual import admm, solver
  x = jnp.asarray(images16[:1])
  g = jnp.asarray(np.random.default_rng(6).normal(size=x.shape).astype(np.float32))
  ball = QualityBall()
  args = (x, g, jnp.ones_like(x), None, jnp.full((1,), solver.LP_RHO, jnp.float32))
  kw = dict(ball=ball, mode="lp", max_iters=solver.LP_MAX_ITERS, tol=solver.LP_TOL,
            check_every=solver.CHECK_EVERY, alpha=solver.LP_ALPHA, repair=solver.LP_REPAIR,
            max_blocks=solver.LP_MAX_BLOCKS)
  d, info, _ = admm.solve(*args, projection="closed_form", **kw)
  d2, info2, _ = admm.solve(*args, projection="jaxopt_l2", **kw)
  np.testing.assert_array_equal(np.asarray(info.iterations), np.asarray(info2.iterations))
  obj, obj2 = float(jnp.sum(g * d)), float(jnp.sum(g * d2))
  assert abs(obj2 - obj) <= 1e-4 * abs(obj)
  assert float(np.max(ball.violation(x, d2))) <= 1e-5
  chex.assert_trees_all_equal(d, solve_linear(x, g, ball))
  with pytest.raises(ValueError, match="unknown projection 'exact'; choose one of"):
    admm.solve(*args, projection="exact", **kw)


# -- the attack ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["linear", "pgd"])
def test_ssim_attack_feasible(images16, method):
  rng = np.random.default_rng(5)
  w = jnp.asarray(rng.normal(size=(16 * 16 * 3, 4)).astype(np.float32)) * 0.1
  logits_fn = lambda v: v.reshape(v.shape[0], -1) @ w
  y = jnp.argmax(logits_fn(images16), -1)
  mask = np.zeros((3, 16, 16, 1), np.float32)
  mask[:, 2:14, 2:14] = 1
  ball = QualityBall()
  # NumPy scalars are accepted for the integer and real options.
  x_adv = np.asarray(ssim_attack(logits_fn, images16, y, ball=ball, steps=np.int64(4),
                                 method=method, mask=mask, loss="margin",
                                 solver_iters=np.int64(1000), solver_tol=np.float32(1e-3)))
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  assert float(np.max(ball.violation(images16, x_adv - images16))) <= 1e-5
  np.testing.assert_array_equal(x_adv * (1 - mask), images16 * (1 - mask))
  # the attack moved something and lowered the true-class margin
  margin = lambda v: np.asarray(jnp.take_along_axis(logits_fn(v), y[:, None], 1))[:, 0] - \
      np.sort(np.asarray(logits_fn(v)), -1)[:, -2]
  assert np.abs(x_adv - images16).max() > 1e-3
  assert np.all(margin(x_adv) < margin(images16))


# -- bad input -----------------------------------------------------------------------------------

def test_bad_inputs_raise(images16):
  for kw in [dict(eps_structure=0.0), dict(eps_structure=1.0), dict(eps_luminance=1.5),
             dict(eps_structure=float("nan")), dict(stride=0), dict(window=0)]:
    with pytest.raises(ValueError):
      QualityBall(**kw)
  ball = QualityBall(window=20)
  with pytest.raises(ValueError, match="larger"):
    ball.violation(images16, np.zeros_like(images16))
  bad = images16.copy()
  bad[0, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    solve_linear(bad, images16, QualityBall())
  d = np.zeros_like(images16)
  d[0, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    project(images16, d, QualityBall())
  with pytest.raises(ValueError):
    ssim(images16, images16[:, :8])
  assert QualityBall(eps_luminance=None).luminance is False
  assert QualityBall(eps_luminance=0).luminance is False


def test_bad_numbers_and_arguments_raise(images16):
  """One ValueError naming the problem for every bad number or argument (none reaches XLA)."""
  x = images16
  g = np.ones_like(x)
  ball = QualityBall()
  for sigma in (0, 0.0, -1.0, float("nan"), float("inf"), None):
    with pytest.raises(ValueError, match="sigma"):
      ssim(x, x, sigma=sigma)
  for kw, name in [(dict(check_every=0), "check_every"), (dict(max_iters=0), "max_iters"),
                   (dict(max_iters=-5), "max_iters"), (dict(tol=0.0), "tol"),
                   (dict(tol=float("nan")), "tol"), (dict(alpha=2.0), "alpha"),
                   (dict(repair=-1), "repair"), (dict(max_iters=2.5), "max_iters")]:
    with pytest.raises(ValueError, match=name):
      solve_linear(x, g, ball, **kw)
    with pytest.raises(ValueError, match=name):
      project(x, g, ball, **kw)
  for fn in (solve_linear, project, solve_linear_cvxpy, project_cvxpy):
    with pytest.raises(ValueError, match="ball must be a perceptual.QualityBall, got None"):
      fn(x, g, None)
  bad = g.copy()
  bad[1, 2, 3, 0] = np.nan
  with pytest.raises(ValueError, match="^g contains NaN"):
    solve_linear(x, bad, ball)
  with pytest.raises(ValueError, match="^g must have the images' shape"):
    solve_linear(x, g[:, :8], ball)
  with pytest.raises(ValueError, match="^g must have the images' shape"):
    solve_linear_cvxpy(x, g[:2], ball)
  with pytest.raises(ValueError, match="^d0 contains NaN"):
    project_cvxpy(x, bad, ball)
  import cvxpy as cp
  with pytest.raises(ValueError, match="'NOPE' is not installed; installed solvers: .*CLARABEL"):
    solve_linear_cvxpy(x[:1], g[:1], ball, solver="NOPE")
  assert "CLARABEL" in cp.installed_solvers()

  w = jnp.full((16 * 16 * 3, 5), 0.01)
  logits_fn = lambda v: v.reshape(v.shape[0], -1) @ w
  y2 = np.array([8, -1])
  with pytest.raises(ValueError, match=r"y must lie in \[0, 5\)"):
    ssim_attack(logits_fn, x[:2], y2, ball=ball, steps=2)
  with pytest.raises(ValueError, match=r"y must lie in \[0, 5\)"):
    ssim_attack(logits_fn, x[:2], [0, 5], ball=ball, steps=2, targeted=True)
  y = np.array([0, 1, 2])
  with pytest.raises(ValueError, match="ball must be a perceptual.QualityBall, got None"):
    ssim_attack(logits_fn, x, y, ball=None, steps=2)
  for kw, name in [(dict(steps=0), "steps"), (dict(steps=2.0), "steps"),
                   (dict(solver_iters=0), "solver_iters"), (dict(solver_tol=0), "solver_tol"),
                   (dict(step_size=-1.0), "step_size"), (dict(loss="cw"), "loss")]:
    kw = {"steps": 2, **kw}
    with pytest.raises(ValueError, match=name):
      ssim_attack(logits_fn, x, y, ball=ball, **kw)
  with pytest.raises(ValueError, match=r"shape \[N, num_classes\]"):
    ssim_attack(lambda v: v[:, 0, 0, 0], x, y, ball=ball, steps=2)


def test_numpy_scalars_accepted(images16):
  """NumPy integers work wherever Python ones do, with the same results (NumPy floats, e.g. a
  float32 tolerance, are exercised in test_ssim_attack_feasible: a float32 value is another static
  argument, hence another compile)."""
  rng = np.random.default_rng(8)
  g = rng.normal(size=images16.shape).astype(np.float32)
  ball = QualityBall(window=np.int64(8), stride=np.int32(4))
  assert ball == QualityBall() and hash(ball) == hash(QualityBall())
  d1 = solve_linear(images16, g, ball, max_iters=np.int64(3000), check_every=np.int64(10),
                    return_info=True)
  d2 = solve_linear(images16, g, QualityBall(), return_info=True)
  chex.assert_trees_all_equal(d1, d2)


# -- reliability: mistakes that used to give a silently wrong number ---------------------------

def _logits(n_classes=4, size=16):
  w = jnp.asarray(np.random.default_rng(9).normal(size=(size * size * 3, n_classes))
                  .astype(np.float32)) * 0.1
  return lambda v: v.reshape(v.shape[0], -1) @ w


def test_ball_must_cover_every_pixel(images16):
  """A pixel in no window is bounded by the box alone (the attack moved such pixels by up to
  0.8): a stride larger than the window is refused at construction, an image whose last windows
  stop short of the border wherever the ball is applied (under jit too)."""
  x, g = images16, np.ones_like(images16)
  with pytest.raises(ValueError, match="^stride 8 is larger than window 4: .*use a stride <= "
                                       "window"):
    QualityBall(window=4, stride=8)
  ball = QualityBall(window=8, stride=5)  # fits 13 or 18 px, not 16
  msg = (r"a QualityBall with window 8 and stride 5 does not cover every pixel of a 16x16 image:"
         r" along its height the windows cover pixels 0-12 only, leaving 3 border pixel\(s\) in "
         r"no window .* \(e\.g\. 13 or 18\)")
  y = jnp.argmax(_logits()(x), -1)
  for call in (lambda: solve_linear(x, g, ball), lambda: project(x, g, ball),
               lambda: ball.violation(x, g * 0), lambda: ball.window_ssim(x, g * 0),
               lambda: solve_linear_cvxpy(x[:1], g[:1], ball),
               lambda: ssim_attack(_logits(), x, y, ball=ball, steps=2),
               lambda: jax.jit(lambda u, v: solve_linear(u, v, ball))(x, g)):
    with pytest.raises(ValueError, match=msg):
      call()
  with pytest.raises(ValueError, match="window 8 and stride 4 .* 16x18 image: along its width "
                                       r"the windows cover pixels 0-15 only, leaving 2"):
    QualityBall().check_size(16, 18)
  QualityBall(window=8, stride=5).check_size(18, 13)  # sizes that fit pass
  QualityBall(window=4, stride=4).check_size(16, 16)


def test_ball_numbers_are_checked_at_construction():
  for kw, match in [(dict(eps_structure="0.05"), "eps_structure must be a number, got '0.05'"),
                    (dict(eps_luminance="0.05"), "eps_luminance must be a number, got '0.05'"),
                    (dict(eps_structure=True), "eps_structure must be a number, got True"),
                    (dict(eps_luminance=[0.1]), "eps_luminance must be a number"),
                    (dict(eps_structure=None), "eps_structure is required")]:
    with pytest.raises(ValueError, match="^" + re.escape(match)):
      QualityBall(**kw)
  ball = QualityBall(eps_structure=np.float32(0.05), eps_luminance=0)
  assert type(ball.eps_structure) is float and ball.eps_luminance == 0.0 and not ball.luminance


def test_ssim_refuses_other_ranges_and_ranks(images16):
  x = images16
  y = np.clip(x + 0.02, 0, 1)
  with pytest.raises(ValueError, match=r"^x must lie in \[0, max_val\] = \[0, 1\], got values in "
                                       r"\[0\.004845, 254\.9\]; pass max_val"):
    ssim(255 * x, 255 * x + 1)  # was 1.0
  with pytest.raises(ValueError, match=r"^y must lie in \[0, max_val\] = \[0, 1\], got values in "
                                       r"\[0\.02\d*, 1\.02\]"):
    ssim(x, x + 0.02)
  with pytest.raises(ValueError, match=r"^x must lie in \[0, max_val\] = \[0, 1\], got values in "
                                       r"\[-1"):
    ssim(x - 1, y - 1)
  # the same images in [0, 255] with max_val=255 are fine and give the same SSIM
  np.testing.assert_allclose(np.asarray(ssim(255 * x, 255 * y, max_val=255)),
                             np.asarray(ssim(x, y)), atol=1e-5)
  with pytest.raises(ValueError, match=r"^x must have rank 4 \[N,H,W,C\], got shape "
                                       r"\(3, 16, 16\); .*grayscale batch \[N,H,W\] x\[\.\.\., "
                                       r"None\]"):
    ssim(x[..., 0], y[..., 0])
  with pytest.raises(ValueError, match="^x must have rank 4"):
    ssim(x[0], y[0])  # one [H,W,C] image: x[None]
  with pytest.raises(ValueError, match="^return_map must be True or False, got 'no'"):
    ssim(x, y, return_map="no")


def test_ssim_attack_flags_batch_and_warm_start(images16):
  x = images16
  logits_fn = _logits()
  y = jnp.argmax(logits_fn(x), -1)
  ball = QualityBall()
  for kw, match in [(dict(targeted="no"), "^targeted must be True or False, got 'no'"),
                    (dict(early_stop="no"), "^early_stop must be True or False, got 'no'"),
                    (dict(targeted=1), "^targeted must be True or False, got 1")]:
    with pytest.raises(ValueError, match=match):
      ssim_attack(logits_fn, x, y, ball=ball, steps=2, **kw)
  with pytest.raises(ValueError, match=r"^x is an empty batch \(shape \(0, 16, 16, 3\)\)"):
    ssim_attack(logits_fn, x[:0], y[:0], ball=ball, steps=2)
  from percadv_jax.perceptual import init_state
  g = np.ones_like(x)
  with pytest.raises(ValueError, match=r"^init\.d has shape \(1, 16, 16, 3\), but images x of "
                                       r"shape \(3, 16, 16, 3\) .*\(init holds a batch of 1, x "
                                       r"of 3\); build it with init_state\(x, ball\)"):
    solve_linear(x, g, ball, init=init_state(x[:1], ball))
  with pytest.raises(ValueError, match=r"^init\.v has shape .*another image size or ball"):
    solve_linear(x, g, ball, init=init_state(x, QualityBall(window=4, stride=4)))
  with pytest.raises(ValueError, match="^init must be an AdmmState"):
    solve_linear(x, g, ball, init=(g, g, g))
  with pytest.raises(ValueError, match="^return_info must be True or False"):
    solve_linear(x, g, ball, return_info="yes")
