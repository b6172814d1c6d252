"""Model-level class activation maps: one jitted forward + backward pass per batch.

Works with any Flax linen module whose feature points are marked with
:func:`percadv_jax.models.common.tap` (all models of :mod:`percadv_jax.models`). A tap adds a zero
"perturbation" to its activation when the ``"perturbations"`` collection is passed to ``apply``;
the gradient w.r.t. that perturbation is the gradient w.r.t. the activation. So a map costs

  one forward pass (logits + the layer's activation, via ``jax.vjp``) and one backward pass
  from the target logits down to the chosen layer only (nothing below it, no parameter grads).

Layer names are the tap names, ``"/"``-joined with the names of enclosing submodules when a tap
sits inside one (a unique last component is accepted too). The default layer is the module's
``cam_layer`` attribute; the default target is the predicted class.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import checks, compiler
from percadv_jax.cam import core

PyTree = Any


def _flatten_names(tree: Mapping) -> dict[str, Any]:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")
  return dict(flat)


def _spec(tree: PyTree):
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, tuple(jax.ShapeDtypeStruct(np.shape(l), jnp.result_type(l)) for l in leaves)


# Collections that are not model state: the taps' zero perturbations and sown values.
NOT_STATE = ("perturbations", "intermediates")


@functools.lru_cache(maxsize=64)
def _init_shapes(module, x_spec, kwargs_items) -> dict[str, tuple[int, ...]]:
  """``{"collection/.../leaf": shape}`` of ``module.init`` on inputs like ``x_spec`` (traced by
  ``jax.eval_shape``: nothing is computed), model state only (``NOT_STATE`` left out)."""
  init = functools.partial(module.init, **dict(kwargs_items))
  shapes = jax.eval_shape(init, jax.random.key(0), x_spec)
  flat = _flatten_names({c: t for c, t in flax.core.unfreeze(shapes).items()
                         if c not in NOT_STATE})
  return {k: tuple(s.shape) for k, s in flat.items()}


def _check_variables(module, variables: PyTree, x_spec, kwargs: dict) -> None:
  """Raises unless ``variables`` hold exactly the model-state leaves and shapes of
  ``module.init`` on inputs like ``x_spec`` (extra collections such as ``NOT_STATE`` aside)."""
  name = type(module).__name__
  if not isinstance(variables, Mapping):
    raise TypeError(f"variables must be a dict of collections ({{'params': ..., "
                    f"'batch_stats': ...}}, as {name}.init returns), got "
                    f"{type(variables).__name__}")
  init_spec = jax.ShapeDtypeStruct((1,) + tuple(x_spec.shape[1:]), x_spec.dtype)
  want = _init_shapes(module, init_spec, tuple(sorted(kwargs.items())))
  collections = sorted({k.split("/")[0] for k in want})
  for c in collections:
    if c not in variables:
      hint = (f"; pass the whole variables dict ({{{c!r}: ...}}), not variables[{c!r}]"
              if any(k.split("/")[1] in variables for k in want if k.startswith(c + "/"))
              else "")
      raise ValueError(f"variables lack the collection {c!r} that {name} has (variables has "
                       f"{sorted(variables)}){hint}")
  have = _flatten_names({c: variables[c] for c in collections})
  where = f"on inputs [N, {', '.join(str(d) for d in x_spec.shape[1:])}]"
  for path, shape in want.items():
    if path not in have:
      raise ValueError(f"variables lack {path} (shape {shape}) that {name} has {where}: "
                       "variables of another model?")
    got = tuple(np.shape(have[path]))
    if got != shape:
      raise ValueError(f"variables do not fit {name} {where}: {path} has shape {got}, the "
                       f"module expects {shape} (variables of another head, width or model, or "
                       "images of another channel count?)")
  for path in have:
    if path not in want:
      raise ValueError(f"variables hold {path} (shape {tuple(np.shape(have[path]))}), which "
                       f"{name} does not have {where}: variables of another model?")


def check_model_arguments(module, variables: PyTree, x: Any, *,
                          model_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Checks the ``(module, variables, x, model_kwargs)`` of a model-level entry point, before
  anything of the model is run: every public function of :mod:`percadv_jax.cam` that takes a
  model calls it first.

  Args:
    module: a ``flax.linen.Module`` instance.
    variables: its variables, a dict of collections (``params``, ``batch_stats``) whose leaves
      have the shapes ``module.init`` gives them for inputs like ``x`` (arrays or
      ``jax.ShapeDtypeStruct``; collections of ``NOT_STATE`` and others that ``init`` does not
      make are ignored). Only shapes are compared, with ``jax.eval_shape(module.init, ...)``
      (traced once per module and input shape, nothing computed).
    x: float ``[N, H, W, C]`` images in [0, 1]: values are checked when ``x`` is a NumPy or
      concrete JAX array, shape and dtype only for a tracer or a ``jax.ShapeDtypeStruct``.
    model_kwargs: keyword arguments of ``module.apply`` (a dict or None: ``{"train": False}``).
  Returns:
    the keyword arguments of ``module.apply``.
  Raises:
    TypeError: ``module`` is not a Flax module instance (a function, or the class itself),
      ``variables`` not a dict, ``model_kwargs`` not a dict.
    ValueError: bad images (rank, dtype, NaN/inf, range); ``variables`` lacking a collection or
      a leaf, holding a leaf the module does not have, or of another shape (the first such
      path and both shapes are named).
  """
  if not isinstance(module, flax.linen.Module):
    what = (f"the class {module.__name__} (construct it: {module.__name__}(...))"
            if isinstance(module, type) else repr(module))
    raise TypeError(f"module must be a flax.linen.Module instance, got {what}")
  if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
    raise TypeError("model_kwargs must be a dict of keyword arguments of module.apply or None, "
                    f"got {type(model_kwargs).__name__}")
  values = isinstance(x, np.ndarray) or (isinstance(x, jax.Array) and checks.is_concrete(x))
  checks.check_images(x, "x", channels=None, check_range=values)
  kwargs = _kwargs(model_kwargs)
  _check_variables(module, variables, jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)),
                   kwargs)
  return kwargs


