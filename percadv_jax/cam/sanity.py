"""Sanity checks of saliency maps and of agreement claims: model randomisation, smooth random
maps, deletion curves.

An agreement between a map and a CAM means something only where it beats what an uninformative
reference gives. Three references:

- **Cascading model randomisation** (Adebayo et al., "Sanity checks for saliency maps", 2018):
  re-initialise the model's layers one by one from the top (logits) down and recompute the CAM.
  A map that explains the decision changes as the learned weights go; an agreement with it that
  survives the randomisation is about the image (edges, centre), not the decision.
  :func:`layer_order` lists the layers (the modules that own variables) in the model's call
  order, :func:`layers_after` the ones above a tap, :func:`randomize_layers` /
  :func:`randomize_top_layers` swap their variables for fresh ones (e.g.
  ``percadv_jax.models.random_variables`` or ``module.init``).
- **Smooth random maps**: Gaussian-smoothed white noise (:func:`smooth_random_maps`), its
  smoothness matched to the CAMs' spatial autocorrelation (:func:`spatial_autocorrelation`,
  :func:`matched_sigma`): a reference with the CAM's blob size and no content.
- **Deletion curves** (the deletion metric of Petsiuk, Das & Saenko, RISE, 2018): remove the
  saliency map's top pixels in steps and record the true class's logit and probability
  (:func:`deletion_curve`; a constant map gives a uniformly random order). A faithful map makes
  the score fall faster than a random order: a smaller area under the curve (:func:`curve_auc`).

Maps are float ``[N, H, W]``, images float ``[N, H, W, C]`` in [0, 1], labels int ``[N]``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import checks
from percadv_jax.cam import metrics, model

PyTree = Any
BASELINES = ("mean", "blur")


# ----------------------------------------------------------------------------- model randomisation

def _walk(tree: Mapping, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
  """Leaf paths of a sown-values dict in insertion order; ``__call__`` entries are leaves."""
  out = []
  for k, v in tree.items():
    if isinstance(v, Mapping) and k != "__call__":
      out += _walk(v, prefix + (k,))
    else:
      out.append(prefix + (k,))
  return out


@functools.lru_cache(maxsize=64)
def _call_order(module, var_treedef, var_leaves, x_spec, kwargs_items):
  """Module calls and sown taps in the order the model makes them: ``(("call" | "tap", path))``."""
  variables = jax.tree.unflatten(var_treedef, var_leaves)
  paths: list[tuple[str, ...]] = []

  def f(v, x):
    _, state = module.apply(v, x, capture_intermediates=True, mutable=["intermediates"],
                            **dict(kwargs_items))
    paths.extend(_walk(state.get("intermediates", {})))  # dicts keep the order of first writes
    return 0

  jax.eval_shape(f, variables, x_spec)
  out = []
  for p in paths:
    if p[-1] == "__call__":
      if len(p) > 1:  # the root module's own call is not a layer
        out.append(("call", "/".join(p[:-1])))
    else:
      out.append(("tap", "/".join(p)))
  return tuple(out)


def _state(variables: PyTree) -> dict:
  return {k: v for k, v in flax.core.unfreeze(variables).items() if k not in model.NOT_STATE}


def _owners(variables: PyTree) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
  """``{module path: [(collection, leaf path)]}`` of the modules that own variables directly."""
  out: dict[str, list] = {}
  for col, tree in _state(variables).items():
    if not isinstance(tree, Mapping):
      continue
    for path in flax.traverse_util.flatten_dict(tree):
      out.setdefault("/".join(path[:-1]), []).append((col, path))
  return out


def _order(module, variables, x, kwargs):
  state = _state(variables)
  treedef, leaves = model._spec(state)
  x_spec = jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x))
  return _call_order(module, treedef, leaves, x_spec, tuple(sorted(kwargs.items())))


def _layers_in_order(entries, owners) -> list[str]:
  seen, out = set(), []
  for kind, path in entries:
    if kind == "call" and path in owners and path not in seen:
      seen.add(path)
      out.append(path)
  missing = sorted(set(owners) - seen)
  if missing:
    raise ValueError(f"cannot order the layers {missing}: their modules are not called through "
                     "__call__, so their place in the model is unknown")
  return out


def layer_order(module, variables: PyTree, x: jax.Array, *,
                model_kwargs: Mapping[str, Any] | None = None) -> list[str]:
  """The model's layers, input to output: the ``"/"``-joined paths of the modules that own
  variables (every collection but the taps'), in the order the model first calls them.

  Args:
    module: a Flax linen module; ``variables`` its variables.
    x: ``[N, H, W, C]`` inputs (only the shape and dtype are used; the model is traced, not run).
    model_kwargs: keyword arguments of ``module.apply`` (default ``{"train": False}``).
  Returns:
    e.g. ``["Conv1", "bn_Conv1", ..., "Conv_1_bn", "predictions"]`` for MobileNetV2.
  Raises:
    TypeError, ValueError: bad arguments, as :func:`percadv_jax.cam.model.check_model_arguments`
      (a module that is not a Flax module, variables of another model, bad images).
    ValueError: a module owns variables but is never called through ``__call__``.
  """
  kwargs = model.check_model_arguments(module, variables, x, model_kwargs=model_kwargs)
  return _layers_in_order(_order(module, variables, x, kwargs), _owners(variables))


def layers_after(module, variables: PyTree, x: jax.Array, layer: str, *,
                 model_kwargs: Mapping[str, Any] | None = None) -> list[str]:
  """The layers (as :func:`layer_order`) first called after the tap ``layer``: randomising them
  leaves that tap's activations unchanged and changes only what the model does with them.
  ``x`` is a float32 [N,H,W,C] batch in [0, 1] (its shape is all that is used).

  ``layer`` is a tap name as in :func:`percadv_jax.cam.compute_cam` (full path or unique last
  component); the other arguments as in :func:`layer_order`.

  Raises:
    TypeError: ``layer`` not a str; bad arguments as :func:`layer_order`.
    ValueError: an unknown layer (the message lists the taps); bad arguments as
      :func:`layer_order`.
  """
  kwargs = model.check_model_arguments(module, variables, x, model_kwargs=model_kwargs)
  entries = _order(module, variables, x, kwargs)
  taps = list(model._taps(module, _state(variables), x, kwargs)[0])
  path = model.resolve_layer(taps, layer)
  where = next(i for i, (kind, p) in enumerate(entries) if kind == "tap" and p == path)
  order = _layers_in_order(entries, _owners(variables))
  first = {}
  for i, (kind, p) in enumerate(entries):
    if kind == "call":
      first.setdefault(p, i)
  return [p for p in order if first[p] > where]


def randomize_layers(variables: PyTree, fresh_variables: PyTree,
                     layers: Sequence[str]) -> dict:
  """``variables`` with every variable of ``layers`` (all collections: weights and BatchNorm
  statistics) taken from ``fresh_variables``; every other leaf is the same object as before.

  Args:
    variables: the model's variables (a dict of collections, e.g. ``params``, ``batch_stats``).
    fresh_variables: variables of the same model from its initialisation (same tree, shapes
      and dtypes), e.g. ``percadv_jax.models.random_variables(module, x, seed=s)``.
    layers: module paths, as :func:`layer_order` returns them.
  Returns:
    a dict of collections with the structure of ``variables`` (less the taps' collections).
  Raises:
    ValueError: a layer that owns no variables, or fresh variables of another shape or dtype.
  """
  owners = _owners(variables)
  unknown = [l for l in layers if l not in owners]
  if unknown:
    raise ValueError(f"layers {unknown} own no variables; layers: {list(owners)}")
  state = _state(variables)
  fresh = _state(fresh_variables)
  flat = {c: flax.traverse_util.flatten_dict(t) for c, t in state.items()
          if isinstance(t, Mapping)}
  for layer in layers:
    for col, path in owners[layer]:
      try:
        new = flax.traverse_util.flatten_dict(fresh[col])[path]
      except KeyError:
        raise ValueError(f"fresh_variables lack {col}/{'/'.join(path)}") from None
      old = flat[col][path]
      if np.shape(new) != np.shape(old) or jnp.result_type(new) != jnp.result_type(old):
        raise ValueError(f"fresh variable {col}/{'/'.join(path)} is {np.shape(new)} "
                         f"{jnp.result_type(new)}, the model's is {np.shape(old)} "
                         f"{jnp.result_type(old)}")
      flat[col][path] = new
  return {c: (flax.traverse_util.unflatten_dict(flat[c]) if c in flat else t)
          for c, t in state.items()}


def randomize_top_layers(variables: PyTree, fresh_variables: PyTree, order: Sequence[str],
                         num_layers: int) -> dict:
  """One stage of the cascade: the top ``num_layers`` of ``order`` (input to output, e.g.
  :func:`layer_order`) re-initialised from ``fresh_variables`` (see :func:`randomize_layers`);
  0 returns the model unchanged, ``len(order)`` re-initialises every layer."""
  num_layers = checks.check_int(num_layers, "num_layers", minimum=0, maximum=len(order))
  return randomize_layers(variables, fresh_variables, list(order)[len(order) - num_layers:])


# ----------------------------------------------------------------------------- smooth random maps

def spatial_autocorrelation(maps: jax.Array, *, lag: int) -> jax.Array:
  """Per map, the mean of the Pearson correlations between the map and itself shifted by
  ``lag`` pixels along H and along W: float32 ``[N]`` in [-1, 1] (NaN for a constant map).

  ``maps`` is float ``[N, H, W]``; ``lag`` an int in [1, min(H, W) - 1].
  """
  m = metrics._as_maps(maps, "maps")
  lag = checks.check_int(lag, "lag", minimum=1, maximum=min(m.shape[1:]) - 1)
  rows = metrics.pearson(m[:, lag:, :], m[:, :-lag, :])
  cols = metrics.pearson(m[:, :, lag:], m[:, :, :-lag])
  return (rows + cols) / 2.0


def _smooth(key: jax.Array, shape: tuple[int, int, int], sigma: jax.Array) -> jax.Array:
  n, h, w = shape
  ch, cw = 2 * h, 2 * w  # a periodic canvas twice the map: the cut-out field is stationary
  noise = jax.random.normal(key, (n, ch, cw), jnp.float32)
  fy = jnp.fft.fftfreq(ch)[:, None]
  fx = jnp.fft.rfftfreq(cw)[None, :]
  gain = jnp.exp(-2.0 * (jnp.pi * sigma) ** 2 * (fy * fy + fx * fx))
  field = jnp.fft.irfft2(jnp.fft.rfft2(noise) * gain, s=(ch, cw))
  field = field[:, h // 2:h // 2 + h, w // 2:w // 2 + w]
  lo = jnp.min(field, axis=(1, 2), keepdims=True)
  hi = jnp.max(field, axis=(1, 2), keepdims=True)
  return (field - lo) / (hi - lo + 1e-12)


def smooth_random_maps(key: jax.Array, shape: Sequence[int], *, sigma: float) -> jax.Array:
  """Random maps of a given smoothness: white noise filtered by a Gaussian of standard deviation
  ``sigma`` pixels (``0``: white noise), each min-max scaled to [0, 1].

  The noise lives on a periodic canvas of twice the map's height and width, filtered in the
  Fourier domain, and the centre is cut out, so the field is stationary (no edge effects).

  Args:
    key: PRNG key.
    shape: ``(N, H, W)``.
    sigma: float >= 0 (may be traced).
  Returns:
    float32 ``[N, H, W]`` in [0, 1].
  """
  shape = tuple(int(s) for s in shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f"shape must be (N, H, W) of positive ints, got {shape}")
  if checks.is_concrete(sigma):
    checks.check_float(sigma, "sigma", minimum=0.0)
  return _smooth(key, shape, jnp.asarray(sigma, jnp.float32))


@functools.partial(jax.jit, static_argnames=("shape", "lag"))
def _noise_autocorrelation(key, sigma, *, shape, lag):
  return jnp.nanmean(spatial_autocorrelation(_smooth(key, shape, sigma), lag=lag))


def matched_sigma(maps: jax.Array, *, lag: int, key: jax.Array | None = None,
                  samples: int = 32, iters: int = 30) -> float:
  """The ``sigma`` of :func:`smooth_random_maps` whose maps have, on average, the same
  :func:`spatial_autocorrelation` at ``lag`` as ``maps`` (float ``[N, H, W]``).

  Found by bisection on [0, max(H, W)] with ``samples`` noise maps of the same size (the same
  noise at every step, so the autocorrelation grows with sigma). A target below white noise's
  gives 0, one above the widest filter's gives max(H, W).

  Raises:
    ValueError: ``maps`` whose autocorrelation is undefined (all constant).
  """
  m = metrics._as_maps(maps, "maps")
  target = float(jnp.nanmean(spatial_autocorrelation(m, lag=lag)))
  if not np.isfinite(target):
    raise ValueError("maps are constant: their autocorrelation is undefined")
  key = jax.random.key(0) if key is None else key
  shape = (int(samples),) + tuple(m.shape[1:])
  f = lambda s: float(_noise_autocorrelation(key, jnp.float32(s), shape=shape, lag=int(lag)))
  lo, hi = 0.0, float(max(m.shape[1:]))
  if target <= f(lo):
    return lo
  if target >= f(hi):
    return hi
  for _ in range(int(iters)):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
  return (lo + hi) / 2


# ----------------------------------------------------------------------------- deletion curves

def _blur(x: jax.Array, sigma: float) -> jax.Array:
  """Gaussian blur of ``[N, H, W, C]`` images (reflected edges), separable."""
  r = max(1, int(np.ceil(3 * sigma)))
  t = np.arange(-r, r + 1)
  k = np.exp(-t * t / (2 * sigma * sigma))
  k = (k / k.sum()).astype(np.float32)
  h, w = x.shape[1], x.shape[2]
  xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="symmetric")
  xp = sum(float(k[i]) * xp[:, i:i + h] for i in range(2 * r + 1))
  return sum(float(k[i]) * xp[:, :, i:i + w] for i in range(2 * r + 1))


def deletion_curve(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, y: jax.Array,
                   saliency: jax.Array, *, steps: int = 10, baseline: str = "mean",
                   blur_sigma: float | None = None,
                   key: jax.Array | None = None) -> dict[str, jax.Array]:
  """The true class's score as the saliency map's top pixels are removed, in ``steps`` steps.

  At step ``t`` (0 .. ``steps``) the ``round(t / steps * H W)`` pixels ranked highest by
  ``saliency`` (all channels) are replaced by the baseline image and the model is run once.

  Args:
    logits_fn: ``x [N, H, W, C] -> logits [N, K]`` (jittable).
    x: float ``[N, H, W, C]`` images in [0, 1]; ``y``: int ``[N]`` classes whose score is read.
    saliency: float ``[N, H, W]``; pixels are removed from the largest value down. Ties are
      broken at random with ``key`` (so a constant map gives a uniformly random order), or in
      pixel order when ``key`` is None.
    steps: int >= 1.
    baseline: what replaces a removed pixel: "mean" (the image's per-channel mean) or "blur"
      (the image blurred by a Gaussian of ``blur_sigma`` pixels; default ``min(H, W) / 16``).
  Returns:
    ``{"fraction": float32 [steps + 1] (t / steps), "logit": float32 [N, steps + 1],
    "prob": float32 [N, steps + 1] (softmax probability)}``; step 0 is the unchanged image.
  Raises:
    ValueError: bad shapes, labels, steps, baseline or blur_sigma.
  """
  checks.check_images(x, "x", channels=None)
  n, h, w = np.shape(x)[:3]
  s = metrics._as_maps(saliency, "saliency")
  if s.shape != (n, h, w):
    raise ValueError(f"saliency must be [N, H, W] = {(n, h, w)}, got {s.shape}")
  checks.check_labels(y, n, name="y")
  steps = checks.check_int(steps, "steps", minimum=1)
  checks.check_choice(baseline, "baseline", BASELINES)
  x = jnp.asarray(x, jnp.float32)
  if baseline == "mean":
    base = jnp.broadcast_to(jnp.mean(x, axis=(1, 2), keepdims=True), x.shape)
  else:
    sigma = min(h, w) / 16 if blur_sigma is None else blur_sigma
    sigma = checks.check_float(sigma, "blur_sigma", minimum=0.0, min_inclusive=False)
    base = _blur(x, sigma)
  flat = s.reshape(n, -1)
  if key is None:
    order = jnp.argsort(-flat, axis=1, stable=True)
  else:
    u = jax.random.uniform(key, flat.shape)
    order = jnp.lexsort((u, -flat), axis=1)
  rank = jnp.zeros_like(order).at[jnp.arange(n)[:, None], order].set(
      jnp.broadcast_to(jnp.arange(h * w), order.shape))
  rank = rank.reshape(n, h, w, 1)
  counts = jnp.asarray(np.round(np.arange(steps + 1) / steps * h * w).astype(np.int32))
  y = jnp.asarray(y, jnp.int32)

  def score(count):
    logits = logits_fn(jnp.where(rank < count, base, x)).astype(jnp.float32)
    logit = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    prob = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), y[:, None], axis=1)[:, 0]
    return logit, prob

  logit, prob = jax.lax.map(score, counts)
  return {"fraction": jnp.arange(steps + 1, dtype=jnp.float32) / steps,
          "logit": logit.T, "prob": prob.T}


def curve_auc(values: jax.Array, *, fractions: jax.Array | None = None) -> jax.Array:
  """Area under curves sampled at ``fractions`` (default: evenly on [0, 1]), trapezoidal, along
  the last axis: ``[..., T] -> [...]`` (for a deletion curve on [0, 1]: its mean height)."""
  v = jnp.asarray(values, jnp.float32)
  if v.ndim < 1 or v.shape[-1] < 2:
    raise ValueError(f"values need at least 2 samples on the last axis, got shape {v.shape}")
  t = (jnp.linspace(0.0, 1.0, v.shape[-1]) if fractions is None
       else jnp.asarray(fractions, jnp.float32))
  if t.shape != v.shape[-1:]:
    raise ValueError(f"fractions {t.shape} must match the curves' last axis {v.shape[-1:]}")
  dt = jnp.diff(t)
  return jnp.sum((v[..., 1:] + v[..., :-1]) / 2.0 * dt, axis=-1)
