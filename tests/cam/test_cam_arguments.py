"""Arguments of the model-level CAM entry points: a wrong module, variables, images, layer or
target raises an error naming the argument and what was expected, before anything is traced.

Every entry point that takes ``(module, variables, x)`` goes through
``cam.model.check_model_arguments``; the cases below run each one on every entry point.
"""

import flax
import jax
import numpy as np
import pytest

from percadv_jax import cam
from tests.cam.cam_testlib import TinyCNN, numpy_init

# Every public function taking (module, variables, x): name -> call(module, variables, x, **kw).
ENTRY_POINTS = {
    "grad_cam": lambda m, v, x, **kw: cam.grad_cam(m, v, x, **kw),
    "grad_cam_pp": lambda m, v, x, **kw: cam.grad_cam_pp(m, v, x, **kw),
    "score_cam": lambda m, v, x, **kw: cam.score_cam(m, v, x, score_chunk=4, **kw),
    "layer_cam": lambda m, v, x, **kw: cam.layer_cam(m, v, x, **kw),
    "compute_cam": lambda m, v, x, **kw: cam.compute_cam("hires_cam", m, v, x, **kw),
    "model_info": lambda m, v, x: cam.model_info(m, v, x),
    "tap_names": lambda m, v, x: cam.tap_names(m, v, x),
    "layer_order": lambda m, v, x: cam.layer_order(m, v, x),
    "layers_after": lambda m, v, x, layer="features": cam.layers_after(m, v, x, layer),
}
# Those that take layer= and target=.
MAP_ENTRY_POINTS = ("grad_cam", "grad_cam_pp", "score_cam", "layer_cam", "compute_cam")
LAYER_ENTRY_POINTS = MAP_ENTRY_POINTS + ("layers_after",)


@pytest.fixture(scope="module")
def tiny():
  m = TinyCNN()  # 5 classes, 8 feature channels
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  return m, numpy_init(m, x, seed=1), x


# ----------------------------------------------------------------------------- target

EXPECTED_TARGET = r"target must be a class index \(an int\) or integer class labels " \
                  r"\(int \[2\]\) in \[0, 5\)"


@pytest.mark.parametrize("entry", MAP_ENTRY_POINTS)
@pytest.mark.parametrize("target,error", [
    ("cat", TypeError),
    (["a", "b"], TypeError),
    (object(), TypeError),
    (1.5, ValueError),
    (3.0, ValueError),
    (np.array([0.5, 1.0]), ValueError),
    (True, ValueError),
])
def test_target_of_a_wrong_type_states_the_expected_labels(tiny, entry, target, error):
  m, v, x = tiny
  with pytest.raises(error, match=EXPECTED_TARGET + r", got "):
    ENTRY_POINTS[entry](m, v, x, target=target)


@pytest.mark.parametrize("entry", MAP_ENTRY_POINTS)
def test_target_of_a_wrong_length_or_out_of_range(tiny, entry):
  m, v, x = tiny
  with pytest.raises(ValueError, match=r"target must have shape \(2,\) to match the batch"):
    ENTRY_POINTS[entry](m, v, x, target=np.array([0, 1, 2]))
  with pytest.raises(ValueError, match=r"target must have shape \(2,\)"):
    ENTRY_POINTS[entry](m, v, x, target=np.zeros((2, 1), np.int32))
  with pytest.raises(ValueError, match=r"target must lie in \[0, 5\).* 5 at index 0"):
    ENTRY_POINTS[entry](m, v, x, target=5)
  with pytest.raises(ValueError, match=r"target must lie in \[0, 5\).* -1 at index 1"):
    ENTRY_POINTS[entry](m, v, x, target=[0, -1])


# ----------------------------------------------------------------------------- layer

@pytest.mark.parametrize("entry", LAYER_ENTRY_POINTS)
@pytest.mark.parametrize("layer", [3, ["features"], b"features"])
def test_layer_must_be_a_string(tiny, entry, layer):
  m, v, x = tiny
  with pytest.raises(TypeError, match=r"layer must be a str \(a tap name, one of "
                                      r"\['conv1', 'features'\]\), got "):
    ENTRY_POINTS[entry](m, v, x, layer=layer)


@pytest.mark.parametrize("entry", LAYER_ENTRY_POINTS)
def test_unknown_layer_lists_the_taps(tiny, entry):
  m, v, x = tiny
  with pytest.raises(ValueError, match=r"unknown layer 'nope'; available layers \(taps\): "
                                       r"\['conv1', 'features'\]"):
    ENTRY_POINTS[entry](m, v, x, layer="nope")


def test_a_module_default_layer_of_a_wrong_type(tiny):
  _, v, x = tiny
  with pytest.raises(TypeError, match="layer must be a str"):
    cam.grad_cam(TinyCNN(cam_layer=7), v, x)


# ----------------------------------------------------------------------------- module

