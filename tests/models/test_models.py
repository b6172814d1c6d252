"""Model registry, shapes, taps, input checks, max pooling and jit == no-jit (no Keras here)."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from percadv_jax.models import MobileNetV2, VGG19, get_model, max_pool_2x2
from percadv_jax.models import mobilenet_v2 as mnv2


def _shapes(module, x_shape, **apply_kw):
  """Logits and intermediates shapes via eval_shape (traced, never compiled)."""
  x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), x)
  logits, state = jax.eval_shape(
      lambda v, x: module.apply(v, x, mutable=["intermediates"], **apply_kw), variables, x)
  inter = {k: tuple(v.shape) for k, v in state["intermediates"].items()}
  return variables, tuple(logits.shape), inter


def test_make_divisible_matches_keras_rules():
  # Keras' rounding: nearest multiple of 8, at least 8, never below 90% of the value.
  assert [mnv2.make_divisible(v) for v in (11.2, 16, 24, 5, 8.4, 36.4, 1792.0)] == \
      [16, 16, 24, 8, 8, 40, 1792]
  plan = mnv2.channel_plan(0.35)
  assert plan["first"] == 16 and plan["last"] == 1280
  assert [b[2] for b in plan["blocks"]] == [8, 8, 8, 16, 16, 16, 24, 24, 24, 24, 32, 32, 32,
                                            56, 56, 56, 112]
  assert mnv2.channel_plan(1.4)["last"] == 1792 and mnv2.channel_plan(1.0)["first"] == 32


@pytest.mark.parametrize("width,size", [(0.35, (96, 96)), (1.0, (224, 224)), (1.4, (75, 61))])
def test_mobilenet_v2_shapes_and_taps(width, size):
  module = get_model("mobilenet_v2", num_classes=7, width=width)
  assert isinstance(module, MobileNetV2) and module.cam_layer == "out_relu"
  variables, logits, inter = _shapes(module, (3, *size, 3))
  assert logits == (3, 7)
  assert set(variables) == {"params", "batch_stats"}
  plan = mnv2.channel_plan(width)
  assert {f"block_{i}" for i in range(17)} | {"Conv1_relu", "out_relu"} == set(inter)
  # Spatial size: ceil-halving at Conv1 and the four stride-2 blocks (Keras' correct_pad).
  h, w = size
  for _ in range(5):
    h, w = -(-h // 2), -(-w // 2)
  assert inter["out_relu"] == (3, h, w, plan["last"])
  assert inter["block_16"] == (3, h, w, plan["blocks"][-1][2])
  assert inter["Conv1_relu"] == (3, -(-size[0] // 2), -(-size[1] // 2), plan["first"])
  if size == (224, 224):
    assert inter["out_relu"] == (3, 7, 7, 1280)
    n_params = sum(p.size for p in jax.tree.leaves(variables["params"]))
    assert n_params == 3_504_872 - 1000 * 1281 + 7 * 1281  # Keras' MobileNetV2 count, 7 classes


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_small_vgg_shapes_and_taps(size, batch_norm):
  module = get_model("vgg19", num_classes=43, width=0.25, variant="small", batch_norm=batch_norm)
  assert isinstance(module, VGG19) and module.cam_layer == "block5_conv4"
  variables, logits, inter = _shapes(module, (2, size, size, 3))
  assert logits == (2, 43)
  assert ("batch_stats" in variables) == batch_norm
  convs = [f"block{b}_conv{k}" for b, n in enumerate((2, 2, 4, 4, 4), 1) for k in range(1, n + 1)]
  assert len(convs) == 16 and set(convs) | {f"block{b}_pool" for b in range(1, 6)} == set(inter)
  assert inter["block1_conv1"] == (2, size, size, 16)
  assert inter["block5_conv4"] == (2, size // 16, size // 16, 128)
  assert inter["block5_pool"] == (2, size // 32, size // 32, 128)
  assert "fc1" not in variables["params"]


def test_imagenet_vgg_matches_keras_parameter_count():
  module = get_model("vgg19", num_classes=1000)
  variables, logits, inter = _shapes(module, (1, 224, 224, 3))
  assert logits == (1, 1000) and inter["block5_conv4"] == (1, 14, 14, 512)
  assert sum(p.size for p in jax.tree.leaves(variables)) == 143_667_240  # Keras' VGG19 count


def test_get_model_errors():
  with pytest.raises(ValueError, match=r"unknown model 'resnet'; known models: "
                                       r"\['mobilenet_v2', 'vgg19'\]"):
    get_model("resnet", num_classes=10)
  with pytest.raises(ValueError, match="unknown keyword.*'alpha'"):
    get_model("mobilenet_v2", num_classes=10, alpha=0.5)
  with pytest.raises(ValueError, match="num_classes"):
    get_model("vgg19", num_classes=0)
  with pytest.raises(ValueError, match="width"):
    get_model("vgg19", num_classes=10, width=-1.0)
  with pytest.raises(ValueError, match="unknown variant"):
    get_model("vgg19", num_classes=10, variant="tiny")
  with pytest.raises(ValueError, match="batch_norm"):
    get_model("vgg19", num_classes=10, batch_norm=True)


@pytest.mark.parametrize("name,kw", [("mobilenet_v2", {"width": 0.35}),
                                     ("vgg19", {"width": 0.25, "variant": "small"})])
def test_bad_inputs_raise_value_error(name, kw):
  module = get_model(name, num_classes=5, **kw)
  ok = np.full((1, 32, 32, 3), 0.5, np.float32)
  bad = {
      "rank": (ok[0], "rank 4"),
      "channels": (ok[..., :1], "3 channels"),
      "dtype": ((ok * 255).astype(np.uint8), "float"),
      "range": (ok * 3.0, r"\[0, 1\]"),
      "nan": (np.where(ok > 0, np.nan, ok).astype(np.float32), "NaN"),
      "size": (ok[:, :16, :16], "at least 32x32"),
  }
  for x, message in bad.values():
    with pytest.raises(ValueError, match=message):
      module.apply({}, x)  # the check runs before any variable is touched
  # Under jit the values are abstract: shapes and dtypes are still checked.
  with pytest.raises(ValueError, match="3 channels"):
    jax.jit(module.apply)({}, jnp.asarray(ok[..., :1]))


def test_max_pool_2x2_matches_flax_values_and_gradient():
  rng = np.random.default_rng(1)
  x = rng.uniform(0.0, 1.0, (2, 9, 6, 3)).astype(np.float32)  # odd height: last row dropped
  ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))  # noqa: E731
  np.testing.assert_array_equal(jax.jit(max_pool_2x2)(x), jax.jit(ref)(x))
  w = rng.normal(0.0, 1.0, (2, 4, 3, 3)).astype(np.float32)
  g = jax.jit(jax.grad(lambda x: jnp.sum(max_pool_2x2(x) * w)))(x)
  g_ref = jax.jit(jax.grad(lambda x: jnp.sum(ref(x) * w)))(x)
  np.testing.assert_allclose(g, g_ref, rtol=0, atol=0)


def _random_variables(module, x, seed):
  """Random variables of the right structure from NumPy (``module.init``'s threefry draws cost
  a long XLA compile on CPU; the structure comes from eval_shape)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)

  def draw(path, leaf):
    name, shape = jax.tree_util.keystr(path), leaf.shape
    if name.endswith("['kernel']"):
      a = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
    elif name.endswith(("['scale']", "['var']")):
      a = rng.uniform(0.5, 1.5, shape)
    else:
      a = rng.normal(0.0, 0.1, shape)
    return jnp.asarray(a, jnp.float32)
  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def small_vgg():
  module = get_model("vgg19", num_classes=10, width=0.125, variant="small", batch_norm=True)
  x = np.random.default_rng(0).uniform(0.0, 1.0, (4, 32, 32, 3)).astype(np.float32)
  return module, _random_variables(module, x, 1), x


