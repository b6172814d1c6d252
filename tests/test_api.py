"""API conventions of the whole library, checked by introspection (in dm_pix's style).

For the public API — every name a subpackage exports (``percadv_jax.attacks.pgd``,
``percadv_jax.cam.agreement``, ...: its ``__all__``, or its public names) and the public
functions of the top-level modules ``parallel`` and ``precision``, with the
public methods of exported classes (the helpers of ``tests/perceptual/test_api.py``): options
(parameters with defaults) are keyword-only, a function that draws JAX random numbers takes them
from a parameter named ``key``, and every one has a docstring; one that takes or returns arrays
states their shapes.

A few names are exempt from one rule, each for the reason given in ``KEYWORD_ONLY_EXCEPTIONS`` and
``KEY_EXCEPTIONS``; ``test_the_exceptions_still_hold`` checks that every exempt name is still
exported and that the reason is still true of its code.
"""

from __future__ import annotations

import pytest

import percadv_jax
from tests.perceptual import test_api as conventions

import importlib
import inspect
import types

SUBPACKAGES = ("attacks", "cam", "data", "models", "perceptual", "train")
MODULES = ("parallel", "precision")  # checks and io are the library's own plumbing


def exported_api() -> list[tuple[str, object, str]]:
  """``(name, object, kind)`` of the exported functions, classes and their public methods."""
  out, seen = [], set()
  for name in SUBPACKAGES:
    pkg = importlib.import_module(f"percadv_jax.{name}")
    names = getattr(pkg, "__all__", None) or [n for n in vars(pkg) if not n.startswith("_")]
    for n in names:
      obj = getattr(pkg, n)
      if (inspect.isfunction(obj) or inspect.isclass(obj)) and id(obj) not in seen:
        seen.add(id(obj))
        out += conventions.public_api([_Single(obj)])
  out += conventions.public_api([importlib.import_module(f"percadv_jax.{m}") for m in MODULES])
  return out


class _Single(types.ModuleType):
  """A one-object module view, so ``public_api`` lists an exported object and its methods."""

  def __init__(self, obj):
    super().__init__(obj.__module__)
    setattr(self, obj.__name__, obj)


API = exported_api()

# Options that stay positional: name -> why.
KEYWORD_ONLY_EXCEPTIONS = {
    "percadv_jax.data.source.DatasetInfo.get":
        "implements ``Mapping.get(key, default)``, so code that reads ``info`` as a dict or as a "
        "DatasetInfo (``train.loop.info_get``) calls both the same way",
}
# Functions without a JAX ``key``: name -> why.
KEY_EXCEPTIONS = {
    "percadv_jax.models.init.random_variables":
        "draws the weights with NumPy (``np.random.default_rng(seed)``), no JAX random numbers; "
        "its one ``jax.random`` call makes a placeholder key for ``jax.eval_shape``, which draws "
        "nothing",
    "percadv_jax.data.source.batch_indices":
        "the data order is a NumPy permutation ``default_rng([seed, epoch])``: an integer seed, "
        "no JAX random numbers",
    "percadv_jax.data.source.batches":
        "yields the batches in ``batch_indices``' order (``train.fit``'s), so it takes its "
        "integer seed",
    "percadv_jax.train.loop.build":
        "a training run is determined by its ``TrainConfig`` (written to the workdir and checked "
        "on resume): the initialisation key is ``PRNGKey(config.seed)`` by design",
    "percadv_jax.train.steps.train_step":
        "the key travels in ``TrainState.key`` (split every step and checkpointed with the "
        "state), so the step stays a pure ``(state, batch) -> (state, metrics)`` function",
}
# Of KEY_EXCEPTIONS, those whose randomness is NumPy's.
NUMPY_SEEDED = ("percadv_jax.models.init.random_variables", "percadv_jax.data.source.batch_indices")


def _except(api, names):
  return [(q, o, k) for q, o, k in api if q not in names]


def keyword_only_violations(api) -> list[str]:
  """Options are keyword-only (``KEYWORD_ONLY_EXCEPTIONS`` aside)."""
  return conventions.keyword_only_violations(_except(api, KEYWORD_ONLY_EXCEPTIONS))


def key_violations(api) -> list[str]:
  """Random functions take ``key`` (``KEY_EXCEPTIONS`` aside)."""
  return key_rule_violations(_except(api, KEY_EXCEPTIONS))


def key_rule_violations(api) -> list[str]:
  """Random functions take ``key`` (by that name; first or keyword-only as the attacks)."""
  bad = []
  for qual, obj, kind in api:
    if kind not in ("function", "method"):
      continue
    names = [p.name for p in conventions._params(obj)]
    for n in names:
      if n in conventions.RANDOM_PARAM_NAMES:
        bad.append(f"{qual}: randomness must come from a parameter named 'key', not {n!r}")
    if conventions._uses_randomness(obj) and "key" not in names:
      bad.append(f"{qual}: uses jax.random but takes no `key`")
  return bad


def test_the_api_was_found():
  names = {q for q, _, _ in API}
  for expected in ("percadv_jax.attacks.pgd.pgd", "percadv_jax.attacks.evaluation.robust_accuracy",
                   "percadv_jax.attacks.attack.Attack",
                   "percadv_jax.cam.metrics.agreement", "percadv_jax.parallel.map_examples",
                   "percadv_jax.data.source.to_arrays", "percadv_jax.train.loop.fit"):
    assert expected in names
  assert len(API) > 100


@pytest.mark.parametrize("check", [keyword_only_violations, key_violations,
                                   conventions.docstring_violations])
def test_library_api_conventions(check):
  bad = check(API)
  assert not bad, f"{len(bad)} violations:\n" + "\n".join(bad)


def test_the_exceptions_still_hold():
  """Every exempt name is exported and still breaks the rule it is exempt from, for its reason."""
  api = {q: o for q, o, _ in API}
  for qual in (*KEYWORD_ONLY_EXCEPTIONS, *KEY_EXCEPTIONS):
    assert qual in api, f"{qual} is exempt from a rule but no longer exported: drop the exception"
  for qual in KEYWORD_ONLY_EXCEPTIONS:
    assert conventions.keyword_only_violations([(qual, api[qual], "method")]), qual
  for qual in KEY_EXCEPTIONS:
    assert key_rule_violations([(qual, api[qual], "function")]), qual
  for qual in NUMPY_SEEDED:
    src = inspect.getsource(api[qual])
    assert "np.random.default_rng(" in src, qual
    assert "seed" in [p.name for p in conventions._params(api[qual])], qual
  # random_variables' only jax.random use is the placeholder key under jax.eval_shape.
  src = inspect.getsource(api["percadv_jax.models.init.random_variables"])
  assert src.count("jax.random") == 1 and "jax.eval_shape(module.init, jax.random.key(0)" in src
