"""The attacks' shared core: input validation, keys, objective, steps, projections, loop unrolling.

Public so that other packages build attacks on it (``percadv_jax.perceptual.ssim_attack``).
"""

from __future__ import annotations

import functools
import weakref
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from percadv_jax import checks, compiler
from percadv_jax.attacks import losses

NORMS = ("linf", "l2")

# AutoAttack's number of target classes of APGD-T and FAB-T (standard version).
DEFAULT_TARGETS = 9

def jit_logits_fn(static_argnames: Sequence[str] = ()) -> Callable:
  """``compiler.jit`` for an attack core whose first argument is ``logits_fn``.

  A plain callable ``logits_fn`` is a static argument: compiled once per function object, with
  whatever it closes over baked in as constants. A ``jax.tree_util.Partial`` (e.g.
  ``Partial(apply, variables)`` with ``apply(variables, x) -> logits``) enters as its function
  (static) plus its array arguments (traced): models of one architecture then share one compile,
  and the weights are inputs of the executable rather than constants compiled into it.
  """
  def decorate(core: Callable) -> Callable:
    @functools.partial(compiler.jit, static_argnames=("fn_static",) + tuple(static_argnames))
    def jitted(fn_static, fn_args, *args, **kwargs):
      fn = fn_static if fn_args is None else jax.tree_util.tree_unflatten(fn_static, fn_args)
      return core(fn, *args, **kwargs)

    @functools.wraps(core)
    def call(logits_fn, *args, **kwargs):
      if isinstance(logits_fn, jax.tree_util.Partial):
        fn_args, fn_static = jax.tree_util.tree_flatten(logits_fn)
      else:
        fn_static, fn_args = logits_fn, None
      return jitted(fn_static, fn_args, *args, **kwargs)
    return call
  return decorate


@jit_logits_fn()
def correct(logits_fn, x: jax.Array, y: jax.Array) -> jax.Array:
  """bool [N]: ``logits_fn`` classifies ``x`` as ``y`` (jitted; see ``jit_logits_fn``)."""
  return jnp.argmax(logits_fn(x), axis=1) == y


def resolve_unroll(unroll: Any) -> int | bool:
  """A validated ``unroll`` of the attacks' step loops: True (fully unrolled) or an int >= 1.

  The default, 1, is a plain loop: on XLA:CPU it runs as fast as unrolled code (the models'
  ``conv_impl="auto"`` convolutions give XLA loop bodies it runs on its fast path,
  ``models.layers._conv_xla_loop_safe``) and compiles in a fraction of the time.
  """
  if isinstance(unroll, (bool, np.bool_)):
    return bool(unroll)
  if not isinstance(unroll, (int, np.integer)) or unroll < 1:
    raise ValueError(f"unroll must be a bool or an int >= 1, got {unroll!r}")
  return int(unroll)


def check_per_example(value: Any, name: str, n: int, *, allow_zero: bool) -> None:
  """``value`` must be a real scalar or float [n] (and, when concrete, >= 0 / > 0 and finite).

  Under ``jit`` (a traced value) only the shape and dtype are checked; the attack cores then
  clamp the value (``per_example_nonneg``) so that the guarantees still hold.
  """
  if isinstance(value, (list, tuple)):
    raise ValueError(f"{name} must be a number or an array of shape ({n},), got a "
                     f"{type(value).__name__}; pass np.asarray({name})")
  if isinstance(value, (bool, np.bool_)) or not hasattr(value, "dtype") and not isinstance(
      value, (int, float)):
    raise ValueError(f"{name} must be a number or an array of shape ({n},), got {value!r}")
  dtype = np.dtype(getattr(value, "dtype", np.float64))
  if dtype == np.bool_ or not (np.issubdtype(dtype, np.floating)
                               or np.issubdtype(dtype, np.integer)):
    raise ValueError(f"{name} must be real-valued, got dtype {dtype}")
  shape = tuple(getattr(value, "shape", ()))
  if shape not in ((), (n,)):
    raise ValueError(f"{name} must be a scalar or have shape ({n},) (one per example), "
                     f"got shape {shape}")
  checks.check_positive(value, name, allow_zero=allow_zero)


def per_example(value: Any, n: int) -> jax.Array:
  """A scalar or [n] value as float32 [n, 1, 1, 1] (broadcasts against NHWC images)."""
  return jnp.broadcast_to(jnp.asarray(value, jnp.float32), (n,)).reshape(n, 1, 1, 1)


