"""Robust accuracy under several attacks: one ``Evaluation`` record of per-example arrays.

This is the one evaluation path of the library: ``robust_accuracy`` runs every ``Attack`` of an
evaluation in one jitted per-example function through ``percadv_jax.parallel.map_examples``
(sharded over all devices of all hosts; each batch padded to one shape, so it compiles once per
architecture and attack). It returns an ``Evaluation``: per example, correct clean, survived each
attack, the worst case (survived every attack), the Linf and L2 norms of each perturbation,
optionally the adversarial images and the trust checks. ``Evaluation.summary()`` gives the
accuracies. The experiments' store saves exactly this record (``to_arrays`` / ``from_arrays``);
the studies, the sweep and the accuracy-vs-eps curves read it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import checks, parallel
from percadv_jax.attacks import core as C
from percadv_jax.attacks import diagnostics as D
from percadv_jax.attacks.attack import Attack, free_pixels

AttackFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """Per-example results of one evaluation (NumPy arrays, examples in the input order).

  Attributes:
    clean: bool [N], classified correctly without attack.
    survived: ``{attack name: bool [N]}``, correct clean *and* after that attack (after every
      attack up to it when ``robust_accuracy`` ran them as a cascade).
    linf, l2: ``{attack name: float32 [N]}``, the perturbation's norms.
    x_adv: ``{attack name: float32 [N,H,W,C]}`` adversarial images, or None.
    checks: the trust checks (``diagnostics.run_all``'s ``{name: result}``), or None.
  """
  clean: np.ndarray
  survived: Mapping[str, np.ndarray]
  linf: Mapping[str, np.ndarray]
  l2: Mapping[str, np.ndarray]
  x_adv: Mapping[str, np.ndarray] | None = None
  checks: Mapping[str, Any] | None = None

  @property
  def names(self) -> list[str]:
    """The attacks, in the order they ran."""
    return list(self.survived)

  @property
  def robust(self) -> np.ndarray:
    """bool [N]: the pointwise worst case, correct clean and after every attack."""
    out = self.clean.copy()
    for s in self.survived.values():
      out &= s
    return out

  def summary(self) -> dict[str, Any]:
    """``{"n", "clean", "robust", "per_attack", "linf_mean", "l2_mean"}`` (accuracies as
    fractions, ``per_attack`` = ``{name: accuracy under that attack alone}``, or after the
    attacks up to it for a cascade), plus ``"checks"`` (one line, ``diagnostics.summary``) when
    the trust checks ran."""
    out = {"n": int(self.clean.size), "clean": float(self.clean.mean()),
           "robust": float(self.robust.mean()),
           "per_attack": {n: float(s.mean()) for n, s in self.survived.items()},
           "linf_mean": {n: float(v.mean()) for n, v in self.linf.items()},
           "l2_mean": {n: float(v.mean()) for n, v in self.l2.items()}}
    if self.checks is not None:
      out["checks"] = D.summary(self.checks)
    return out

  def subset(self, n: int) -> "Evaluation":
    """The record of the first ``n`` examples (trust checks dropped)."""
    cut = lambda d: None if d is None else {k: v[:n] for k, v in d.items()}  # noqa: E731
    return Evaluation(self.clean[:n], cut(self.survived), cut(self.linf), cut(self.l2),
                      cut(self.x_adv))

  def to_arrays(self) -> dict[str, np.ndarray]:
    """Flat ``{"clean", "survived/<name>", "linf/<name>", "l2/<name>", ["x_adv/<name>"]}``
    (an ``.npz``'s contents; the trust checks are JSON and travel separately)."""
    out = {"clean": self.clean}
    for group in ("survived", "linf", "l2", "x_adv"):
      for name, v in (getattr(self, group) or {}).items():
        out[f"{group}/{name}"] = v
    return out

  @classmethod
  def from_arrays(cls, arrays: Mapping[str, np.ndarray], *,
                  checks: Mapping[str, Any] | None = None) -> "Evaluation":
    """The record of ``to_arrays``'s dict.

    Args:
      arrays: ``{"clean": bool [N], "survived/<name>": bool [N], "linf/<name>": float [N],
        "l2/<name>": float [N], ["x_adv/<name>": float32 [N,H,W,C]]}``.
      checks: the trust checks (``diagnostics.run_all``'s dict), or None.
    Raises:
      ValueError: naming a missing, unknown or inconsistent field.
    """
    if "clean" not in arrays:
      raise ValueError("an evaluation record needs 'clean'")
    groups: dict[str, dict[str, np.ndarray]] = {g: {} for g in ("survived", "linf", "l2",
                                                                 "x_adv")}
    for k, v in arrays.items():
      if k == "clean":
        continue
      group, _, name = k.partition("/")
      if group not in groups or not name:
        raise ValueError(f"unknown field {k!r} in an evaluation record")
      groups[group][name] = np.asarray(v)
    clean = np.asarray(arrays["clean"]).astype(bool)
    names = list(groups["survived"])
    if not names:
      raise ValueError("an evaluation record needs at least one 'survived/<attack>' array")
    for g in ("linf", "l2"):
      if list(groups[g]) != names:
        raise ValueError(f"an evaluation record's {g!r} arrays name {sorted(groups[g])}, "
                         f"its attacks are {sorted(names)}")
    for g, d in groups.items():
      for name, v in d.items():
        if v.shape[:1] != clean.shape:
          raise ValueError(f"{g}/{name} has {v.shape[:1]} examples, 'clean' has {clean.shape}")
    return cls(clean, {n: v.astype(bool) for n, v in groups["survived"].items()},
               groups["linf"], groups["l2"], groups["x_adv"] or None,
               None if checks is None else dict(checks))


def _named(attacks: Mapping[str, Any]) -> dict[str, Any]:
  if not isinstance(attacks, Mapping):
    raise TypeError("attacks must be a dict {name: Attack}, got "
                    f"{type(attacks).__name__}")
  if not attacks:
    raise ValueError("attacks is empty: give at least one attack")
  for name, a in attacks.items():
    if not isinstance(name, str) or not name or "/" in name:
      raise ValueError(f"attack names must be non-empty strings without '/', got {name!r}")
    if not callable(a):
      raise TypeError(f"attack {name!r} must be an Attack (or a callable with its signature), "
                      f"got {type(a).__name__}")
    try:
      hash(a)
    except TypeError:
      raise TypeError(f"attack {name!r} must be hashable (a frozen dataclass such as Attack): "
                      "the engine compiles each attack once and keys the compile on it") from None
  return dict(attacks)


def _draw(logits_fn: Callable, x: jax.Array, key: jax.Array | None, stream: int) -> jax.Array:
  """Logits of ``x``: ``logits_fn(x)``, or one draw of a randomised model (``key`` not None):
  ``logits_fn(x, keys)`` with per-example keys split from ``fold_in(key, stream)``."""
  if key is None:
    return logits_fn(x)
  return logits_fn(x, jax.random.split(jax.random.fold_in(key, stream), x.shape[0]))


# Streams of a randomised model's evaluation draws (the attacks draw from the batch key itself).
_CLEAN_DRAW, _ADVERSARIAL_DRAW = 1, 2


@functools.lru_cache(maxsize=64)
def _clean_fn(logits_static: Any, randomised: bool = False) -> Callable:
  """``f(args, batch, key) -> {"clean": bool [B]}`` (cached per logits function)."""
  def f(args, batch, key):
    logits_fn = args["logits_fn"] if logits_static is None else logits_static
    z = _draw(logits_fn, batch["image"], key if randomised else None, _CLEAN_DRAW)
    return {"clean": jnp.argmax(z, -1) == batch["label"]}
  return f


@functools.lru_cache(maxsize=64)
def _attack_fn(logits_static: Any, attack: Any, return_adversarial: bool,
               randomised: bool = False) -> Callable:
  """``f(args, batch, key) -> per-example results`` of one attack (cached: each attack compiles
  once per architecture, whatever other attacks it is evaluated with).

  An ``Attack`` arrives with its radius zeroed and ``masked=True``: the radius is traced
  (``args["eps"]``) and the batch's mask holds the attack's free pixels, so every radius and
  both settings share one compile.
  """

  def f(args, batch, key):
    logits_fn = args["logits_fn"] if logits_static is None else logits_static
    x, y, mask = batch["image"], batch["label"], batch["mask"]
    kw: dict[str, Any] = {"key": key, "mask": mask}
    if isinstance(attack, Attack):
      kw["eps"] = args["eps"]
    x_adv = attack(logits_fn, x, y, **kw)
    if tuple(x_adv.shape) != tuple(x.shape):
      raise ValueError(f"an attack returned shape {tuple(x_adv.shape)} for images of shape "
                       f"{tuple(x.shape)}")
    d = (x_adv - x).reshape(x.shape[0], -1)
    inside = jnp.all(jnp.isfinite(x_adv) & (x_adv >= 0) & (x_adv <= 1),
                     axis=tuple(range(1, x.ndim)))
    outside = jnp.broadcast_to(mask, x.shape) == 0
    inside &= ~jnp.any(outside & (x_adv != x), axis=tuple(range(1, x.ndim)))
    z_adv = _draw(logits_fn, x_adv, key if randomised else None, _ADVERSARIAL_DRAW)
    out = {"correct": jnp.argmax(z_adv, -1) == y, "valid": inside,
           "linf": jnp.max(jnp.abs(d), -1), "l2": jnp.linalg.norm(d, axis=-1)}
    if return_adversarial:
      out["x_adv"] = x_adv
    return out
  return f


def _stage_batch_size(rows: int, batch_size: int, mesh: Any) -> int:
  """The batch size of an attack run on ``rows`` examples: ``batch_size``, or for fewer rows the
  power of two at or above ``rows`` (at least the device count): a cascade's later stages, on the
  few examples still robust, then compute little padding at one compile per power of two."""
  if rows >= batch_size:
    return batch_size
  return parallel.padded_batch_size(1 << (rows - 1).bit_length(), batch_size, mesh=mesh)


def robust_accuracy(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, y: jax.Array,
                    attacks: Mapping[str, Attack], *, key: jax.Array | None = None,
                    mask: jax.Array | None = None, batch_size: int | None = None,
                    mesh: Any = None, return_adversarial: bool = False, desc: str | None = None,
                    trust_checks: D.Options | None = None,
                    cascade: bool = False) -> Evaluation:
  """Accuracy under a set of untargeted attacks, worst case per example.

  An example counts as robust only if it is classified correctly clean *and* after every attack
  (the pointwise worst case, as AutoAttack). Each attack's output is re-evaluated with
  ``logits_fn`` and checked to lie in [0, 1] and to keep every pixel the attack may not change.
  Runs sharded over all devices (``parallel.map_examples``).

  Args:
    logits_fn: ``x [N,H,W,C] -> logits [N,K]`` (eval mode). A ``jax.tree_util.Partial`` has its
      arrays traced (models of one architecture share the compiled evaluation); a plain function
      is compiled in. With attacks of ``eot`` set, a randomised model ``logits_fn(x, keys)``
      (one ``jax.random`` key per example): the clean and the adversarial predictions are one
      draw each (keys from ``key``), as AutoAttack's single forward pass.
    x: float [N,H,W,C] in [0, 1]; y: int [N] true labels in [0, K).
    attacks: ``{name: Attack}``. Another hashable callable with the signature
      ``attack(logits_fn, x, y, *, key, mask) -> x_adv [N,H,W,C]`` may stand in for an
      ``Attack`` (e.g. the SSIM quality-ball attack); it gets ``mask`` (ones without one) and
      must keep pixels where it is 0.
    key: jax.random key, split per attack and per batch (needed by random attacks).
    mask: {0,1} [N,H,W,1] foreground masks; a masked ``Attack`` (``masked=True``) changes only
      pixels where it is 1 (``free_pixels``).
    batch_size: attack this many examples at a time (rounded to a multiple of the device count;
      the last batch is padded, so every call has the same shapes); None = all at once.
    mesh: the device mesh (default: every device).
    return_adversarial: also keep the adversarial images.
    desc: label of a progress bar (None: none).
    trust_checks: run the trust checks of ``attacks.diagnostics.run_all`` with these
      ``diagnostics.Options`` against this evaluation's worst case, at the first attack's eps
      and norm (which must be an ``Attack``). Needs ``key``. None: no checks.
    cascade: AutoAttack's cascade: each attack runs, in order, only on the examples that are
      still robust (correct clean and after every earlier attack), compacted into batches of
      ``batch_size``; fewer examples than that run padded to the power of two at or above their
      number (little padded compute, one compile per power of two, shared by every model of one
      architecture). ``survived[name]`` is then robust after the attacks up to ``name``
      (AutoAttack's reported accuracy after each attack; ``robust`` is the same worst case),
      and the norms of examples an attack skipped are 0 (their ``x_adv``: ``x``).

  Returns:
    an ``Evaluation``.

  Raises:
    ValueError: on bad input (labels outside [0, K), shapes, NaN, an attack that needs more
      classes than the model has, ...) or an attack output outside [0, 1] / changed where the
      attack may not change pixels.
  """
  named = _named(attacks)
  cascade = checks.check_bool(cascade, "cascade")
  randomised = any(isinstance(a, Attack) and a.eot is not None for a in named.values())
  if randomised:
    if not all(isinstance(a, Attack) and a.eot is not None for a in named.values()):
      raise ValueError("a randomised model (attacks with eot set) needs every attack to be an "
                       "Attack with eot set")
    if key is None:
      raise ValueError("a randomised model (attacks with eot set) needs key=")
    if trust_checks is not None:
      raise ValueError("trust_checks take a deterministic model; the attacks have eot set (a "
                       "randomised model)")
  if trust_checks is not None:
    if not isinstance(trust_checks, D.Options):
      raise TypeError("trust_checks must be None or a diagnostics.Options, got "
                      f"{type(trust_checks).__name__}")
    if key is None:
      raise ValueError("trust_checks need key= (the checks run their own attacks)")
    if not isinstance(next(iter(named.values())), Attack):
      raise ValueError("trust_checks take their eps and norm from the first attack, which must "
                       "be an Attack")
  checks.check_images(x, "x", channels=None)
  n = x.shape[0]
  if n == 0:
    raise ValueError("x is an empty batch (0 examples)")
  checks.check_labels(y, n, None, "y")
  if not callable(logits_fn):
    raise TypeError(f"logits_fn must be callable, got {type(logits_fn).__name__}")
  shape = tuple(np.shape(x))
  out_shape = C.logits_shape(logits_fn, shape, randomised=randomised)
  if len(out_shape) != 2 or out_shape[0] != n:
    raise ValueError(f"logits_fn must return logits of shape [N, num_classes] = [{n}, K], got "
                     f"{out_shape}")
  checks.check_labels(y, n, out_shape[1], "y")
  for a in named.values():
    if isinstance(a, Attack):
      a.check_num_classes(out_shape[1])
  if mask is not None:
    checks.check_mask(mask, shape, "mask")
  frees = [np.asarray(free_pixels(mask, a.masked if isinstance(a, Attack) else mask is not None,
                                  shape)) for a in named.values()]
  if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
    raise TypeError(f"mesh must be a jax.sharding.Mesh (parallel.make_mesh()), got {mesh!r}")
  data = {"image": np.asarray(x, np.float32), "label": np.asarray(y, np.int32)}
  args: dict[str, Any] = {}
  if isinstance(logits_fn, jax.tree_util.Partial):
    args["logits_fn"], static = logits_fn, None
  else:
    static = logits_fn
  bs = parallel.padded_batch_size(
      n, n if batch_size is None else checks.check_int(batch_size, "batch_size", minimum=1),
      mesh=mesh)
  clean = parallel.map_examples(_clean_fn(static, randomised), args, data, batch_size=bs,
                                mesh=mesh, key=key if randomised else None)["clean"].astype(bool)
  survived, linf, l2, x_adv = {}, {}, {}, {}
  alive = clean.copy()
  for i, ((name, attack), free) in enumerate(zip(named.items(), frees)):
    a_args = dict(args)
    if isinstance(attack, Attack):
      a_args["eps"] = jnp.float32(attack.eps)
      attack = dataclasses.replace(attack, eps=0.0, masked=True)
    k = None if key is None else jax.random.fold_in(key, i)  # per batch: fold_in(k, batch)
    rows = np.flatnonzero(alive) if cascade else np.arange(n)
    out = {"correct": np.zeros(0, bool), "linf": np.zeros(0, np.float32),
           "l2": np.zeros(0, np.float32), "x_adv": data["image"][:0], "valid": np.ones(0, bool)}
    if rows.size:
      sub = {**data, "mask": free}
      sub = sub if rows.size == n else {f: v[rows] for f, v in sub.items()}
      out = parallel.map_examples(
          _attack_fn(static, attack, bool(return_adversarial), randomised), a_args, sub,
          batch_size=_stage_batch_size(rows.size, bs, mesh), mesh=mesh,
          key=k, desc=None if desc is None else f"{desc}: {name}")
    if not out["valid"].all():
      raise ValueError(f"attack {name!r} returned values outside [0, 1] (or NaN) or changed "
                       "pixels it may not change")
    correct = np.zeros(n, bool)
    correct[rows] = out["correct"].astype(bool)
    survived[name] = (alive if cascade else clean) & correct
    alive = alive & correct
    linf[name], l2[name] = np.zeros(n, np.float32), np.zeros(n, np.float32)
    linf[name][rows], l2[name][rows] = out["linf"], out["l2"]
    if return_adversarial:
      x_adv[name] = data["image"].copy()
      x_adv[name][rows] = out["x_adv"]
  ev = Evaluation(clean, survived, linf, l2, x_adv if return_adversarial else None)
  if trust_checks is None:
    return ev
  first = next(iter(named.values()))
  report = D.run_all(logits_fn, data["image"], data["label"],
                     key=jax.random.fold_in(key, len(named)), eps=first.eps,
                     mask=np.asarray(free_pixels(mask, first.masked, shape)), norm=first.norm,
                     reported=ev.robust, options=trust_checks)
  return dataclasses.replace(ev, checks=report)