@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_module_must_be_a_flax_module(tiny, entry):
  m, v, x = tiny
  fn = lambda variables, images: m.apply(variables, images)
  with pytest.raises(TypeError, match=r"module must be a flax.linen.Module instance, got "
                                      r"<function"):
    ENTRY_POINTS[entry](fn, v, x)
  with pytest.raises(TypeError, match=r"module must be a flax.linen.Module instance, got the "
                                      r"class TinyCNN \(construct it: TinyCNN\(\.\.\.\)\)"):
    ENTRY_POINTS[entry](TinyCNN, v, x)


# ----------------------------------------------------------------------------- variables

@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_variables_of_another_head(tiny, entry):
  m, _, x = tiny
  other = numpy_init(TinyCNN(num_classes=7), x, seed=1)
  with pytest.raises(ValueError, match=r"variables do not fit TinyCNN on inputs \[N, 16, 16, 3\]:"
                                       r" params/head/bias has shape \(7,\), the module expects "
                                       r"\(5,\)"):
    ENTRY_POINTS[entry](m, other, x)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_variables_of_another_width(tiny, entry):
  m, _, x = tiny
  other = numpy_init(TinyCNN(channels=4), x, seed=1)
  # c2 is the first layer whose shape differs (paths in sorted order: c1, c2, head).
  with pytest.raises(ValueError, match=r"variables do not fit TinyCNN.*: params/c2/bias has "
                                       r"shape \(4,\), the module expects \(8,\)"):
    ENTRY_POINTS[entry](m, other, x)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_variables_missing_extra_or_not_collections(tiny, entry):
  m, v, x = tiny
  params = flax.core.unfreeze(v["params"])
  missing = {"params": {k: p for k, p in params.items() if k != "head"}}
  with pytest.raises(ValueError, match=r"variables lack params/head/bias \(shape \(5,\)\)"):
    ENTRY_POINTS[entry](m, missing, x)
  extra = {"params": {**params, "head2": {"kernel": np.zeros((8, 5), np.float32)}}}
  with pytest.raises(ValueError, match=r"variables hold params/head2/kernel \(shape \(8, 5\)\), "
                                       r"which TinyCNN does not have"):
    ENTRY_POINTS[entry](m, extra, x)
  with pytest.raises(ValueError, match=r"variables lack the collection 'params'.*pass the whole "
                                       r"variables dict"):
    ENTRY_POINTS[entry](m, v["params"], x)
  with pytest.raises(TypeError, match=r"variables must be a dict of collections"):
    ENTRY_POINTS[entry](m, [v], x)


def test_variables_in_other_valid_forms_give_the_same_maps(tiny):
  m, v, x = tiny
  want = np.asarray(cam.grad_cam(m, v, x, target=1))
  frozen = flax.core.freeze(v)
  np.testing.assert_array_equal(np.asarray(cam.grad_cam(m, frozen, x, target=1)), want)
  with_taps = {**v, "intermediates": {"features": (np.zeros((2, 8, 8, 8)),)}}
  np.testing.assert_array_equal(np.asarray(cam.grad_cam(m, with_taps, x, target=1)), want)
  assert float(want.max()) > 0.9  # a real map


def test_images_of_another_channel_count_are_named(tiny):
  m, v, x = tiny
  gray = x[..., :1]
  with pytest.raises(ValueError, match=r"variables do not fit TinyCNN on inputs \[N, 16, 16, 1\]:"
                                       r" params/c1/kernel has shape \(3, 3, 3, 6\), the module "
                                       r"expects \(3, 3, 1, 6\)"):
    cam.grad_cam(m, v, gray)


# ----------------------------------------------------------------------------- images

@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_images_are_checked(tiny, entry):
  m, v, x = tiny
  with pytest.raises(ValueError, match=r"x must have rank 4 \(NHWC\), got shape \(16, 16, 3\)"):
    ENTRY_POINTS[entry](m, v, x[0])
  with pytest.raises(ValueError, match="x contains NaN or inf values"):
    ENTRY_POINTS[entry](m, v, x.at[0, 0, 0, 0].set(np.nan))
  with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
    ENTRY_POINTS[entry](m, v, x * 255.0)
  with pytest.raises(ValueError, match="x must be a float array"):
    ENTRY_POINTS[entry](m, v, (np.asarray(x) * 255).astype(np.uint8))


@pytest.mark.parametrize("entry", ["model_info", "tap_names", "layer_order", "layers_after"])
def test_shape_only_entry_points_accept_shapes(tiny, entry):
  """The entry points that use only shapes take ``jax.ShapeDtypeStruct`` images and variables."""
  m, v, x = tiny
  spec = lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype)
  assert (ENTRY_POINTS[entry](m, jax.tree.map(spec, v), spec(x))
          == ENTRY_POINTS[entry](m, v, x))


def test_model_kwargs_must_be_a_mapping(tiny):
  m, v, x = tiny
  with pytest.raises(TypeError, match=r"model_kwargs must be a dict of keyword arguments of "
                                      r"module.apply or None, got list"):
    cam.grad_cam(m, v, x, model_kwargs=["train"])