def _check_target(target: Any, n: int, num_classes: int) -> jax.Array:
  """``target`` (an int, or int ``[n]`` labels; a tracer is checked for shape and dtype) as
  int32 ``[n]`` in ``[0, num_classes)``; raises TypeError / ValueError naming ``target``."""
  expected = (f"target must be a class index (an int) or integer class labels (int [{n}]) in "
              f"[0, {num_classes})")
  if isinstance(target, (bool, np.bool_)):
    raise ValueError(f"{expected}, got {target!r}")
  if isinstance(target, (int, np.integer)):
    target = np.full((n,), int(target), np.int64)
  elif isinstance(target, (float, np.floating)):
    raise ValueError(f"{expected}, got the float {target!r}")
  elif isinstance(target, (list, tuple)):
    target = np.asarray(target)
  elif not hasattr(target, "dtype") or not hasattr(target, "shape"):
    raise TypeError(f"{expected}, got {target!r} ({type(target).__name__})")
  dtype = np.dtype(target.dtype)
  if dtype == np.bool_ or jnp.issubdtype(dtype, jnp.inexact):  # floats (bfloat16 too), complex
    raise ValueError(f"{expected}, got dtype {dtype}")
  if dtype.kind not in "iu":
    raise TypeError(f"{expected}, got {target!r} (dtype {dtype})")
  if np.ndim(target) == 0:
    target = (jnp.broadcast_to(target, (n,)) if not checks.is_concrete(target)
              else np.full((n,), np.asarray(target).item(), np.int64))
  checks.check_labels(target, n, num_classes, name="target")
  return jnp.asarray(target, jnp.int32)


@functools.lru_cache(maxsize=64)
def _model_info(module, var_treedef, var_leaves, x_spec, kwargs_items):
  """(tap shapes {path: ShapeDtypeStruct}, logits shape) of ``module`` for inputs like ``x_spec``."""
  variables = jax.tree.unflatten(var_treedef, var_leaves)
  kwargs = dict(kwargs_items)

  order: list[str] = []

  def f(v, x):
    logits, state = module.apply(v, x, mutable=["perturbations"], **kwargs)
    order.extend(_flatten_names(state.get("perturbations", {})))  # the model's call order
    return logits, state

  logits, state = jax.eval_shape(f, variables, x_spec)  # (eval_shape's outputs sort dict keys)
  perts = _flatten_names(state.get("perturbations", {}))
  return {k: perts[k] for k in order}, logits.shape