def test_jit_equals_no_jit_and_taps(small_vgg):
  module, variables, x = small_vgg
  logits, state = module.apply(variables, x, mutable=["intermediates"])
  logits_jit = jax.jit(module.apply)(variables, x)
  np.testing.assert_allclose(logits, logits_jit, rtol=1e-5, atol=1e-5)
  feats = state["intermediates"]["block5_conv4"]
  assert feats.shape == (4, 2, 2, 64) and float(feats.min()) >= 0.0  # after ReLU
  # The head is GAP + Dense over block5_pool: recompute the logits from the tap.
  head = variables["params"]["predictions"]
  pooled = state["intermediates"]["block5_pool"].mean(axis=(1, 2))
  np.testing.assert_allclose(pooled @ head["kernel"] + head["bias"], logits, rtol=1e-5, atol=1e-5)


def test_tap_gradient_is_activation_gradient(small_vgg):
  """grad w.r.t. the tap's perturbation == grad of the head evaluated on the activation."""
  module, variables, x = small_vgg
  _, state = module.apply(variables, x, mutable=["intermediates", "perturbations"])
  zeros = state["perturbations"]
  assert zeros["block5_pool"].shape == (4, 1, 1, 64)

  def loss(p):
    return module.apply({**variables, "perturbations": p}, x)[:, 3].sum()
  g = jax.jit(jax.grad(loss))(zeros)["block5_pool"]
  kernel = variables["params"]["predictions"]["kernel"]
  np.testing.assert_allclose(g, jnp.broadcast_to(kernel[:, 3], g.shape), rtol=1e-5, atol=1e-6)


