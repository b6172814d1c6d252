"""Robust accuracy under several attacks, with the pointwise worst case per example.

This is the one evaluation path of the library: ``robust_accuracy`` runs every attack of an
evaluation in one jitted per-example function through ``percadv_jax.parallel.map_examples``
(sharded over all devices of all hosts; each batch padded to one shape, so it compiles once per
architecture and attack set). The study binaries, accuracy-vs-eps curves, the sweep and the
perceptual study's batched attacks all call it.

``Attack`` describes an attack by its settings (kind, steps, norm, restarts, loss) with the radius
given at call time, and ``step_size`` is the one step-size rule of every evaluation:
``step_factor * eps / steps`` (Madry et al.'s 2.5: with 10 steps, eps 8/255 gives 2/255).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import checks, parallel
from percadv_jax.attacks import _common as C
from percadv_jax.attacks import diagnostics as D
from percadv_jax.attacks.apgd import apgd
from percadv_jax.attacks.pgd import fgsm, pgd

AttackFn = Callable[..., jax.Array]
STEP_FACTOR = 2.5
KINDS = ("fgsm", "pgd", "apgd")


def step_size(eps: float | jax.Array, steps: int, *, factor: float = STEP_FACTOR
              ) -> float | jax.Array:
  """The PGD step size of every evaluation: ``factor * eps / steps`` (scalar or [N])."""
  return factor * eps / steps


@dataclasses.dataclass(frozen=True)
class Attack:
  """An attack setting whose radius is given at call time (hashable: one compile per setting).

  Called as ``attack(logits_fn, x, y, *, eps, key=None, mask=None) -> x_adv``.

  Attributes:
    kind: "fgsm" (one signed-gradient step of size eps), "pgd" (random start, ``steps`` steps of
      ``step_size(eps, steps, factor=step_factor)``) or "apgd" (APGD, its own step sizes).
    steps: iterations (pgd, apgd).
    norm: "linf" or "l2".
    restarts: random restarts (pgd, apgd), per-example worst case.
    loss: "ce", "margin" or "dlr" (see ``percadv_jax.attacks.losses``).
    step_factor: the PGD step-size factor.
  """
  kind: str = "pgd"
  steps: int = 10
  norm: str = "linf"
  restarts: int = 1
  loss: str = "ce"
  step_factor: float = STEP_FACTOR

  def __post_init__(self):
    checks.check_choice(self.kind, "attack kind", KINDS)
    C.check_int(self.steps, "steps")
    C.check_int(self.restarts, "restarts")
    checks.check_positive(self.step_factor, "step_factor")

  def __call__(self, logits_fn: Callable, x: jax.Array, y: jax.Array, *, eps: Any,
               key: jax.Array | None = None, mask: jax.Array | None = None) -> jax.Array:
    if self.kind == "fgsm":
      return fgsm(logits_fn, x, y, eps=eps, norm=self.norm, mask=mask, loss=self.loss)
    if self.kind == "pgd":
      return pgd(logits_fn, x, y, key=key, eps=eps,
                 step_size=step_size(eps, self.steps, factor=self.step_factor),
                 steps=self.steps, norm=self.norm, mask=mask, restarts=self.restarts,
                 loss=self.loss)
    return apgd(logits_fn, x, y, key=key, eps=eps, steps=self.steps, norm=self.norm, mask=mask,
                restarts=self.restarts, loss=self.loss)

  @property
  def label(self) -> str:
    """``"PGD-10"``, ``"APGD-DLR-20"``, ``"FGSM"``."""
    name = self.kind.upper() + ("" if self.loss == "ce" else "-" + self.loss.upper())
    return name if self.kind == "fgsm" else f"{name}-{self.steps}"


def _named(attacks: Mapping[str, AttackFn] | Sequence[AttackFn]) -> dict[str, AttackFn]:
  if isinstance(attacks, Mapping):
    named = dict(attacks)
  elif isinstance(attacks, (list, tuple)):
    named = {}
    for i, a in enumerate(attacks):
      base = getattr(getattr(a, "func", a), "__name__", "attack")
      named[f"{i}_{base}"] = a
  else:
    raise ValueError("attacks must be a dict {name: attack} or a list of attacks, got "
                     f"{type(attacks).__name__}")
  if not named:
    raise ValueError("attacks is empty: give at least one attack")
  for name, a in named.items():
    if not callable(a):
      raise ValueError(f"attack {name!r} is not callable")
  return named


class _Same:
  """Hashes an attack by value where it can (equal ``functools.partial``s share a compile)."""

  def __init__(self, fn: Any):
    self.fn = fn
    try:
      if isinstance(fn, functools.partial):
        self.key = ("partial", fn.func, fn.args, tuple(sorted(fn.keywords.items())))
      else:
        self.key = ("obj", fn)
      hash(self.key)
    except TypeError:
      self.key = ("id", id(fn))

  def __hash__(self):
    return hash(self.key)

  def __eq__(self, other):
    return isinstance(other, _Same) and self.key == other.key


@functools.lru_cache(maxsize=64)
def _clean_fn(logits_static: Any) -> Callable:
  """``f(args, batch, key) -> {"clean": bool [B]}`` (cached per logits function)."""
  def f(args, batch, key):
    del key
    logits_fn = args["logits_fn"] if logits_static is None else logits_static
    return {"clean": jnp.argmax(logits_fn(batch["image"]), -1) == batch["label"]}
  return f


@functools.lru_cache(maxsize=64)
def _attack_fn(logits_static: Any, attack: _Same, with_mask: bool, with_eps: bool,
               return_adversarial: bool) -> Callable:
  """``f(args, batch, key) -> per-example results`` of one attack (cached: each attack compiles
  once per architecture, whatever other attacks it is evaluated with)."""

  def f(args, batch, key):
    logits_fn = args["logits_fn"] if logits_static is None else logits_static
    x, y = batch["image"], batch["label"]
    mask = batch["mask"] if with_mask else None
    kw: dict[str, Any] = {}
    if key is not None:
      kw["key"] = key
    if with_mask:
      kw["mask"] = mask
    if with_eps:
      kw["eps"] = args["eps"]
    x_adv = attack.fn(logits_fn, x, y, **kw)
    d = (x_adv - x).reshape(x.shape[0], -1)
    inside = jnp.all(jnp.isfinite(x_adv) & (x_adv >= 0) & (x_adv <= 1),
                     axis=tuple(range(1, x.ndim)))
    if with_mask:
      outside = jnp.broadcast_to(mask, x.shape) == 0
      inside &= ~jnp.any(outside & (x_adv != x), axis=tuple(range(1, x.ndim)))
    out = {"correct": jnp.argmax(logits_fn(x_adv), -1) == y, "valid": inside,
           "linf": jnp.max(jnp.abs(d), -1), "l2": jnp.linalg.norm(d, axis=-1)}
    if return_adversarial:
      out["x_adv"] = x_adv
    return out
  return f


def robust_accuracy(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, y: jax.Array,
                    attacks: Mapping[str, AttackFn] | Sequence[AttackFn], *,
                    key: jax.Array | None = None, mask: jax.Array | None = None,
                    eps: float | Mapping[str, float] | None = None,
                    batch_size: int | None = None, mesh: Any = None,
                    return_adversarial: bool = False, desc: str | None = None,
                    diagnostics: bool | Mapping[str, Any] = False) -> dict[str, Any]:
  """Accuracy under a set of untargeted attacks, worst case per example.

  An example counts as robust only if it is classified correctly clean *and* after every attack
  (the pointwise worst case, as AutoAttack). Each attack's output is re-evaluated with
  ``logits_fn`` and checked to lie in [0, 1] and equal ``x`` where ``mask == 0``. Runs sharded
  over all devices (``parallel.map_examples``).

  Args:
    logits_fn: ``x [N,H,W,C] -> logits [N,K]`` (eval mode). A ``jax.tree_util.Partial`` has its
      arrays traced (models of one architecture share the compiled evaluation); a plain function
      is compiled in.
    x: float [N,H,W,C] in [0, 1]; y: int [N] true labels in [0, K).
    attacks: dict ``{name: attack}`` or a list (named ``"{i}_{function name}"``). An attack is
      called as ``attack(logits_fn, x, y, key=key)`` (plus ``mask=mask`` when ``mask`` is given
      and ``eps=`` when ``eps`` is given) and returns x_adv [N,H,W,C], e.g. ``Attack("pgd",
      steps=10)`` with ``eps``, or ``functools.partial(pgd, eps=8/255, step_size=2/255,
      steps=10)``.
    key: jax.random key, split per batch and per attack (needed by random attacks).
    mask: optional {0,1} [N,H,W,1] foreground masks, passed to every attack (masked PGD).
    eps: the radius passed to every attack (a float, or ``{name: float}``), traced: one compile
      serves every radius. None: the attacks carry their own.
    batch_size: attack this many examples at a time (a multiple of the device count; the last
      batch is padded, so every call has the same shapes); None = all at once.
    mesh: the device mesh (default: every device).
    return_adversarial: also return the adversarial images.
    desc: label of a progress bar (None: none).
    diagnostics: also run the trust checks of ``attacks.diagnostics.run_all`` (zero or
      non-finite gradients, randomness, a stronger attack finding markedly more adversarial
      examples than these, accuracy not falling at a very large eps) against this evaluation's
      worst case; a dict passes options to ``run_all`` (e.g. ``{"stronger_steps": 20,
      "max_examples": 100}``). Needs ``key`` and ``eps``.

  Returns:
    dict with ``"clean"`` (float accuracy on x), ``"robust"`` (float, worst case over attacks),
    ``"per_attack"`` ({name: float accuracy under that attack alone}), ``"clean_correct"``
    (bool [N]), ``"robust_flags"`` (bool [N], True = survived every attack), ``"flags"``
    ({name: bool [N], True = correct clean and after that attack}), ``"linf"`` / ``"l2"``
    ({name: float [N] perturbation norms}) and, with ``return_adversarial``, ``"adversarial"``
    ({name: float32 [N,H,W,C]}). NumPy arrays. With ``diagnostics``: ``"diagnostics"`` ({check
    name: {"name", "tripped", "evidence", ...}}) and ``"diagnostics_summary"`` (one line).

  Raises:
    ValueError: on bad input (labels outside [0, K), shapes, NaN, ...) or an attack output
      outside [0, 1] / changed outside the mask.
  """
  named = _named(attacks)
  if diagnostics and (key is None or eps is None):
    raise ValueError("diagnostics need key= and eps= (the checks run their own attacks)")
  checks.check_images(x, "x", channels=None)
  n = x.shape[0]
  if n == 0:
    raise ValueError("x is an empty batch (0 examples)")
  checks.check_labels(y, n, None, "y")
  if not callable(logits_fn):
    raise ValueError(f"logits_fn must be callable, got {type(logits_fn).__name__}")
  out_shape = C.logits_shape(logits_fn, tuple(np.shape(x)))
  if len(out_shape) != 2 or out_shape[0] != n:
    raise ValueError(f"logits_fn must return logits of shape [N, num_classes] = [{n}, K], got "
                     f"{out_shape}")
  checks.check_labels(y, n, out_shape[1], "y")
  data = {"image": np.asarray(x, np.float32), "label": np.asarray(y, np.int32)}
  if mask is not None:
    checks.check_mask(mask, tuple(np.shape(x)), "mask")
    data["mask"] = np.broadcast_to(np.asarray(mask, np.float32),
                                   tuple(np.shape(x))[:3] + (np.shape(mask)[-1],)).copy()
  args: dict[str, Any] = {}
  if isinstance(logits_fn, jax.tree_util.Partial):
    args["logits_fn"], static = logits_fn, None
  else:
    static = logits_fn
  if eps is not None:
    per = eps if isinstance(eps, Mapping) else {name: eps for name in named}
    if set(per) != set(named):
      raise ValueError(f"eps names {sorted(per)} do not match the attacks {sorted(named)}")
    for name, e in per.items():
      checks.check_positive(e, f"eps of {name!r}", allow_zero=True)
    args["eps"] = {name: jnp.float32(e) for name, e in per.items()}
  bs = parallel.padded_batch_size(
      n, n if batch_size is None else C.check_int(batch_size, "batch_size"), mesh=mesh)
  base = {k: v for k, v in args.items() if k != "eps"}
  clean = parallel.map_examples(_clean_fn(static), base, data, batch_size=bs,
                                mesh=mesh)["clean"].astype(bool)
  r: dict[str, np.ndarray] = {}
  for i, (name, attack) in enumerate(named.items()):
    fn = _attack_fn(static, _Same(attack), mask is not None, eps is not None,
                    bool(return_adversarial))
    a_args = dict(base, **({"eps": args["eps"][name]} if eps is not None else {}))
    k = None if key is None else jax.random.fold_in(key, i)  # per batch: fold_in(k, batch)
    out = parallel.map_examples(fn, a_args, data, batch_size=bs, mesh=mesh, key=k,
                                desc=None if desc is None else f"{desc}: {name}")
    if not out["valid"].all():
      raise ValueError(f"attack {name!r} returned values outside [0, 1] (or NaN)"
                       + (" or changed pixels outside the mask" if mask is not None else ""))
    for field, v in out.items():
      r[f"{field}/{name}"] = v
  flags = {name: clean & r[f"correct/{name}"].astype(bool) for name in named}
  robust = clean.copy()
  for f in flags.values():
    robust &= f
  out = {"clean": float(clean.mean()), "robust": float(robust.mean()),
         "per_attack": {name: float(f.mean()) for name, f in flags.items()},
         "clean_correct": clean, "robust_flags": robust, "flags": flags,
         "linf": {name: r[f"linf/{name}"] for name in named},
         "l2": {name: r[f"l2/{name}"] for name in named}}
  if return_adversarial:
    out["adversarial"] = {name: r[f"x_adv/{name}"] for name in named}
  if diagnostics:
    options = dict(diagnostics) if isinstance(diagnostics, Mapping) else {}
    first_name = next(iter(named))
    first = per[first_name]
    options.setdefault("norm", getattr(named[first_name], "norm", "linf"))
    out["diagnostics"] = D.run_all(logits_fn, data["image"], data["label"],
                                   key=jax.random.fold_in(key, len(named)), eps=first,
                                   mask=data.get("mask"), reported=robust, **options)
    out["diagnostics_summary"] = D.summary(out["diagnostics"])
  return out