def model_info(module, variables: PyTree, x: jax.Array, *,
               model_kwargs: Mapping[str, Any] | None = None) -> tuple[dict, tuple]:
  """The model's taps and output shape for inputs like ``x``, without running the model.

  Args:
    module: a Flax module whose feature points are marked with ``models.common.tap``.
    variables: its variables.
    x: ``[N,H,W,C]`` inputs (only the shape and dtype are used).
    model_kwargs: keyword arguments of ``module.apply`` (default ``{"train": False}``).

  Returns:
    ``({tap_name: ShapeDtypeStruct}, logits_shape)``: each tap's shape (``[N,h,w,K]`` for
    convolutional features) and dtype, in the model's order, and the ``[N, num_classes]``
    logits shape.
  Raises:
    TypeError, ValueError: bad arguments, as :func:`check_model_arguments`.
  """
  kwargs = check_model_arguments(module, variables, x, model_kwargs=model_kwargs)
  return _taps(module, variables, x, kwargs)


def _taps(module, variables: PyTree, x: Any, kwargs: dict[str, Any]) -> tuple[dict, tuple]:
  """:func:`model_info` of arguments already checked by :func:`check_model_arguments` (which
  returned ``kwargs``)."""
  treedef, leaves = _spec(variables)
  x_spec = jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x))
  return _model_info(module, treedef, leaves, x_spec, tuple(sorted(kwargs.items())))


def tap_names(module, variables: PyTree, x: jax.Array, *,
              model_kwargs: Mapping[str, Any] | None = None) -> list[str]:
  """All layer names usable as ``layer=`` (the module's taps), in the model's order.

  ``x`` is a ``[N,H,W,C]`` input (only its shape and dtype are used); ``model_kwargs`` as in
  ``model_info``. Raises TypeError / ValueError on bad arguments, as
  :func:`check_model_arguments`.
  """
  return list(model_info(module, variables, x, model_kwargs=model_kwargs)[0])


def _kwargs(model_kwargs):
  return {"train": False} if model_kwargs is None else dict(model_kwargs)


def resolve_layer(names: list[str], layer: str) -> str:
  """Maps a user's layer name (full path or unique last component) to a tap path of ``names``.

  Raises:
    TypeError: ``layer`` is not a str.
    ValueError: an unknown or ambiguous layer (the message lists the matches or the taps).
  """
  if not isinstance(layer, str):
    raise TypeError(f"layer must be a str (a tap name, one of {names}), got {layer!r} "
                    f"({type(layer).__name__})")
  if layer in names:
    return layer
  hits = [n for n in names if n.split("/")[-1] == layer or n.endswith("/" + layer)]
  if len(hits) == 1:
    return hits[0]
  if len(hits) > 1:
    raise ValueError(f"layer {layer!r} is ambiguous: it matches {hits}; give the full path")
  raise ValueError(f"unknown layer {layer!r}; available layers (taps): {names}")


def _set_path(tree: dict, path: str, value) -> dict:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")
  flat[path] = value
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def _get_path(tree, path: str):
  for part in path.split("/"):
    tree = tree[part]
  return tree


def _forward_backward(module, variables, x, target, *, layer, kwargs):
  """(activations [N,h,w,K], grads [N,h,w,K], logits [N,C], targets [N]) in one fwd + bwd."""
  perts_shapes = _model_info(module, *_spec(variables),
                             jax.ShapeDtypeStruct(x.shape, x.dtype),
                             tuple(sorted(kwargs.items())))[0]
  zeros = flax.traverse_util.unflatten_dict(
      {k: jnp.zeros(s.shape, s.dtype) for k, s in perts_shapes.items()}, sep="/")
  variables = {k: v for k, v in flax.core.unfreeze(variables).items() if k != "perturbations"}

  def f(p):
    perts = _set_path(zeros, layer, p)
    logits, state = module.apply({**variables, "perturbations": perts}, x,
                                 mutable=["intermediates"], **kwargs)
    return logits, _get_path(state["intermediates"], layer)

  p0 = jnp.zeros(perts_shapes[layer].shape, perts_shapes[layer].dtype)
  logits, vjp_fn, acts = jax.vjp(f, p0, has_aux=True)
  if target is None:
    target = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  onehot = jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype)
  (grads,) = vjp_fn(onehot)
  return acts, grads, logits, target