def test_train_mode_updates_batch_stats(small_vgg):
  module, variables, x = small_vgg
  logits, updates = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, x)
  assert logits.shape == (4, 10)
  before = variables["batch_stats"]["block1_conv1_bn"]["mean"]
  after = updates["batch_stats"]["block1_conv1_bn"]["mean"]
  assert before.shape == after.shape == (8,)
  assert float(jnp.abs(after - before).max()) > 0.0


def test_models_import_neither_keras_nor_tensorflow():
  code = ("import sys, percadv_jax.models; "
          "bad = [m for m in ('keras', 'tensorflow') if m in sys.modules]; "
          "assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True,
                 env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.parametrize("kh,stride,pad,groups", [
    (3, 1, ((1, 1), (1, 1)), 1), (3, 2, ((0, 1), (0, 1)), 1), (3, 2, ((1, 1), (1, 1)), 1),
    (1, 1, ((0, 0), (0, 0)), 1), (3, 1, ((1, 1), (1, 1)), "depthwise"),
    (3, 2, ((0, 1), (1, 1)), "depthwise"), (5, 2, "SAME", 1)])
def test_conv_patches_matches_xla_convolution_and_its_gradients(kh, stride, pad, groups):
  from percadv_jax.models import layers
  rng = np.random.default_rng(kh + stride)
  x = jnp.asarray(rng.normal(size=(2, 9, 8, 6)), jnp.float32)
  cin, cout = 6, (6 if groups == "depthwise" else 5)
  g = cin if groups == "depthwise" else 1
  k = jnp.asarray(rng.normal(size=(kh, kh, cin // g, cout)), jnp.float32)
  dn = ("NHWC", "HWIO", "NHWC")
  shape = jax.lax.conv_general_dilated(x, k, (stride, stride), pad, dimension_numbers=dn,
                                       feature_group_count=g).shape
  w = jnp.asarray(rng.normal(size=shape), jnp.float32)

  def f(conv, x, k):
    y = conv(x, k, (stride, stride), pad, dimension_numbers=dn, feature_group_count=g)
    return jnp.sum(y * w), y
  (v0, y0), g0 = jax.value_and_grad(lambda x, k: f(jax.lax.conv_general_dilated, x, k),
                                    argnums=(0, 1), has_aux=True)(x, k)
  (v1, y1), g1 = jax.jit(jax.value_and_grad(lambda x, k: f(layers.conv_patches, x, k),
                                            argnums=(0, 1), has_aux=True))(x, k)
  assert y0.shape == y1.shape
  np.testing.assert_allclose(y1, y0, atol=1e-5, rtol=1e-5)
  for a, b in zip(g1, g0):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  with pytest.raises(ValueError, match="conv_impl"):
    layers.conv_fn("cudnn")
  # conv_auto picks per convolution and gives the same values.
  y2 = jax.jit(lambda x, k: f(layers.conv_auto, x, k)[1])(x, k)
  np.testing.assert_allclose(y2, y0, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,kw,size", [
    ("vgg19", {"variant": "small", "width": 0.125, "batch_norm": True}, 32),
    pytest.param("mobilenet_v2", {"width": 0.35}, 35,
                 marks=pytest.mark.slow)])  # MobileNetV2's three programs: ~50 s
def test_patches_and_auto_models_equal_xla_models(name, kw, size):
  # Same parameters and, in eval mode, the same logits and gradients w.r.t. the input and the
  # parameters within 1e-5 (relative to each array's largest entry). (Train-mode BatchNorm
  # gradients of a random network at batch 3 are ill-conditioned: there a 1e-6 change of the
  # input moves them by percents, so they are not compared.)
  from percadv_jax.models import random_variables
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(3, size, size, 3)), jnp.float32)
  y = jnp.asarray([0, 1, 2])
  ref, patches, auto = (get_model(name, num_classes=4, conv_impl=c, **kw)
                        for c in ("xla", "patches", "auto"))
  for new in (patches, auto, get_model(name, num_classes=4, **kw)):
    assert jax.tree.structure(jax.eval_shape(ref.init, jax.random.key(0), x[:1])) == \
        jax.tree.structure(jax.eval_shape(new.init, jax.random.key(0), x[:1]))
  assert get_model(name, num_classes=4, **kw).conv_impl == "auto"  # the default
  variables = random_variables(ref, x[:1])

  def loss(module, v, x):
    logits = module.apply(v, x)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), y]), logits
  outs = [jax.jit(jax.value_and_grad(lambda v, x: loss(m, v, x), argnums=(0, 1),
                                     has_aux=True))(variables, x) for m in (ref, patches, auto)]
  (_, l0), g0 = outs[0]
  for (_, l1), g1 in outs[1:]:
    np.testing.assert_allclose(l1, l0, atol=1e-5 * float(jnp.max(jnp.abs(l0))))
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
      np.testing.assert_allclose(b, a, atol=1e-5 * float(jnp.max(jnp.abs(a))) + 1e-12)


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_conv_auto_uses_xla_convolutions_off_cpu(platform, monkeypatch):
  # conv_auto reads the backend when traced: on CPU depthwise, 1x1 and tiny-map convolutions are
  # patches / shifted multiply-adds (no convolution op), on accelerators all of them are XLA's.
  from percadv_jax.models import layers
  dn = ("NHWC", "HWIO", "NHWC")
  x, tiny = jnp.zeros((2, 8, 8, 6)), jnp.zeros((2, 2, 2, 6))
  cases = [(x, jnp.zeros((3, 3, 1, 6)), 6), (x, jnp.zeros((1, 1, 6, 4)), 1),
           (tiny, jnp.zeros((3, 3, 6, 4)), 1)]

  def conv_ops(x, k, groups):
    jaxpr = jax.make_jaxpr(lambda x, k: layers.conv_auto(
        x, k, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=groups))(x, k)
    return str(jaxpr).count("conv_general_dilated")
  assert jax.default_backend() == "cpu"
  assert [conv_ops(*c) for c in cases] == [0, 0, 0]
  monkeypatch.setattr(jax, "default_backend", lambda: platform)
  assert [conv_ops(*c) for c in cases] == [1, 1, 1]
  # A whole model: as many XLA convolutions as conv_impl="xla" has.
  kw = {"num_classes": 4, "width": 0.35}
  count = lambda impl: str(jax.make_jaxpr(lambda x: get_model(  # noqa: E731
      "mobilenet_v2", conv_impl=impl, **kw).init(jax.random.key(0), x))(
          jnp.zeros((1, 35, 35, 3)))).count("conv_general_dilated")
  assert count("auto") == count("xla") > 30


