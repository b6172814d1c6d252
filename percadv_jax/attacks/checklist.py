"""A robustness checklist for one evaluated model (Carlini et al. 2019, "On Evaluating
Adversarial Robustness"; Tramer et al. 2020, "On Adaptive Attacks to Adversarial Example
Defenses").

``run(logits_fn, x, y, *, attack, key, ...)`` checks an evaluation by one iterative white-box
``Attack`` on the first ``Options.examples`` examples and returns a ``Checklist`` of items, each

  {"name": str, "status": "pass" | "flag" | "skip", "evidence": str, ...numbers}

in the order of ``ITEMS``:

- ``success_vs_eps`` (a): accuracy does not rise with eps along the accuracy-vs-eps curve (when
  one is given) and the success rate reaches about 100% at a very large eps (the trust checks'
  ``large_eps`` result when there is one, else the attack itself at ``Options.large_eps``);
- ``more_iterations`` (b): the attack with twice the steps (the one step rule
  ``attacks.step_size``) changes robust accuracy by less than ``CHANGE_TOLERANCE``;
- ``more_restarts`` (c): the attack with ``Options.restarts`` random restarts, the same;
- ``single_step`` (d): FGSM is not stronger than the iterative attack;
- ``black_box`` (e): the Square Attack (``Options.square_queries`` queries, no gradients) breaks
  no example that every white-box attack leaves (more than ``BLACK_BOX_MAX`` flags possible
  gradient masking);
- ``transfer`` (f): adversarial examples of a source model (``source_adv``) fool this model no
  more often than the white-box attacks do ("skip" without a source);
- ``hyperparameters`` (g): every hyper-parameter of the evaluation and of the checklist's own
  attacks, the seed and the key (always "pass": a listing);
- ``trust_<check>``: the trust checks of ``attacks.diagnostics`` (``run_all``'s results, given as
  ``trust_checks`` or run here with ``Options.trust``; "flag" when tripped).

The checklist's attacks (``attacks_of``) run through ``evaluate``, a callback with
``robust_accuracy``'s result, so a caller can keep them in a store (the experiments'
``experiments/evaluation.py``). ``summary`` gives one line for a report, ``to_markdown`` /
``write`` a Markdown and a JSON file with one section per model.

The thresholds are ours (the papers give advice, not numbers); each is stated with its reason
beside it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from percadv_jax import checks, io
from percadv_jax.attacks import core as C
from percadv_jax.attacks import diagnostics as D
from percadv_jax.attacks.attack import Attack
from percadv_jax.attacks.evaluation import Evaluation, robust_accuracy

LogitsFn = Callable[[jax.Array], jax.Array]
EvaluateFn = Callable[..., Evaluation]

ITEMS = ("success_vs_eps", "more_iterations", "more_restarts", "single_step", "black_box",
         "transfer", "hyperparameters") + tuple(f"trust_{n}" for n in D.NAMES)
STATUSES = ("pass", "flag", "skip")
# The kinds the checklist checks: iterative white-box attacks (steps, restarts and a gradient).
ITERATIVE_KINDS = ("pgd", "apgd", "apgd_t", "fab_t")

# Ours: robust accuracy may move by less than 1 point when the budget grows (Carlini et al.'s
# advice that a converged attack does not gain from more iterations or restarts, with the point
# as the unit in which robust accuracies are reported).
CHANGE_TOLERANCE = 0.01
# Ours: "about 100%" success at a very large eps: one failure in 50 examples (the demo's
# checklist sample) is allowed.
LARGE_EPS_MIN_SUCCESS = 0.98
# Ours: along the accuracy-vs-eps curve accuracy may rise by less than 1 point from one radius
# to the next (separate evaluations of a random-start attack differ by a few examples).
CURVE_RISE_TOLERANCE = 0.01
# Ours: a single-step attack may not beat the iterative one at all (Carlini et al.: iterative
# attacks are strictly stronger; a margin would hide the sign of gradient masking).
SINGLE_STEP_TOLERANCE = 0.0
# Ours: one example broken by the black-box attack but by no white-box attack flags (Tramer et
# al.: a gradient-free attack succeeding where gradients fail points to gradient masking).
BLACK_BOX_MAX = 0
# Ours: transfer success may not exceed white-box success at all (a transferred example found
# without this model's gradients should not do better than its own gradients).
TRANSFER_TOLERANCE = 0.0


@dataclasses.dataclass(frozen=True)
class Options:
  """The checklist's budgets.

  Attributes:
    examples: the checklist uses the first ``examples`` examples.
    restarts: random restarts of the ``more_restarts`` attack (at least the evaluated attack's
      restarts + 1).
    square_queries: queries of the Square Attack (``black_box``).
    large_eps: the radius of ``success_vs_eps`` when no trust check gives one (None: the trust
      check's default, 0.5 for Linf, 0.5 sqrt(H W C) for L2).
    batch_size: examples per batch of the default ``evaluate`` (None: all at once).
    trust: the trust checks' options when ``run`` runs them (no ``trust_checks`` given); None:
      the trust items are skipped.
  """
  examples: int = 256
  restarts: int = 5
  square_queries: int = 1000
  large_eps: float | None = None
  batch_size: int | None = None
  trust: D.Options | None = D.Options()

  def __post_init__(self):
    checks.check_int(self.examples, "examples", minimum=1)
    checks.check_int(self.restarts, "restarts", minimum=2)
    checks.check_int(self.square_queries, "square_queries", minimum=1)
    if self.large_eps is not None:
      checks.check_float(self.large_eps, "large_eps", minimum=0.0, min_inclusive=False)
    checks.check_int(self.batch_size, "batch_size", minimum=1, allow_none=True)
    if self.trust is not None and not isinstance(self.trust, D.Options):
      raise TypeError(f"trust must be None or a diagnostics.Options, got "
                      f"{type(self.trust).__name__}")


@dataclasses.dataclass(frozen=True)
class Checklist:
  """One model's checklist.

  Attributes:
    n: the examples checked (the first ``n`` of the inputs).
    items: the items in the order of ``ITEMS`` (JSON-able dicts).
    x_adv: float32 [n,H,W,C], the evaluated attack's adversarial images (a transfer source for
      another model), when ``run`` was asked for them; else None.
  """
  n: int
  items: tuple[dict[str, Any], ...]
  x_adv: np.ndarray | None = None

  def to_json(self) -> dict[str, Any]:
    """``{"n", "items", "counts": {status: count}, "flagged": [names], "summary": line}``."""
    out = {"n": self.n, "items": [dict(i) for i in self.items]}
    out.update(_counts(out["items"]))
    out["summary"] = summary(out)
    return out


def _counts(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  return {"counts": {s: sum(i["status"] == s for i in items) for s in STATUSES},
          "flagged": [i["name"] for i in items if i["status"] == "flag"]}


def _item(name: str, status: str, evidence: str, **numbers: Any) -> dict[str, Any]:
  out = {"name": name, "status": status, "evidence": evidence}
  for k, v in numbers.items():
    out[k] = v.item() if isinstance(v, np.generic) else v
  return out


def _pct(a: float) -> str:
  return f"{100.0 * a:.1f}%"


def attacks_of(attack: Attack, options: Options, *, large_eps: float | None = None
               ) -> dict[str, Attack]:
  """The checklist's attacks besides the evaluated one: ``{"more_steps", "more_restarts",
  "fgsm", "square"}`` and, with ``large_eps``, ``"large_eps"`` (the attack at that radius)."""
  out = {
      "more_steps": dataclasses.replace(attack, steps=2 * attack.steps),
      "more_restarts": dataclasses.replace(attack, restarts=max(options.restarts,
                                                                attack.restarts + 1)),
      "fgsm": Attack("fgsm", eps=attack.eps, norm=attack.norm, masked=attack.masked),
      "square": Attack("square", eps=attack.eps, steps=options.square_queries, norm=attack.norm,
                       masked=attack.masked),
  }
  if large_eps is not None:
    out["large_eps"] = dataclasses.replace(attack, eps=float(large_eps))
  return out


def _check_curve(curve: Any) -> list[dict[str, float]]:
  if isinstance(curve, (str, bytes)) or not isinstance(curve, Sequence):
    raise TypeError(f"curve must be a list of records, got {type(curve).__name__}")
  out = []
  for i, r in enumerate(curve):
    if not isinstance(r, Mapping) or not {"eps", "robust", "clean"} <= set(r):
      raise ValueError(f"curve[{i}] must be a record with 'eps', 'robust' and 'clean' (an "
                       f"Evaluation.summary() with its eps), got {r!r:.80}")
    out.append({k: checks.check_float(r[k], f"curve[{i}].{k}", minimum=0.0)
                for k in ("eps", "robust", "clean")})
  return sorted(out, key=lambda r: r["eps"])


def _check_trust(trust_checks: Any) -> dict[str, dict[str, Any]]:
  if not isinstance(trust_checks, Mapping):
    raise TypeError("trust_checks must be diagnostics.run_all's dict, got "
                    f"{type(trust_checks).__name__}")
  for name, r in trust_checks.items():
    if name not in D.NAMES or not isinstance(r, Mapping) or not {"tripped", "evidence"} <= set(r):
      raise ValueError(f"trust_checks[{name!r}] is not a result of diagnostics.run_all (names "
                       f"{', '.join(D.NAMES)}, each with 'tripped' and 'evidence')")
  return {k: dict(v) for k, v in trust_checks.items()}


def _flags(value: Any, name: str, n: int) -> np.ndarray:
  a = np.asarray(value)
  if a.ndim != 1 or a.shape[0] < n or not (a.dtype == np.bool_ or (
      np.issubdtype(a.dtype, np.integer) and np.isin(a, (0, 1)).all())):
    raise ValueError(f"{name} must be bool flags [N] with N >= {n}, got dtype {a.dtype}, shape "
                     f"{a.shape}")
  return a[:n].astype(bool)


def _correct(logits_fn: LogitsFn, x: np.ndarray, y: np.ndarray, batch_size: int) -> np.ndarray:
  out = [np.asarray(C.correct(logits_fn, jax.numpy.asarray(x[i:i + batch_size]),
                              jax.numpy.asarray(y[i:i + batch_size])), bool)
         for i in range(0, len(y), batch_size)]
  return np.concatenate(out)


def run(logits_fn: LogitsFn, x: Any, y: Any, *, attack: Attack, key: jax.Array,
        mask: Any = None, white_box: Mapping[str, Any] | None = None,
        curve: Sequence[Mapping[str, Any]] | None = None,
        trust_checks: Mapping[str, Mapping[str, Any]] | None = None, source_adv: Any = None,
        source_name: str = "the source model", options: Options = Options(),
        evaluate: EvaluateFn | None = None, seed: int | None = None,
        return_adversarial: bool = False) -> Checklist:
  """The checklist of one model evaluated with ``attack`` (see the module docstring).

  Args:
    logits_fn: ``x [N,H,W,C] -> logits [N,K]`` (eval mode, deterministic).
    x: float [N,H,W,C] in [0, 1]; y: int [N] labels; the first ``n = min(N,
      options.examples)`` examples are checked.
    attack: the evaluated attack, an iterative white-box ``Attack`` (kind in
      ``ITERATIVE_KINDS``).
    key: jax.random key of the checklist's attacks.
    mask: {0,1} [N,H,W,1] foreground masks (needed when ``attack.masked``).
    white_box: ``{name: bool [N]}``: per-example survival under other white-box attacks on the
      same examples (e.g. the evaluation's PGD and APGD, ``Evaluation.survived``); they join
      the checklist's own iterative attacks in ``black_box`` and ``transfer``.
    curve: accuracy vs eps of ``attack``: records ``{"eps", "robust", "clean"}`` (an
      ``Evaluation.summary()`` with its radius, as ``experiments.evaluation.curve`` gives).
    trust_checks: ``diagnostics.run_all``'s results for this evaluation (None: run here with
      ``options.trust``, or skipped when that is None).
    source_adv: float [N,H,W,C] in [0, 1]: another model's adversarial images of the same
      examples, as this model sees them (``transfer``); None skips the item.
    source_name: the source model's name in the evidence.
    options: the budgets.
    evaluate: ``evaluate(attacks, *, key, return_adversarial) -> Evaluation`` of ``{name:
      Attack}`` on the first ``n`` examples (x, y and mask); None: ``robust_accuracy``.
    seed: the caller's seed, listed in ``hyperparameters``.
    return_adversarial: keep the evaluated attack's adversarial images (``Checklist.x_adv``).
  Returns:
    a ``Checklist``.
  Raises:
    TypeError: a wrong type (logits_fn, attack, options, evaluate, curve, trust_checks).
    ValueError: on bad input values, naming the argument.
  """
  if not callable(logits_fn):
    raise TypeError(f"logits_fn must be callable, got {type(logits_fn).__name__}")
  if not isinstance(attack, Attack):
    raise TypeError(f"attack must be an attacks.Attack, got {type(attack).__name__}")
  if attack.kind not in ITERATIVE_KINDS:
    raise ValueError(f"attack must be an iterative white-box attack (kind one of "
                     f"{', '.join(ITERATIVE_KINDS)}), got kind {attack.kind!r}")
  if attack.eot is not None:
    raise ValueError("the checklist takes a deterministic model; attack has eot set")
  if key is None:
    raise ValueError("run needs a jax.random key (key=): its attacks start at random")
  if not isinstance(options, Options):
    raise TypeError(f"options must be a checklist.Options, got {type(options).__name__}")
  if evaluate is not None and not callable(evaluate):
    raise TypeError(f"evaluate must be callable or None, got {type(evaluate).__name__}")
  checks.check_int(seed, "seed", allow_none=True)
  return_adversarial = checks.check_bool(return_adversarial, "return_adversarial")
  if attack.masked and mask is None:
    raise ValueError("attack is masked (masked=True): give the foreground mask=")
  x_n, y_n, mask_n, k = D._inputs(logits_fn, x, y, mask, options.examples)
  attack.check_num_classes(k)
  n = x_n.shape[0]
  extra = {name: _flags(v, f"white_box[{name!r}]", n) for name, v in (white_box or {}).items()}
  curve_r = None if curve is None else _check_curve(curve)
  trust = None if trust_checks is None else _check_trust(trust_checks)
  src = None
  if source_adv is not None:
    checks.check_images(source_adv, "source_adv", channels=None)
    if tuple(np.shape(source_adv)) != tuple(np.shape(x)):
      raise ValueError(f"source_adv must have the shape of x {tuple(np.shape(x))}, got "
                       f"{tuple(np.shape(source_adv))}")
    src = np.asarray(source_adv, np.float32)[:n]

  if evaluate is None:
    def evaluate(attacks, *, key, return_adversarial):  # noqa: F811
      return robust_accuracy(logits_fn, x_n, y_n, attacks, key=key, mask=mask_n,
                             batch_size=options.batch_size,
                             return_adversarial=return_adversarial)
  run_trust = trust is None and options.trust is not None
  large_eps = None
  if not run_trust and (trust is None or "large_eps" not in trust):
    large_eps = options.large_eps or (0.5 if attack.norm == "linf" else
                                      0.5 * float(np.sqrt(np.prod(x_n.shape[1:]))))
  named = attacks_of(attack, options, large_eps=large_eps)
  ev = evaluate({"attack": attack}, key=jax.random.fold_in(key, 0),
                return_adversarial=return_adversarial)
  ev_more = evaluate(named, key=jax.random.fold_in(key, 1), return_adversarial=False)
  for e, names in ((ev, ["attack"]), (ev_more, list(named))):
    if not isinstance(e, Evaluation) or e.clean.shape != (n,) or sorted(e.names) != sorted(names):
      raise ValueError(f"evaluate must return an Evaluation of {names} on the first {n} "
                       "examples")
  if run_trust:  # against the evaluated attack's outcomes
    trust = D.run_all(logits_fn, x_n, y_n, key=jax.random.fold_in(key, 2), eps=attack.eps,
                      mask=mask_n if attack.masked else None, norm=attack.norm,
                      reported=np.asarray(ev.robust)[:n],
                      options=dataclasses.replace(options.trust, max_examples=n,
                                                  large_eps=options.large_eps
                                                  or options.trust.large_eps))
  clean = ev.clean
  surv = {"attack": ev.survived["attack"], **ev_more.survived}
  acc = {name: float(s.mean()) for name, s in surv.items()}
  n_clean = int(clean.sum())

  def success(survived: np.ndarray) -> float:
    return float((clean & ~survived).sum() / n_clean) if n_clean else 0.0

  items = [_success_vs_eps(attack, large_eps, curve_r, trust, acc, clean)]
  items += [_budget("more_iterations", attack.label, named["more_steps"].label,
                    acc["attack"], acc["more_steps"]),
            _budget("more_restarts", f"{attack.label} ({attack.restarts} restart(s))",
                    f"{named['more_restarts'].restarts} restarts", acc["attack"],
                    acc["more_restarts"])]
  iterative = surv["attack"] & surv["more_steps"] & surv["more_restarts"]
  items.append(_single_step(attack, acc))
  white = iterative.copy()
  for s in extra.values():
    white &= s
  white_names = ", ".join([attack.label, named["more_steps"].label,
                           f"{named['more_restarts'].label} x{named['more_restarts'].restarts}"]
                          + list(extra))
  only = clean & ~surv["square"] & white
  items.append(_item(
      "black_box", "flag" if int(only.sum()) > BLACK_BOX_MAX else "pass",
      f"{named['square'].label} breaks {int(only.sum())} example(s) that no white-box attack "
      f"({white_names}) breaks (at most {BLACK_BOX_MAX}); black-box accuracy "
      f"{_pct(acc['square'])}, white-box {_pct(float(white.mean()))}"
      + (": a gradient-free attack finds what gradients miss (gradient masking?)"
         if int(only.sum()) > BLACK_BOX_MAX else ""),
      n_black_box_only=int(only.sum()), black_box_accuracy=acc["square"],
      white_box_accuracy=float(white.mean()), queries=named["square"].steps))
  items.append(_transfer(logits_fn, src, x_n, y_n, clean, white, success, source_name,
                         options.batch_size or n))
  items.append(_item(
      "hyperparameters", "pass",
      f"{attack.label}, eps {attack.eps:.4g} ({attack.norm}), {attack.steps} steps, "
      f"{attack.restarts} restart(s), step factor {attack.factor}, masked {attack.masked}, "
      f"seed {seed}; checklist on {n} examples",
      attack={**dataclasses.asdict(attack), "label": attack.label, "step": attack.step},
      checklist_attacks={name: repr(a) for name, a in named.items()},
      options={**dataclasses.asdict(options)}, seed=seed,
      key=np.asarray(jax.random.key_data(key)).ravel().tolist(), n=n,
      white_box=list(extra)))
  for name in D.NAMES:
    r = (trust or {}).get(name)
    if r is None:
      items.append(_item(f"trust_{name}", "skip", "trust check not run"))
    else:
      items.append({**{k: v for k, v in r.items() if k != "name"}, "name": f"trust_{name}",
                    "status": "flag" if r["tripped"] else "pass", "evidence": r["evidence"]})
  return Checklist(n=n, items=tuple(items),
                   x_adv=ev.x_adv["attack"] if return_adversarial else None)


def _success_vs_eps(attack, large_eps, curve, trust, acc, clean) -> dict[str, Any]:
  if large_eps is None:  # the trust checks' large-eps result
    big = trust["large_eps"]
    eps, big_acc, big_clean = big["eps"], big["accuracy"], big["clean_accuracy"]
    source = "the trust checks' large-eps PGD"
  else:
    eps, big_acc, big_clean = large_eps, acc["large_eps"], float(clean.mean())
    source = attack.label
  large_success = 1.0 - big_acc / big_clean if big_clean > 0 else 0.0
  rises = []
  points = []
  if curve:
    for a, b in zip(curve, curve[1:]):
      if b["robust"] > a["robust"] + CURVE_RISE_TOLERANCE:
        rises.append((a["eps"], b["eps"], b["robust"] - a["robust"]))
    points = [{"eps": r["eps"], "accuracy": r["robust"],
               "success": 1.0 - r["robust"] / r["clean"] if r["clean"] > 0 else 0.0}
              for r in curve]
  ok = large_success >= LARGE_EPS_MIN_SUCCESS and not rises
  evidence = (f"{source} at eps {eps:.3g} succeeds on {_pct(large_success)} of the correctly "
              f"classified examples (at least {_pct(LARGE_EPS_MIN_SUCCESS)})")
  if curve:
    evidence += (f"; along the curve ({len(curve)} radii up to {curve[-1]['eps']:.3g}) accuracy "
                 + ("never rises" if not rises else "rises " + ", ".join(
                     f"by {_pct(d)} from eps {e0:.3g} to {e1:.3g}" for e0, e1, d in rises)))
  if not ok:
    evidence += ": the attack does not reach every example as eps grows (gradient masking?)"
  return _item("success_vs_eps", "pass" if ok else "flag", evidence, large_eps=eps,
               large_eps_accuracy=big_acc, large_eps_success=large_success,
               curve=points, curve_rises=len(rises), threshold=LARGE_EPS_MIN_SUCCESS)


def _budget(name: str, base: str, more: str, acc: float, acc_more: float) -> dict[str, Any]:
  change = acc_more - acc
  ok = abs(change) < CHANGE_TOLERANCE
  evidence = (f"robust accuracy {_pct(acc)} with {base}, {_pct(acc_more)} with {more} (change "
              f"{100 * change:+.1f} points; less than {100 * CHANGE_TOLERANCE:.0f} expected)")
  if not ok:
    evidence += (": the attack has not converged; the reported accuracy overstates robustness"
                 if change < 0 else ": the accuracy varies between runs of the attack")
  return _item(name, "pass" if ok else "flag", evidence, accuracy=acc, accuracy_more=acc_more,
               change=change, tolerance=CHANGE_TOLERANCE)


def _single_step(attack: Attack, acc: Mapping[str, float]) -> dict[str, Any]:
  best = min(acc["attack"], acc["more_steps"], acc["more_restarts"])
  ok = acc["fgsm"] >= best - SINGLE_STEP_TOLERANCE
  evidence = (f"FGSM leaves {_pct(acc['fgsm'])}, the iterative attacks (best of {attack.label}, "
              f"more steps, more restarts) {_pct(best)}")
  if not ok:
    evidence += ": one step beats the iterative attack (a sign of gradient masking)"
  return _item("single_step", "pass" if ok else "flag", evidence, fgsm_accuracy=acc["fgsm"],
               iterative_accuracy=best, tolerance=SINGLE_STEP_TOLERANCE)


def _transfer(logits_fn, src, x, y, clean, white, success, source_name, batch_size
              ) -> dict[str, Any]:
  if src is None:
    return _item("transfer", "skip", "no source model's adversarial examples given")
  survived = clean & _correct(logits_fn, src, y, batch_size)
  t_success, w_success = success(survived), success(white)
  only = int((clean & ~survived & white).sum())
  ok = t_success <= w_success + TRANSFER_TOLERANCE
  linf = float(np.max(np.abs(src - x), initial=0.0))
  evidence = (f"{source_name}'s adversarial examples fool {_pct(t_success)} of the correctly "
              f"classified examples, the white-box attacks {_pct(w_success)} ({only} example(s) "
              f"fooled only by transfer)")
  if not ok:
    evidence += ": transfer beats this model's own gradients (gradient masking?)"
  return _item("transfer", "pass" if ok else "flag", evidence, transfer_success=t_success,
               white_box_success=w_success, n_transfer_only=only, source=source_name,
               source_linf_max=linf, tolerance=TRANSFER_TOLERANCE)


def _as_json(checklist: Checklist | Mapping[str, Any]) -> dict[str, Any]:
  if isinstance(checklist, Checklist):
    return checklist.to_json()
  if not isinstance(checklist, Mapping) or "items" not in checklist:
    raise TypeError("a checklist must be a Checklist or its to_json() dict, got "
                    f"{type(checklist).__name__}")
  items = list(checklist["items"])
  for i in items:
    if not isinstance(i, Mapping) or i.get("status") not in STATUSES or "name" not in i:
      raise ValueError(f"checklist item {i!r:.80} has no name or a status outside {STATUSES}")
  return {**checklist, "items": items, **_counts(items)}


def summary(checklist: Checklist | Mapping[str, Any]) -> str:
  """One line: ``"checklist: N pass, M flag (items flagged)"`` (and the skipped items)."""
  c = _as_json(checklist)
  counts, flagged = c["counts"], c["flagged"]
  line = f"checklist: {counts['pass']} pass, {counts['flag']} flag"
  if flagged:
    line += f" ({', '.join(flagged)})"
  if counts["skip"]:
    line += ", " + f"{counts['skip']} skipped (" + ", ".join(
        i["name"] for i in c["items"] if i["status"] == "skip") + ")"
  return line


def _cell(text: Any) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(checklists: Mapping[str, Checklist | Mapping[str, Any]], *,
                title: str = "Robustness checklist",
                labels: Mapping[str, str] | None = None) -> str:
  """Markdown with one section per model (headed ``labels[model]``, default the model's name):
  its summary line and a table item | status | evidence."""
  if not isinstance(checklists, Mapping):
    raise TypeError(f"checklists must be a dict {{model: checklist}}, got "
                    f"{type(checklists).__name__}")
  lines = [f"# {title}", "",
           "Items after Carlini et al. 2019 and Tramer et al. 2020; thresholds are ours "
           "(`percadv_jax/attacks/checklist.py`).", ""]
  for model, ck in checklists.items():
    c = _as_json(ck)
    lines += [f"## {(labels or {}).get(model, model)}", "",
              f"{summary(c)}; {c.get('n', '?')} examples.", "",
              "| item | status | evidence |", "|---|---|---|"]
    lines += [f"| {i['name']} | {i['status']} | {_cell(i['evidence'])} |" for i in c["items"]]
    lines.append("")
  return "\n".join(lines)


def write(workdir: str, checklists: Mapping[str, Checklist | Mapping[str, Any]], *,
          title: str = "Robustness checklist",
          labels: Mapping[str, str] | None = None) -> dict[str, str]:
  """Writes ``workdir/checklist.json`` (``{model: to_json()}``) and ``workdir/checklist.md``
  (``to_markdown``) atomically; returns their paths ``{"json", "md"}``."""
  data = {m: _as_json(c) for m, c in checklists.items()}
  for m, c in data.items():
    c["summary"] = summary(c)
  paths = {"json": os.path.join(workdir, "checklist.json"),
           "md": os.path.join(workdir, "checklist.md")}
  io.write_json(paths["json"], data)
  with io.atomic_open(paths["md"]) as f:
    f.write(to_markdown(data, title=title, labels=labels))
  return paths