def per_example_nonneg(value: Any, n: int) -> jax.Array:
  """``per_example`` with negative and NaN entries replaced by 0 (the traced-path clamp).

  Public entry points reject such values when they are concrete; under ``jit`` they cannot be
  inspected, so a radius or step below 0 (or NaN) acts as 0: no perturbation, never ``|value|``.
  """
  v = per_example(value, n)
  return jnp.where(v >= 0, v, 0.0)


def binary_mask(mask: jax.Array | None) -> jax.Array | None:
  """The attacks' reading of a mask: float32 1 where ``mask > 0.5`` (free), 0 elsewhere (fixed).

  Concrete masks are checked to hold only 0 and 1; a traced one cannot be, so a value such as
  0.5 (or NaN) counts as 0: ambiguous pixels are left unchanged, never perturbed.
  """
  if mask is None:
    return None
  return (jnp.asarray(mask) > 0.5).astype(jnp.float32)


def finite_or_zero(g: jax.Array) -> jax.Array:
  """``g`` with NaN and +-inf entries replaced by 0 (a non-finite gradient gives no step)."""
  return jnp.where(jnp.isfinite(g), g, jnp.zeros_like(g))


def validate(logits_fn, x, y, *, mask, norm, loss, targeted, key, need_key: bool,
             randomised: bool = False) -> None:
  """Shared argument checks of the attacks; raises ValueError with a clear message.

  ``randomised``: ``logits_fn`` is a randomised model ``logits_fn(x, keys [N])`` (see
  ``logits_shape``).
  """
  if not callable(logits_fn):
    raise ValueError(f"logits_fn must be callable, got {type(logits_fn).__name__}")
  checks.check_images(x, "x", channels=None, allow_empty=False)
  n = x.shape[0]
  checks.check_labels(y, n, None, "targets" if targeted else "y")
  checks.check_bool(targeted, "targeted")
  checks.check_choice(norm, "norm", NORMS)
  checks.check_choice(loss, "loss", losses.LOSSES)
  if mask is not None:
    checks.check_mask(mask, tuple(x.shape), "mask")
  if need_key and key is None:
    raise ValueError("a jax.random key is needed (random_start=True, restarts > 1 or a "
                     "randomised model): pass key=")
  if key is not None:
    key_shape(key, n)
  if checks.is_concrete(x) and checks.is_concrete(y):
    out_shape = logits_shape(logits_fn, tuple(x.shape), randomised=randomised)
    if len(out_shape) != 2 or out_shape[0] != n:
      raise ValueError(f"logits_fn must return logits of shape [N, num_classes] = [{n}, K], "
                       f"got {out_shape}")
    checks.check_labels(y, n, out_shape[1], "targets" if targeted else "y")


_SHAPES: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def logits_shape(logits_fn, x_shape: tuple[int, ...], *, randomised: bool = False
                 ) -> tuple[int, ...]:
  """Shape of ``logits_fn``'s output for float32 inputs of ``x_shape`` (traced once, cached).

  ``randomised``: ``logits_fn`` is a randomised model, ``logits_fn(x, keys)`` with one
  ``jax.random`` key per example (``keys`` typed [N]) that draws example i's randomness from
  ``keys[i]``.
  """
  try:
    cache = _SHAPES.setdefault(logits_fn, {})
  except TypeError:  # not weak-referenceable: no cache
    cache = {}
  if (x_shape, randomised) not in cache:
    args = [jax.ShapeDtypeStruct(x_shape, jnp.float32)]
    if randomised:
      args.append(jax.eval_shape(lambda: jax.random.split(jax.random.key(0), x_shape[0])))
    try:
      out = jax.eval_shape(logits_fn, *args)
    except (TypeError, ValueError) as e:  # e.g. 1-channel images for a 3-channel model
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise ValueError(f"logits_fn cannot take images of shape {x_shape} (does the model "
                       f"expect another size or number of channels?): {first}") from None
    cache[x_shape, randomised] = tuple(getattr(out, "shape", ()))
  return cache[x_shape, randomised]