def test_vgg_initializers():
  """"he" keeps VGG-19 without BatchNorm near unit scale from the caffe inputs to the logits;
  Flax's LeCun-normal ("lecun", the default: the same parameters as without the option) halves
  the second moment at every ReLU."""
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(16, 32, 32, 3)), jnp.float32)
  out = {}
  for init in ("lecun", "he"):
    module = get_model("vgg19", num_classes=43, width=0.25, fc_features=512, initializer=init)
    variables = module.init(jax.random.key(0), x[:1])
    logits, state = module.apply(variables, x, mutable=["intermediates"])
    feats = state["intermediates"]["block5_conv4"][0]
    out[init] = (float(jnp.mean(feats ** 2)), float(jnp.std(logits)))
  default = get_model("vgg19", num_classes=43, width=0.25, fc_features=512)
  same = jax.tree.map(jnp.array_equal, default.init(jax.random.key(0), x[:1]),
                      get_model("vgg19", num_classes=43, width=0.25, fc_features=512,
                                initializer="lecun").init(jax.random.key(0), x[:1]))
  assert all(jax.tree.leaves(same))
  (lecun_feat, lecun_logit), (he_feat, he_logit) = out["lecun"], out["he"]
  # Measured: block5_conv4's mean square 0.20 (he) and 0.010 (lecun), logits' std 0.87 and 0.098.
  assert 0.05 < he_feat < 5 and 0.3 < he_logit < 3, out  # near unit scale
  assert lecun_feat < 0.1 * he_feat and lecun_logit < 0.2 * he_logit, out  # shrunk
  with pytest.raises(ValueError, match="unknown initializer 'glorot'"):
    get_model("vgg19", num_classes=10, initializer="glorot")


