"""API conventions of ``percadv_jax.perceptual``, checked by introspection (in dm_pix's style).

For every public function of the package's modules and every public method of their public
classes (``__init__`` of dataclasses aside):

* options are keyword-only: every parameter with a default value is keyword-only;
* randomness comes from an explicit ``key``: a function that uses ``jax.random`` takes a parameter
  named ``key`` (its first one) and no function takes ``rng`` / ``seed``-style parameters;
* every public function, method, property and class has a docstring, and the docstring of a
  function with array inputs or outputs states their shapes (``[N,H,W,C]``, ``[N]``, ``[...]``).

The helpers take a list of modules, so other packages can be checked the same way.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import percadv_jax.perceptual

RANDOM_PARAM_NAMES = {"rng", "prng", "prng_key", "rng_key", "random_key", "seed", "keys"}
# Parameter names that hold arrays in this code base (the annotation may be absent).
ARRAY_PARAM_NAMES = {"x", "y", "d", "g", "d0", "mask", "v", "lin", "xt", "q", "mu", "pp", "ap",
                     "m", "stat", "val", "cells", "base", "logits", "z", "images"}
SHAPE = re.compile(r"\[[^\]\[]*[A-Za-z.][^\]\[]*\]")


def package_modules(package) -> list:
  """The package and all its submodules, imported."""
  mods = [package]
  for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    mods.append(importlib.import_module(info.name))
  return mods


def public_api(modules) -> list[tuple[str, object, str]]:
  """``(qualified name, object, kind)`` for the public functions, classes, methods and properties
  defined in ``modules`` (kind: "function", "class", "method" or "property")."""
  out = []
  for mod in modules:
    for name, obj in sorted(vars(mod).items()):
      if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
        continue
      qual = f"{mod.__name__}.{name}"
      if inspect.isclass(obj):
        out.append((qual, obj, "class"))
        for mname, member in sorted(vars(obj).items()):
          if mname.startswith("_"):
            continue
          if isinstance(member, property):
            out.append((f"{qual}.{mname}", member, "property"))
          elif isinstance(member, (staticmethod, classmethod)):
            out.append((f"{qual}.{mname}", member.__func__, "method"))
          elif inspect.isfunction(member):
            out.append((f"{qual}.{mname}", member, "method"))
      elif callable(obj):
        out.append((qual, obj, "function"))
  return out


def _params(fn):
  params = list(inspect.signature(fn).parameters.values())
  return [p for p in params if p.name not in ("self", "cls")]


def _has_arrays(fn) -> bool:
  sig = inspect.signature(fn)
  ann = [str(p.annotation) for p in sig.parameters.values()] + [str(sig.return_annotation)]
  if any("Array" in a or "ndarray" in a for a in ann):
    return True
  return any(p.name in ARRAY_PARAM_NAMES for p in sig.parameters.values())


def _uses_randomness(fn) -> bool:
  try:
    src = inspect.getsource(inspect.unwrap(fn))
  except (OSError, TypeError):
    return False
  return bool(re.search(r"\b(jax\.random|jrandom|random\.(split|normal|uniform|fold_in|bits))\b",
                        src))


def keyword_only_violations(api) -> list[str]:
  bad = []
  for qual, obj, kind in api:
    if kind not in ("function", "method"):
      continue
    for p in _params(obj):
      if p.default is not inspect.Parameter.empty and p.kind != p.KEYWORD_ONLY:
        bad.append(f"{qual}: option {p.name!r} has a default but is not keyword-only")
  return bad


def key_violations(api) -> list[str]:
  bad = []
  for qual, obj, kind in api:
    if kind not in ("function", "method"):
      continue
    names = [p.name for p in _params(obj)]
    for n in names:
      if n in RANDOM_PARAM_NAMES:
        bad.append(f"{qual}: randomness must come from a parameter named 'key', not {n!r}")
    if _uses_randomness(obj) and (not names or names[0] != "key"):
      bad.append(f"{qual}: uses jax.random but does not take `key` as its first parameter")
    if "key" in names and names[0] != "key":
      bad.append(f"{qual}: `key` must be the first parameter")
  return bad


def docstring_violations(api) -> list[str]:
  bad = []
  for qual, obj, kind in api:
    doc = inspect.getdoc(obj.fget if kind == "property" else obj)
    if kind == "class" and doc == inspect.getdoc(object):
      doc = None
    if not doc:
      bad.append(f"{qual}: no docstring")
    elif kind in ("function", "method") and _has_arrays(obj) and not SHAPE.search(doc):
      bad.append(f"{qual}: takes or returns arrays but its docstring states no shape "
                 f"(e.g. [N,H,W,C])")
  return bad


API = public_api(package_modules(percadv_jax.perceptual))


def test_the_api_was_found():
  names = {q for q, _, _ in API}
  for expected in ("percadv_jax.perceptual.ssim.ssim", "percadv_jax.perceptual.solver.project",
                   "percadv_jax.perceptual.solver.solve_linear",
                   "percadv_jax.perceptual.attack.ssim_attack",
                   "percadv_jax.perceptual.ball.QualityBall.violation",
                   "percadv_jax.perceptual.ball.QualityBall.luminance",
                   "percadv_jax.perceptual.admm.solve"):
    assert expected in names
  assert len(API) > 35


@pytest.mark.parametrize("check", [keyword_only_violations, key_violations, docstring_violations])
def test_perceptual_api_conventions(check):
  bad = check(API)
  assert not bad, "\n".join(bad)


def test_the_checks_catch_violations(tmp_path):
  """Each rule flags a function written against it (a module written for the test)."""
  import importlib.util
  path = tmp_path / "fake_api.py"
  path.write_text('''
import jax
def positional_option(x, scale=1.0):
  """Scales x [N]."""
def random_without_key(x):
  """Noise like x [N]."""
  return jax.random.normal(jax.random.PRNGKey(0), x.shape)
def seeded(x, *, seed=0):
  """Noise like x [N]."""
def no_shapes(x):
  """Returns a transformed copy of x."""
def ok(key, x, *, scale=1.0):
  """Noise like x [N,H,W,C]."""
  return jax.random.normal(key, x.shape) * scale
class Undocumented:
  pass
''')
  spec = importlib.util.spec_from_file_location("fake_api", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  api = public_api([mod])
  assert {q for q, _, _ in api} == {f"fake_api.{n}" for n in (
      "positional_option", "random_without_key", "seeded", "no_shapes", "ok", "Undocumented")}
  kw, key, doc = keyword_only_violations(api), key_violations(api), docstring_violations(api)
  assert kw == ["fake_api.positional_option: option 'scale' has a default but is not keyword-only"]
  assert sorted(b.split(":")[0] for b in key) == ["fake_api.random_without_key", "fake_api.seeded"]
  assert sorted(b.split(":")[0] for b in doc) == ["fake_api.Undocumented", "fake_api.no_shapes"]
