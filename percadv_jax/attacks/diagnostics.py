"""Checks that say when a robustness evaluation cannot be trusted (in the spirit of AutoAttack).

Gradient-based attacks overstate robustness when the gradient is useless (zero, NaN, saturated
softmax), when the model is random (each forward pass differs), or when the attack is weak. Each
check here is a pure function that returns a flag with its evidence::

  {"name": str, "tripped": bool, "evidence": str, ...numbers (Python ints / floats)}

- ``gradient_check``: zero or non-finite input gradients on a share of the examples;
- ``randomness_check``: two clean forward passes differ (or an example's logits depend on the
  rest of the batch, e.g. BatchNorm in training mode);
- ``compare_attacks`` / ``stronger_attack_check``: a stronger attack (APGD-CE and APGD-DLR by
  default) finds markedly more adversarial examples than the reported one;
- ``large_eps_check``: accuracy does not fall to about zero at a very large eps (a sign of
  gradient masking);
- ``run_all`` runs the four with the budgets and thresholds of ``Options``, ``summary`` turns
  their results into one line for a table's notes.

Inputs follow the attacks: ``logits_fn(x [N,H,W,C]) -> logits [N,K]``, float32 images in [0, 1],
int labels [N], optional {0,1} masks broadcastable to the images. The checks look at the first
``max_examples`` examples (a share needs no more), so they stay cheap beside the evaluation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from percadv_jax import checks
from percadv_jax.attacks import core as C
from percadv_jax.attacks import losses as L
from percadv_jax.attacks.apgd import apgd
from percadv_jax.attacks.attack import step_size
from percadv_jax.attacks.pgd import pgd

LogitsFn = Callable[[jax.Array], jax.Array]
NAMES = ("gradients", "randomness", "stronger_attack", "large_eps")


def _result(name: str, tripped: bool, evidence: str, **numbers) -> dict[str, Any]:
  out = {"name": name, "tripped": bool(tripped), "evidence": evidence}
  for k, v in numbers.items():
    out[k] = v.item() if isinstance(v, np.generic) else v
  return out


def _pct(a: float) -> str:
  return f"{100.0 * a:.1f}%"


def _inputs(logits_fn, x, y, mask, max_examples, *, need_y: bool = True):
  """Validates and truncates the shared inputs; returns (x, y, mask, num_classes) as arrays."""
  if not callable(logits_fn):
    raise ValueError(f"logits_fn must be callable, got {type(logits_fn).__name__}")
  checks.check_images(x, "x", channels=None, allow_empty=False)
  n_full = x.shape[0]
  n = min(n_full, checks.check_int(max_examples, "max_examples", minimum=1))
  x = np.asarray(x, np.float32)[:n]
  out_shape = C.logits_shape(logits_fn, tuple(x.shape))
  if len(out_shape) != 2 or out_shape[0] != n:
    raise ValueError(f"logits_fn must return logits of shape [N, num_classes] = [{n}, K], "
                     f"got {out_shape}")
  k = out_shape[1]
  if need_y:
    y = np.asarray(y) if isinstance(y, (list, tuple)) else y
    checks.check_labels(y, n_full, k, "y")
    y = np.asarray(y, np.int32)[:n]
  if mask is not None:
    checks.check_mask(mask, (n_full,) + x.shape[1:], "mask")
    mask = np.asarray(mask, np.float32)[:n]
  return x, y, mask, k


@C.jit_logits_fn(static_argnames=("loss",))
def _input_gradients(logits_fn, x, y, *, loss):
  """Per-example input gradient of the attack objective, float32 [N,H,W,C], and logits [N,K]."""
  loss_fn = L.get_loss(loss)

  def total(v):
    z = logits_fn(v)
    return jnp.sum(loss_fn(z, y)), z
  g, z = jax.grad(total, has_aux=True)(x)
  return g, z


def gradient_check(logits_fn: LogitsFn, x: Any, y: Any, *, mask: Any = None, loss: str = "ce",
                   threshold: float = 0.1, zero_tol: float = 0.0,
                   max_examples: int = 256) -> dict[str, Any]:
  """Flags zero or non-finite input gradients on more than ``threshold`` of the examples.

  Looks at the correctly classified examples (the ones an attack has to move): an example whose
  gradient of ``loss`` with respect to the (free, ``mask == 1``) pixels is all within
  ``zero_tol`` of 0, or has a NaN / inf entry, gives a gradient attack nothing to follow.
  Typical causes: input quantisation or other non-differentiable preprocessing, a saturated
  softmax (cross-entropy gradients underflow to exactly 0 on very confident logits; the DLR
  loss does not), NaN from the model.

  Args:
    logits_fn: ``x [N,H,W,C] -> logits [N,K]``.
    x: float [N,H,W,C] in [0, 1]; y: int [N] true labels.
    mask: optional {0,1} [N,H,W,1] (or broadcastable): only free pixels count.
    loss: the attack objective whose gradient is checked ("ce", "margin" or "dlr").
    threshold: the share of examples (in [0, 1]) above which the check trips.
    zero_tol: max |gradient| at or below which a gradient counts as zero (>= 0).
    max_examples: use at most this many examples (the first ones).
  Returns:
    ``{"name": "gradients", "tripped", "evidence", "n_checked", "n_zero", "n_nonfinite",
    "zero_share", "nonfinite_share", "share", "threshold", "loss"}`` (shares of the checked,
    i.e. correctly classified, examples; ``share`` = zero or non-finite).
  Raises:
    ValueError: on bad input.
  """
  checks.check_choice(loss, "loss", L.LOSSES)
  threshold = checks.check_float(threshold, "threshold", minimum=0.0, maximum=1.0)
  zero_tol = checks.check_float(zero_tol, "zero_tol", minimum=0.0)
  x, y, mask, _ = _inputs(logits_fn, x, y, mask, max_examples)
  g, z = _input_gradients(logits_fn, jnp.asarray(x), jnp.asarray(y), loss=loss)
  g, z = np.asarray(g), np.asarray(z)
  if mask is not None:
    g = np.where(np.broadcast_to(mask > 0.5, g.shape), g, 0.0)
  flat = g.reshape(g.shape[0], -1)
  nonfinite = ~np.all(np.isfinite(flat), axis=1)
  with np.errstate(invalid="ignore"):
    zero = ~nonfinite & (np.max(np.abs(flat), axis=1, initial=0.0) <= zero_tol)
  # Non-finite logits make argmax meaningless; such examples are checked too.
  considered = (np.argmax(z, axis=1) == y) | ~np.all(np.isfinite(z), axis=1)
  n_c = int(considered.sum())
  n_zero, n_nf = int((zero & considered).sum()), int((nonfinite & considered).sum())
  zero_share = n_zero / n_c if n_c else 0.0
  nf_share = n_nf / n_c if n_c else 0.0
  share = zero_share + nf_share
  tripped = n_c > 0 and share > threshold
  if not n_c:
    evidence = "no correctly classified example to check"
  else:
    evidence = (f"the input gradient of the {loss} loss is zero on {n_zero} and non-finite on "
                f"{n_nf} of {n_c} correctly classified examples ({_pct(share)}; threshold "
                f"{_pct(threshold)})")
    if tripped:
      evidence += ": gradient attacks cannot move these examples (non-differentiable input "
      evidence += "processing, saturated softmax or NaN); their robustness may be overstated"
  return _result("gradients", tripped, evidence, n_checked=n_c, n_zero=n_zero,
                 n_nonfinite=n_nf, zero_share=float(zero_share), nonfinite_share=float(nf_share),
                 share=float(share), threshold=threshold, loss=loss)


def randomness_check(logits_fn: LogitsFn, x: Any, *, rtol: float = 1e-4,
                     batch_rtol: float = 1e-3, max_examples: int = 256) -> dict[str, Any]:
  """Flags a model whose clean forward passes differ (randomness) or depend on the batch.

  Calls ``logits_fn`` twice on the same images (outside ``jit``, as a user would) and once on
  the first half of the batch alone. A random model (dropout or noise left on at test time)
  makes every attack and every accuracy a random variable; gradient attacks then follow noise
  and robustness is overstated (use expectation over transformation). Batch dependence (e.g.
  BatchNorm in training mode) makes an example's prediction depend on the rest of its batch.

  Args:
    logits_fn: ``x [N,H,W,C] -> logits [N,K]``.
    x: float [N,H,W,C] in [0, 1].
    rtol: two passes differ when max |logit difference| > rtol * max(1, max |logit|), or when a
      prediction changes.
    batch_rtol: the same for the half batch against the full batch (looser: different batch
      sizes may round differently on accelerators).
    max_examples: use at most this many examples (the first ones).
  Returns:
    ``{"name": "randomness", "tripped", "evidence", "max_diff", "n_pred_changed",
    "batch_max_diff", "n_batch_pred_changed", "scale", "random", "batch_dependent"}``.
  Raises:
    ValueError: on bad input.
  """
  rtol = checks.check_float(rtol, "rtol", minimum=0.0)
  batch_rtol = checks.check_float(batch_rtol, "batch_rtol", minimum=0.0)
  x, _, _, _ = _inputs(logits_fn, x, None, None, max_examples, need_y=False)
  xa = jnp.asarray(x)
  z1 = np.asarray(logits_fn(xa), np.float64)
  z2 = np.asarray(logits_fn(xa), np.float64)
  finite = np.isfinite(z1).all() and np.isfinite(z2).all()
  scale = max(1.0, float(np.max(np.abs(z1[np.isfinite(z1)]), initial=0.0)))
  with np.errstate(invalid="ignore"):
    diff = float(np.nanmax(np.abs(z1 - z2))) if finite else float(
        np.max(np.where(np.isnan(z1) == np.isnan(z2), 0.0, np.inf)))
  n_changed = int(np.sum(np.argmax(z1, 1) != np.argmax(z2, 1)))
  random = n_changed > 0 or diff > rtol * scale
  h = x.shape[0] // 2
  batch_diff, n_batch_changed, dependent = 0.0, 0, False
  if h >= 1:
    zh = np.asarray(logits_fn(xa[:h]), np.float64)
    with np.errstate(invalid="ignore"):
      batch_diff = float(np.nan_to_num(np.max(np.abs(zh - z1[:h])), nan=np.inf))
    n_batch_changed = int(np.sum(np.argmax(zh, 1) != np.argmax(z1[:h], 1)))
    dependent = not random and (n_batch_changed > 0 or batch_diff > batch_rtol * scale)
  if random:
    evidence = (f"two forward passes on the same {x.shape[0]} images differ: max |logit "
                f"difference| {diff:.3g} (logit scale {scale:.3g}), {n_changed} prediction(s) "
                "changed; the model is random, so attacks follow noise and accuracies vary "
                "between runs")
  elif dependent:
    evidence = (f"logits depend on the batch: the first {h} images alone give max |logit "
                f"difference| {batch_diff:.3g} (logit scale {scale:.3g}), {n_batch_changed} "
                "prediction(s) changed (BatchNorm in training mode?)")
  else:
    evidence = (f"two forward passes agree (max |difference| {diff:.3g}) and a half batch gives "
                f"the same logits (max |difference| {batch_diff:.3g})")
  return _result("randomness", random or dependent, evidence, max_diff=diff,
                 n_pred_changed=n_changed, batch_max_diff=batch_diff,
                 n_batch_pred_changed=n_batch_changed, scale=scale, random=bool(random),
                 batch_dependent=bool(dependent))


def compare_attacks(reported: Any, stronger: Any, *, tolerance: float = 0.02,
                    reported_name: str = "the reported attack",
                    stronger_name: str = "a stronger attack") -> dict[str, Any]:
  """Flags a stronger attack that breaks markedly more examples than the reported one.

  Args:
    reported: bool [N], True = the example survived the reported evaluation (correct clean and
      after the reported attack), e.g. ``robust_accuracy(...).robust``.
    stronger: bool [N], True = the example survived the stronger attack (correct clean and
      after it), on the same examples in the same order.
    tolerance: the share of examples (in [0, 1]) that the stronger attack may break beyond the
      reported one before the check trips.
    reported_name, stronger_name: names used in the evidence.
  Returns:
    ``{"name": "stronger_attack", "tripped", "evidence", "n", "reported_accuracy",
    "stronger_accuracy", "n_broken_only_by_stronger", "gap", "tolerance"}``; ``gap`` = share of
    examples robust under the reported attack but broken by the stronger one.
  Raises:
    ValueError: arrays not bool (or 0/1 integers) of the same shape [N], N = 0.
  """
  tolerance = checks.check_float(tolerance, "tolerance", minimum=0.0, maximum=1.0)
  r, s = _flags(reported, "reported"), _flags(stronger, "stronger")
  if r.shape != s.shape:
    raise ValueError(f"reported and stronger must have the same shape [N], got {r.shape} and "
                     f"{s.shape}")
  n = r.shape[0]
  only = int(np.sum(r & ~s))
  gap = only / n
  tripped = gap > tolerance
  evidence = (f"{stronger_name} breaks {only} of {n} examples ({_pct(gap)}) that survived "
              f"{reported_name}: accuracy {_pct(r.mean())} -> {_pct((r & s).mean())} "
              f"(tolerance {_pct(tolerance)})")
  if tripped:
    evidence += "; the reported attack is too weak and its robustness is overstated"
  return _result("stronger_attack", tripped, evidence, n=n, reported_accuracy=float(r.mean()),
                 stronger_accuracy=float((r & s).mean()), n_broken_only_by_stronger=only,
                 gap=float(gap), tolerance=tolerance)


def _flags(a: Any, name: str) -> np.ndarray:
  a = np.asarray(a)
  if a.ndim != 1 or a.shape[0] == 0:
    raise ValueError(f"{name} must be a non-empty bool array of shape [N], got shape {a.shape}")
  if a.dtype != np.bool_:
    if not np.issubdtype(a.dtype, np.integer) or not np.all((a == 0) | (a == 1)):
      raise ValueError(f"{name} must be a bool array (True = the example survived), got "
                       f"dtype {a.dtype}")
    a = a.astype(bool)
  return a


def _survived(logits_fn, x_adv, y) -> np.ndarray:
  return np.array(C.correct(logits_fn, jnp.asarray(x_adv), jnp.asarray(y)), bool)


def stronger_attack_check(logits_fn: LogitsFn, x: Any, y: Any, *, key: jax.Array, eps: Any,
                          reported: Any, norm: str = "linf", mask: Any = None,
                          losses: Sequence[str] = ("ce", "dlr"), steps: int = 50,
                          restarts: int = 1, tolerance: float = 0.02, max_examples: int = 256,
                          unroll: int | bool = 1) -> dict[str, Any]:
  """Runs APGD (``losses``, per-example worst case) and compares it with the reported attack.

  Args:
    logits_fn, x, y, mask, norm: as the attacks (x [N,H,W,C], y int [N]).
    key: jax.random key for the APGD random starts.
    eps: the evaluation's radius (scalar or float [N]).
    reported: bool [N], True = survived the reported evaluation (see ``compare_attacks``).
    losses: APGD losses to run ("ce", "dlr", "margin"); "dlr" is skipped with fewer than 3
      classes.
    steps, restarts: APGD iterations and random restarts per loss.
    tolerance: see ``compare_attacks``.
    max_examples: use at most this many examples (the first ones, and the same of ``reported``).
    unroll: APGD's loop unrolling (see ``percadv_jax.attacks.pgd``).
  Returns:
    ``compare_attacks``'s dict, plus ``"stronger": "apgd-ce+apgd-dlr"`` (what was run).
  Raises:
    ValueError: on bad input.
  """
  x, y, mask, k = _inputs(logits_fn, x, y, mask, max_examples)
  n = x.shape[0]
  rep = _flags(reported, "reported")
  if rep.shape[0] < n:
    raise ValueError(f"reported has {rep.shape[0]} flags for {n} examples")
  rep = rep[:n]
  eps_n = np.asarray(eps, np.float32)
  if eps_n.ndim == 1:
    eps_n = eps_n[:n]
  if isinstance(losses, str):
    losses = (losses,)
  run = [l for l in losses if not (l == "dlr" and k < 3)]
  if not run:
    raise ValueError(f"no attack to run: losses={tuple(losses)} with {k} classes")
  for l in run:
    checks.check_choice(l, "loss", L.LOSSES)
  survived = _survived(logits_fn, x, y)
  for i, l in enumerate(run):
    xa = apgd(logits_fn, x, y, key=jax.random.fold_in(key, i), eps=eps_n, steps=steps,
              norm=norm, mask=mask, restarts=restarts, loss=l, unroll=unroll)
    survived &= _survived(logits_fn, xa, y)
  name = "+".join(f"apgd-{l}" for l in run)
  out = compare_attacks(rep, survived, tolerance=tolerance, stronger_name=name.upper())
  out["stronger"] = name
  return out


def large_eps_check(logits_fn: LogitsFn, x: Any, y: Any, *, eps: Any = None, norm: str = "linf",
                    mask: Any = None, steps: int = 20,
                    threshold: float = 0.1, max_examples: int = 256,
                    unroll: int | bool = 1) -> dict[str, Any]:
  """Flags accuracy that does not fall to about zero under PGD at a very large eps.

  At ``eps`` = 0.5 (Linf) every image can be moved to the same grey image, so a working attack
  on any model drives accuracy to (about) zero; when it does not, the gradient does not lead the
  attack (gradient masking, obfuscated gradients) and smaller-eps numbers are not trustworthy.

  Args:
    logits_fn, x, y, mask, norm: as the attacks.
    eps: the large radius; default 0.5 for "linf" and 0.5 * sqrt(H*W*C) for "l2".
    steps: PGD steps (the step rule ``attacks.step_size``, from ``x`` without a random start,
      early stop at the first success).
    threshold: accuracy (share in [0, 1]) above which the check trips.
    max_examples: use at most this many examples (the first ones).
    unroll: PGD's loop unrolling (see ``percadv_jax.attacks.pgd``).
  Returns:
    ``{"name": "large_eps", "tripped", "evidence", "eps", "accuracy", "clean_accuracy",
    "threshold", "n"}``.
  Raises:
    ValueError: on bad input.
  """
  checks.check_choice(norm, "norm", C.NORMS)
  threshold = checks.check_float(threshold, "threshold", minimum=0.0, maximum=1.0)
  steps = checks.check_int(steps, "steps", minimum=1)
  x, y, mask, _ = _inputs(logits_fn, x, y, mask, max_examples)
  if eps is None:
    eps = 0.5 if norm == "linf" else 0.5 * float(np.sqrt(np.prod(x.shape[1:])))
  eps = checks.check_float(eps, "eps", minimum=0.0, min_inclusive=False)
  clean = _survived(logits_fn, x, y)
  xa = pgd(logits_fn, x, y, eps=eps, step_size=step_size(eps, steps), steps=steps, norm=norm,
           mask=mask, random_start=False, early_stop=True, unroll=unroll)
  acc = float((clean & _survived(logits_fn, xa, y)).mean())
  tripped = acc > threshold
  evidence = (f"PGD-{steps} at a very large eps = {eps:.3g} ({norm}) leaves accuracy "
              f"{_pct(acc)} (clean {_pct(clean.mean())}; expected about 0, threshold "
              f"{_pct(threshold)})")
  if tripped:
    evidence += ": the gradient does not lead the attack (gradient masking?)"
  return _result("large_eps", tripped, evidence, eps=eps, accuracy=acc,
                 clean_accuracy=float(clean.mean()), threshold=threshold, n=int(x.shape[0]))


@dataclasses.dataclass(frozen=True)
class Options:
  """The trust checks' budgets and thresholds (``run_all``, ``robust_accuracy(trust_checks=)``).

  Attributes:
    steps: steps of the PGD that ``run_all`` runs as the reported attack when none is given.
    stronger_steps, stronger_restarts: APGD iterations and restarts (``stronger_attack_check``).
    large_eps: the radius of ``large_eps_check`` (None: its default), ``large_eps_steps`` its
      PGD steps.
    gradient_threshold, attack_tolerance, large_eps_threshold: the checks' thresholds.
    max_examples: each check uses at most this many examples (the first ones).
    unroll: the attacks' loop unrolling (see ``percadv_jax.attacks.pgd``).
  """
  steps: int = 10
  stronger_steps: int = 50
  stronger_restarts: int = 1
  large_eps: float | None = None
  large_eps_steps: int = 20
  gradient_threshold: float = 0.1
  attack_tolerance: float = 0.02
  large_eps_threshold: float = 0.1
  max_examples: int = 256
  unroll: int | bool = 1

  def __post_init__(self):
    for f in ("steps", "stronger_steps", "stronger_restarts", "large_eps_steps", "max_examples"):
      checks.check_int(getattr(self, f), f, minimum=1)
    for f in ("gradient_threshold", "attack_tolerance", "large_eps_threshold"):
      checks.check_float(getattr(self, f), f, minimum=0.0, maximum=1.0)
    if self.large_eps is not None:
      checks.check_float(self.large_eps, "large_eps", minimum=0.0, min_inclusive=False)


def run_all(logits_fn: LogitsFn, x: Any, y: Any, *, key: jax.Array, eps: Any, mask: Any = None,
            norm: str = "linf", reported: Any = None, options: Options = Options()
            ) -> dict[str, dict[str, Any]]:
  """Runs the four checks; returns ``{name: result}`` in the order of ``NAMES``.

  Args:
    logits_fn, x, y, mask, norm: as the attacks.
    key: jax.random key (split between the attacks).
    eps: the evaluation's radius (scalar or float [N]).
    reported: bool [N] robust flags of the reported evaluation (e.g. ``robust_accuracy``'s
      ``Evaluation.robust``); None runs PGD-``options.steps`` (the step rule
      ``attacks.step_size``, random start) as the reported attack.
    options: the checks' budgets and thresholds.
  Returns:
    ``{"gradients": ..., "randomness": ..., "stronger_attack": ..., "large_eps": ...}``, each
    a result dict ``{"name", "tripped", "evidence", ...}``.
  Raises:
    ValueError: on bad input.
  """
  if key is None:
    raise ValueError("run_all needs a jax.random key (key=): its attacks start at random")
  if not isinstance(options, Options):
    raise TypeError(f"options must be a diagnostics.Options, got {type(options).__name__}")
  o = options
  checks.check_choice(norm, "norm", C.NORMS)
  x_c, y_c, mask_c, _ = _inputs(logits_fn, x, y, mask, o.max_examples)
  n = x_c.shape[0]
  eps_n = np.asarray(eps, np.float32)
  if eps_n.ndim == 1:
    eps_n = eps_n[:n]
  if reported is None:
    xa = pgd(logits_fn, x_c, y_c, key=jax.random.fold_in(key, 0), eps=eps_n,
             step_size=step_size(eps_n, o.steps), steps=o.steps, norm=norm, mask=mask_c,
             unroll=o.unroll)
    reported = _survived(logits_fn, x_c, y_c) & _survived(logits_fn, xa, y_c)
  return {
      "gradients": gradient_check(logits_fn, x_c, y_c, mask=mask_c,
                                  threshold=o.gradient_threshold, max_examples=n),
      "randomness": randomness_check(logits_fn, x_c, max_examples=n),
      "stronger_attack": stronger_attack_check(
          logits_fn, x_c, y_c, key=jax.random.fold_in(key, 1), eps=eps_n, reported=reported,
          norm=norm, mask=mask_c, steps=o.stronger_steps, restarts=o.stronger_restarts,
          tolerance=o.attack_tolerance, max_examples=n, unroll=o.unroll),
      "large_eps": large_eps_check(logits_fn, x_c, y_c, eps=o.large_eps, norm=norm, mask=mask_c,
                                   steps=o.large_eps_steps, threshold=o.large_eps_threshold,
                                   max_examples=n, unroll=o.unroll),
  }


def summary(results: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]]) -> str:
  """One line for a table's notes: the tripped checks with their evidence, or that none tripped.

  Args:
    results: ``run_all``'s dict, or a list of result dicts.
  """
  if isinstance(results, (str, bytes)) or not isinstance(results, (Mapping, list, tuple)):
    raise TypeError("results must be run_all's dict or a list of check results, got "
                    f"{type(results).__name__}")
  items = list(results.values()) if isinstance(results, Mapping) else list(results)
  for r in items:
    if not isinstance(r, Mapping) or not {"name", "tripped", "evidence"} <= set(r):
      raise TypeError("each check result must be a dict with 'name', 'tripped' and 'evidence', "
                      f"got {r!r:.80}")
  tripped = [r for r in items if r.get("tripped")]
  if not tripped:
    names = ", ".join(r["name"] for r in items)
    return f"reliability checks passed ({names})"
  return "reliability flags: " + "; ".join(f"{r['name']}: {r['evidence']}" for r in tripped)