def _grads_and_loop_hlo(conv, x, k, pad):
  """The gradients of ``sum(tanh(conv(x, k)))`` and the compiled HLO of three gradient steps in
  a ``fori_loop``, with that HLO's convolution lines."""
  dn = ("NHWC", "HWIO", "NHWC")

  def loss(x, k):
    return jnp.sum(jnp.tanh(conv(x, k, (1, 1), pad, dimension_numbers=dn)))
  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, k)
  step = jax.grad(lambda x: loss(x, k))
  fn = jax.jit(lambda x: jax.lax.fori_loop(0, 3, lambda i, x: x + 1e-3 * step(x), x))
  hlo = fn.lower(x).compile().as_text()
  return grads, [line for line in hlo.splitlines() if " convolution(" in line], hlo


@pytest.mark.parametrize("kh,pad", [(3, "SAME"), (3, "VALID"), (5, ((2, 0), (1, 3))),
                                    (2, ((1, 0), (0, 1)))])
def test_conv_auto_gradients_in_loops_are_xla_fast_path_convolutions(kh, pad):
  # conv_auto's XLA convolutions (stride 1) carry a custom VJP whose input gradient is a forward
  # convolution of the flipped kernel: same values and gradients as lax's, and inside a loop body
  # XLA:CPU keeps it canonical (kernel "io"), whereas JAX's own transpose ("oi") stays a naive
  # loop nest there (several times slower; docs/benchmarks.md).
  from percadv_jax.models import layers
  rng = np.random.default_rng(kh)
  x = jnp.asarray(rng.normal(size=(2, 9, 8, 6)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(kh, kh, 6, 5)), jnp.float32)
  got, convs, _ = _grads_and_loop_hlo(layers.conv_auto, x, k, pad)
  want, lax_convs, _ = _grads_and_loop_hlo(jax.lax.conv_general_dilated, x, k, pad)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  # The forward convolution and the input gradient's.
  assert len(convs) == len(lax_convs) == 2, (convs, lax_convs)
  assert not any("_01oi->" in line for line in convs)
  assert any("_01oi->" in line for line in lax_convs), \
      "XLA now canonicalises transposed convolutions in loops: the custom VJP may be dropped"


@pytest.mark.parametrize("cin,cout,kh,pad,groups", [(3, 16, 3, ((1, 1), (1, 1)), 2),
                                                    (16, 16, 3, "SAME", 2),
                                                    (12, 9, 5, ((2, 2), (1, 1)), 2),
                                                    (16, 3, 3, ((0, 2), (1, 1)), 2),
                                                    (3, 8, 3, "SAME", 4),
                                                    (8, 5, 2, ((0, 1), (1, 1)), 4)])
def test_conv_auto_runs_few_channel_convolutions_on_column_groups(cin, cout, kh, pad, groups):
  # XLA:CPU hands a convolution to YNNPACK only above 16 channels; conv_auto folds groups of 2 or
  # 4 columns into the channels of width-3 convolutions with 5-16 channels, so both the forward
  # convolution and the input gradient's run there (docs/benchmarks.md), inside loops too, with
  # lax's values and gradients.
  from percadv_jax.models import layers
  assert layers._column_group_size(cin, cout, 8) == groups
  assert layers._column_group_size(cin, cout, 6) == (2 if groups == 2 else 1)  # must divide
  assert layers._column_group_size(cin, 17, 8) == layers._column_group_size(4, 4, 8) == 1
  rng = np.random.default_rng(cin + cout)
  x = jnp.asarray(rng.normal(size=(2, 9, 8, cin)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(kh, 3, cin, cout)) / np.sqrt(3 * kh * cin), jnp.float32)
  got, convs, hlo = _grads_and_loop_hlo(layers.conv_auto, x, k, pad)
  want, _, lax_hlo = _grads_and_loop_hlo(jax.lax.conv_general_dilated, x, k, pad)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.max(jnp.abs(b))), rtol=0)
  assert len(convs) == 2 and not any("_01oi->" in line for line in convs), convs
  assert hlo.count("ynn_fusion") >= 2 * 2, "the two convolutions are not YNNPACK fusions"
  assert "ynn_fusion" not in lax_hlo, \
      "XLA:CPU now runs few-channel convolutions on YNNPACK: the column groups may be dropped"