def key_shape(key: Any, n: int) -> bool:
  """True for a batch of per-example keys ([n] typed or [n, 2] raw), False for one key."""
  shape = tuple(getattr(key, "shape", ()))
  dtype = getattr(key, "dtype", None)
  typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
  if not typed and (dtype is None or np.dtype(dtype) != np.uint32):
    raise ValueError("key must be a jax.random key (jax.random.key(seed) or PRNGKey(seed)), got "
                     f"{type(key).__name__} of dtype {dtype}")
  single, batch = ((), (n,)) if typed else ((2,), (n, 2))
  if shape == single:
    return False
  if shape == batch:
    return True
  raise ValueError(f"key must be one jax.random key or one per example (shape {batch}), got "
                   f"shape {shape} and dtype {getattr(key, 'dtype', None)}")


def example_keys(key: Any, n: int) -> jax.Array:
  """Per-example keys [n]: ``key`` itself if it is a batch of keys, else ``split(key, n)``.

  Per-example keys make an example's random start independent of the rest of the batch, so an
  attack vmapped over single examples (each with its own key) equals the batched call.
  """
  if key_shape(key, n):
    return key
  return jax.random.split(key, n)


def l2_norm(v: jax.Array) -> jax.Array:
  """Per-example Euclidean norm of [N, ...] as [N, 1, 1, 1]."""
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim)), keepdims=True))