def _forward(module, variables, x, *, layer, kwargs):
  logits, state = module.apply(variables, x, mutable=["intermediates"], **kwargs)
  return logits, _get_path(state["intermediates"], layer)


def _score_cam_raw(module, variables, x, target, *, layer, kwargs, chunk):
  """Score-CAM raw map with forward passes only, ``chunk`` channels per image at a time."""
  variables = {k: v for k, v in flax.core.unfreeze(variables).items() if k != "perturbations"}
  logits, acts = _forward(module, variables, x, layer=layer, kwargs=kwargs)
  if target is None:
    target = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  n, h, w, k = acts.shape
  big_h, big_w = x.shape[1], x.shape[2]
  n_chunks = -(-k // chunk)
  a = jnp.pad(acts, ((0, 0), (0, 0), (0, 0), (0, n_chunks * chunk - k)))
  a = jnp.moveaxis(a.reshape(n, h, w, n_chunks, chunk), 3, 0)  # [chunks, N, h, w, chunk]

  def scores_of(a_c):
    up = core.resize_bilinear(a_c, (big_h, big_w), align_corners=True)  # [N, H, W, chunk]
    lo = jnp.min(up, axis=(1, 2), keepdims=True)
    hi = jnp.max(up, axis=(1, 2), keepdims=True)
    up = (up - lo) / (hi - lo + core.SCORE_EPS)
    xm = x[:, None] * jnp.moveaxis(up, 3, 1)[..., None]  # [N, chunk, H, W, C]
    out = module.apply(variables, xm.reshape((n * chunk,) + x.shape[1:]), **kwargs)
    out = out.reshape(n, chunk, -1)
    return jnp.take_along_axis(out, target[:, None, None], axis=-1)[..., 0]  # [N, chunk]

  scores = jax.lax.map(scores_of, a)  # [chunks, N, chunk]
  scores = jnp.moveaxis(scores, 0, 1).reshape(n, n_chunks * chunk)[:, :k]
  weights = core.score_cam_weights(scores)
  return core.weighted_sum(acts, weights), logits, target


@functools.partial(compiler.jit, static_argnames=("module", "method", "layer", "kwargs_items",
                                             "upsample", "chunk"))
def _cam_jit(variables, x, target, *, module, method, layer, kwargs_items, upsample, chunk):
  kwargs = dict(kwargs_items)
  if method == "score_cam":
    raw, logits, target = _score_cam_raw(module, variables, x, target, layer=layer,
                                         kwargs=kwargs, chunk=chunk)
  else:
    acts, grads, logits, target = _forward_backward(module, variables, x, target, layer=layer,
                                                    kwargs=kwargs)
    raw = core.GRADIENT_METHODS[method](acts.astype(jnp.float32), grads.astype(jnp.float32))
  maps = core.postprocess(raw, size=x.shape[1:3] if upsample else None)
  return maps, logits, target


def compute_cam(method: str, module, variables: PyTree, x: jax.Array, *,
                layer: str | None = None, target: int | jax.Array | None = None,
                upsample: bool = True, score_chunk: int = 16,
                model_kwargs: Mapping[str, Any] | None = None,
                return_aux: bool = False):
  """Class activation maps of ``module`` for a batch, in one jitted call.

  Args:
    method: one of ``core.METHODS``: "cam", "grad_cam", "grad_cam_pp", "xgrad_cam",
      "layer_cam", "hires_cam", "score_cam".
    module: a Flax linen module with taps; ``variables`` its variables (params, batch_stats).
    x: float32 ``[N, H, W, C]`` images in [0, 1].
    layer: tap name; default ``module.cam_layer``.
    target: class per image, an int (all images) or int ``[N]``; default: the predicted class.
    upsample: resize to the input's ``H, W`` (bilinear, half-pixel); else keep the layer's size.
    score_chunk: Score-CAM channels per forward pass per image (forward batch ``N * chunk``).
    model_kwargs: keyword arguments of ``module.apply``; default ``{"train": False}``.
    return_aux: also return ``{"logits": [N, classes], "target": int32 [N]}``.
  Returns:
    float32 ``[N, H, W]`` maps in [0, 1] (``[N, h, w]`` without upsampling).
  Raises:
    TypeError: ``module`` not a Flax module instance, ``variables`` or ``model_kwargs`` not a
      dict, ``layer`` not a str, ``target`` not a number or an array (e.g. a str).
    ValueError: unknown method or layer (listing the available ones); ``target`` a float, a
      bool, of another length than the batch or outside ``[0, num_classes)``; bad images;
      ``variables`` of another model, head or width (the first mismatching path and both
      shapes are named; see :func:`check_model_arguments`).
  """
  checks.check_choice(method, "method", core.METHODS)
  kwargs = check_model_arguments(module, variables, x, model_kwargs=model_kwargs)
  shapes, logits_shape = _taps(module, variables, x, kwargs)
  names = list(shapes)
  if not names:
    raise ValueError(f"{type(module).__name__} has no taps (percadv_jax.models.common.tap); "
                     "CAMs need a named feature map")
  if layer is None:
    layer = getattr(module, "cam_layer", None)
    if layer is None:
      raise ValueError(f"{type(module).__name__} has no cam_layer attribute; pass layer= "
                       f"(available layers: {names})")
  path = resolve_layer(names, layer)
  if len(shapes[path].shape) != 4:
    raise ValueError(f"layer {path!r} has shape {shapes[path].shape}; CAMs need an NHWC "
                     f"feature map [N, h, w, K]")
  if len(logits_shape) != 2:
    raise ValueError(f"the model must return logits [N, classes], got shape {logits_shape}")
  n, num_classes = logits_shape
  if target is not None:
    target = _check_target(target, n, num_classes)
  score_chunk = checks.check_int(score_chunk, "score_chunk", minimum=1)
  upsample = checks.check_bool(upsample, "upsample")
  return_aux = checks.check_bool(return_aux, "return_aux")
  maps, logits, tgt = _cam_jit(variables, x, target, module=module, method=method, layer=path,
                               kwargs_items=tuple(sorted(kwargs.items())),
                               upsample=bool(upsample), chunk=int(score_chunk))
  if return_aux:
    return maps, {"logits": logits, "target": tgt}
  return maps


def _method(name: str, doc: str):
  def fn(module, variables: PyTree, x: jax.Array, *, layer: str | None = None,
         target: int | jax.Array | None = None, **kw):
    return compute_cam(name, module, variables, x, layer=layer, target=target, **kw)
  fn.__name__ = fn.__qualname__ = name
  fn.__doc__ = (f"{doc}\n\n  ``{name}(module, variables, x, *, layer=None, target=None, **kw)`` "
                f"-> float32 ``[N, H, W]`` in [0, 1]; arguments and the errors raised (TypeError, "
                f"ValueError) as :func:`compute_cam`.")
  return fn


cam = _method("cam", "CAM (Zhou et al.): channel weights = the GAP + linear head's weights, "
              "read off the gradient (sum over space); for other heads, h*w x Grad-CAM.")
grad_cam = _method("grad_cam", "Grad-CAM (Selvaraju et al.).")
grad_cam_pp = _method("grad_cam_pp", "Grad-CAM++ (Chattopadhay et al.), closed-form alphas.")
xgrad_cam = _method("xgrad_cam", "XGradCAM (Fu et al.).")
layer_cam = _method("layer_cam", "LayerCAM (Jiang et al.).")
hires_cam = _method("hires_cam", "HiResCAM (Draelos & Carin).")
score_cam = _method("score_cam", "Score-CAM (Wang et al.): forward passes only, in chunks of "
                    "``score_chunk`` channels.")