def apply_mask(x_adv: jax.Array, x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """``x_adv`` where ``mask`` is 1, exactly ``x`` where it is 0."""
  if mask is None:
    return x_adv
  return jnp.where(mask > 0, x_adv, x)


def direction(g: jax.Array, norm: str, mask: jax.Array | None) -> jax.Array:
  """The steepest-ascent direction of the masked gradient: sign (linf) or g/||g||_2 (l2).

  Non-finite gradient entries (a model returning NaN or inf) count as 0, so they move nothing.
  """
  g = finite_or_zero(g)
  if mask is not None:
    g = jnp.where(mask > 0, g, 0.0)
  if norm == "linf":
    return jnp.sign(g)
  return g / jnp.maximum(l2_norm(g), 1e-12)


def project(x_adv: jax.Array, x: jax.Array, eps: jax.Array, norm: str,
            mask: jax.Array | None) -> jax.Array:
  """Projects onto the eps-ball around ``x`` (eps [N,1,1,1]), then the box [0,1], then the mask.

  The order keeps all three guarantees: clipping to [0,1] and zeroing masked coordinates only
  move each coordinate towards ``x``, which never increases the Linf or L2 distance. A non-finite
  coordinate of ``x_adv`` (from a NaN or inf step under ``jit``) is reset to ``x``.
  """
  x_adv = jnp.where(jnp.isfinite(x_adv), x_adv, x)
  if norm == "linf":
    x_adv = x + jnp.clip(x_adv - x, -eps, eps)
  else:
    d = x_adv - x
    x_adv = x + d * jnp.minimum(1.0, eps / jnp.maximum(l2_norm(d), 1e-12))
  return apply_mask(jnp.clip(x_adv, 0.0, 1.0), x, mask)


def random_start(keys: jax.Array, x: jax.Array, eps: jax.Array, norm: str,
                 mask: jax.Array | None) -> jax.Array:
  """A uniform sample of the (masked) eps-ball around ``x``, clipped to [0,1]; keys [N]."""
  shape = x.shape[1:]
  if norm == "linf":
    u = jax.vmap(lambda k: jax.random.uniform(k, shape, jnp.float32, -1.0, 1.0))(keys)
    d = eps * u
  else:
    # Uniform in the L2 ball of the free (mask == 1) coordinates: Gaussian direction, radius
    # eps * U^(1/dim).
    k1 = jax.vmap(lambda k: jax.random.split(k))(keys)
    z = jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(k1[:, 0])
    if mask is not None:
      z = jnp.where(mask > 0, z, 0.0)
      dim = jnp.sum(jnp.broadcast_to(mask > 0, x.shape), axis=(1, 2, 3), keepdims=True)
    else:
      dim = jnp.full((x.shape[0], 1, 1, 1), float(np.prod(shape)))
    u = jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(k1[:, 1]).reshape(-1, 1, 1, 1)
    r = eps * u ** (1.0 / jnp.maximum(dim, 1.0))
    d = z / jnp.maximum(l2_norm(z), 1e-12) * r
  return project(x + d, x, eps, norm, mask)


def better(success_a, loss_a, success_b, loss_b) -> jax.Array:
  """bool [N]: candidate a is a worse case for the model than b (success first, then loss)."""
  return (success_a & ~success_b) | ((success_a == success_b) & (loss_a > loss_b))


def select(cond: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-example ``where`` with ``cond`` [N] broadcast over the trailing axes of ``a``."""
  return jnp.where(cond.reshape(cond.shape + (1,) * (a.ndim - 1)), a, b)


def worst_over_restarts(run: Callable, keys: jax.Array | None, restarts: int,
                        unroll: Any) -> jax.Array:
  """Per-example worst case of ``run`` over ``restarts`` random restarts.

  ``run(keys_r) -> (x_adv, success [N], loss [N])`` is one attack run; restart ``r`` uses the
  per-example keys ``fold_in(k_i, r)`` (restart 0 is the single run, so more restarts never lose
  a success). Kept per example: a success over a failure, then the higher loss. Returns x_adv.
  """
  def restart_keys(r):
    return None if keys is None else jax.vmap(lambda k: jax.random.fold_in(k, r))(keys)

  best = run(restart_keys(0))
  if restarts == 1:
    return best[0]

  def restart_body(best, r):
    cand = run(restart_keys(r))
    take = better(cand[1], cand[2], best[1], best[2])
    return tuple(select(take, c, b) for c, b in zip(cand, best)), None

  best, _ = lax.scan(restart_body, best, jnp.arange(1, restarts), unroll=unroll)
  return best[0]


def checked(attack: Callable) -> Callable:
  """``attack`` (``pgd``, ``fgsm``, ``apgd`` or one with their signature) with traced checks.

  The public attacks validate concrete arguments before tracing; inside ``jit`` the values are
  abstract, and the cores only clamp (see ``percadv_jax.attacks.pgd``). This wrapper adds
  ``jax.experimental.checkify`` checks of the inputs (``x`` finite and in [0, 1], ``eps >= 0``,
  ``step_size > 0``, ``mask`` in {0, 1}, ``0 <= y < K``) and of the output's guarantees
  (finite, in [0, 1], within ``eps`` in ``norm`` up to 1e-6, equal to ``x`` where ``mask`` is
  0). Run it under ``checkify.checkify`` and raise with ``err.throw()``::

    f = checkify.checkify(jax.jit(lambda x, y, e: checked(pgd)(logits_fn, x, y, eps=e, ...)))
    err, x_adv = f(x, y, eps)
    err.throw()   # ValueError-like JaxRuntimeError naming the failed check

  Called with concrete values outside ``checkify``, a failed check raises at once.

  Returns:
    the wrapped attack: ``(logits_fn, x, y, *, eps, norm="linf", mask=None, **kw) -> x_adv``.
  """
  from jax.experimental import checkify  # pylint: disable=g-import-not-at-top

  @functools.wraps(attack)
  def wrapped(logits_fn, x, y, *, eps, norm: str = "linf", mask=None, **kw):
    xf = jnp.asarray(x, jnp.float32)
    yi = jnp.asarray(y)
    n = xf.shape[0]
    e = jnp.broadcast_to(jnp.asarray(eps, jnp.float32), (n,))
    checkify.check(jnp.all(jnp.isfinite(xf)), "x contains NaN or inf values")
    checkify.check(jnp.all((xf >= 0) & (xf <= 1)), "x must lie in [0, 1], got values in "
                   "[{lo}, {hi}]", lo=jnp.min(xf), hi=jnp.max(xf))
    checkify.check(jnp.all(e >= 0), "eps must be >= 0, got minimum {m}", m=jnp.min(e))
    if kw.get("step_size") is not None:
      s = jnp.asarray(kw["step_size"], jnp.float32)
      checkify.check(jnp.all(s > 0) & jnp.all(jnp.isfinite(s)),
                     "step_size must be finite and > 0, got minimum {m}", m=jnp.min(s))
    if mask is not None:
      m = jnp.asarray(mask)
      checkify.check(jnp.all((m == 0) | (m == 1)), "mask must contain only 0 and 1")
    k = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(xf.shape, jnp.float32)).shape[-1]
    checkify.check(jnp.all((yi >= 0) & (yi < k)), "y must lie in [0, {k}), got values in "
                   "[{lo}, {hi}]", k=jnp.asarray(k), lo=jnp.min(yi), hi=jnp.max(yi))
    x_adv = attack(logits_fn, x, y, eps=eps, norm=norm, mask=mask, **kw)
    d = (x_adv - xf).reshape(n, -1)
    dist = jnp.max(jnp.abs(d), axis=1) if norm == "linf" else jnp.sqrt(jnp.sum(d * d, axis=1))
    checkify.check(jnp.all(jnp.isfinite(x_adv)), "x_adv contains NaN or inf values")
    checkify.check(jnp.all((x_adv >= 0) & (x_adv <= 1)), "x_adv leaves the box [0, 1]")
    checkify.check(jnp.all(dist <= e + 1e-6), "x_adv is farther than eps from x: distance "
                   "{dist} > eps {eps}", dist=jnp.max(dist - e) + jnp.min(e), eps=jnp.min(e))
    if mask is not None:
      fixed = jnp.broadcast_to(jnp.asarray(mask) == 0, xf.shape)
      checkify.check(jnp.all(jnp.where(fixed, x_adv == xf, True)),
                     "x_adv differs from x where mask is 0")
    return x_adv
  return wrapped


def objective(logits_fn, loss, targeted, y):
  """``f(x) -> (sum of per-example losses, (per-example losses [N], logits [N,K]))``."""
  loss_fn = losses.get_loss(loss)

  def f(xa):
    z = logits_fn(xa)
    per_ex = loss_fn(z, y, targeted=targeted)
    return jnp.sum(per_ex), (per_ex, z)
  return f


def prepare(logits_fn, x, y, *, key, eps, step_size, steps, norm, mask, random_start, restarts,
            targeted, loss, needs_step=False, randomised=False):
  """Validates the public arguments; returns (x, y, keys, mask) ready for the jitted core.

  ``keys`` (per example) are drawn when the attack starts at random or ``randomised`` (a
  randomised model, see ``logits_shape``), else None.
  """
  steps = checks.check_int(steps, "steps", minimum=1)
  restarts = checks.check_int(restarts, "restarts", minimum=1)
  random_start = checks.check_bool(random_start, "random_start")
  if restarts > 1 and not random_start:
    raise ValueError("restarts > 1 needs random_start=True (restarts from x would repeat the "
                     "same deterministic attack)")
  validate(logits_fn, x, y, mask=mask, norm=norm, loss=loss, targeted=targeted, key=key,
             need_key=random_start or randomised, randomised=randomised)
  n = x.shape[0]
  check_per_example(eps, "eps", n, allow_zero=True)
  if step_size is None and needs_step:
    raise ValueError("step_size is needed: a number > 0 or float [N] (e.g. "
                     "attacks.step_size(eps, steps))")
  if step_size is not None:
    check_per_example(step_size, "step_size", n, allow_zero=False)
  keys = example_keys(key, n) if random_start or randomised else None
  x = checks.as_float(x)
  mask = None if mask is None else jnp.asarray(mask, jnp.float32)
  return x, jnp.asarray(y, jnp.int32), keys, mask, steps, restarts


def resolve_targets(targets: int | None, num_classes: int) -> int:
  """The number of target classes of APGD-T / FAB-T on a ``num_classes``-way model.

  None gives AutoAttack's standard 9, or ``num_classes - 1`` when there are fewer other classes.
  Raises ValueError when ``targets`` exceeds ``num_classes - 1`` (targets are the other classes,
  ranked by the clean logits).
  """
  if num_classes < 2:
    raise ValueError(f"targeted attacks need at least 2 classes, the logits have {num_classes}")
  if targets is None:
    return min(DEFAULT_TARGETS, num_classes - 1)
  targets = checks.check_int(targets, "targets", minimum=1)
  if targets > num_classes - 1:
    raise ValueError(f"targets must be at most num_classes - 1 = {num_classes - 1} (the other "
                     f"classes of a {num_classes}-class model), got {targets}")
  return targets


def target_ranks(logits: jax.Array, rank: jax.Array) -> jax.Array:
  """int [N]: per example the class with the ``rank``-th highest logit (rank 2 = runner-up).

  AutoAttack's targets: ``logits.sort()[1][:, -rank]`` for ranks 2, ..., targets + 1 of the
  clean logits; ``rank`` may be traced.
  """
  order = jnp.argsort(logits, axis=1)
  return lax.dynamic_index_in_dim(order, logits.shape[1] - rank, axis=1, keepdims=False)
