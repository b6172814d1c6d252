"""No import cycles in ``percadv_jax``: the module import graph, read from the source, is acyclic.

The graph has one node per module under ``percadv_jax/`` (a package is its ``__init__``) and an
edge for every ``import`` / ``from ... import`` statement anywhere in the module, function-level
imports included (they only defer a cycle, they do not remove it). ``from pkg import name`` is an
edge to ``pkg.name`` when that is a module, else to ``pkg``. Imports under ``if TYPE_CHECKING:``
never run and are left out.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "percadv_jax"


def _modules(root: str, package: str) -> dict[str, str]:
  """Dotted module name -> file path, for every ``.py`` file of ``package`` under ``root``."""
  out = {}
  base = os.path.join(root, package)
  for dirpath, dirnames, filenames in os.walk(base):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
    for f in sorted(filenames):
      if not f.endswith(".py"):
        continue
      rel = os.path.relpath(os.path.join(dirpath, f), root)[:-3].split(os.sep)
      if rel[-1] == "__init__":
        rel = rel[:-1]
      out[".".join(rel)] = os.path.join(dirpath, f)
  return out


def _is_type_checking(node: ast.If) -> bool:
  t = node.test
  return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
      isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
  """Every Import / ImportFrom node of ``tree`` (at any depth), except TYPE_CHECKING blocks."""
  stack = [tree]
  while stack:
    node = stack.pop()
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      yield node
    for child in ast.iter_child_nodes(node):
      if isinstance(child, ast.If) and _is_type_checking(child):
        stack.extend(child.orelse)
        continue
      stack.append(child)


def import_graph(root: str, package: str) -> dict[str, set[str]]:
  """module -> the modules of ``package`` it imports (edges within the package only)."""
  modules = _modules(root, package)
  graph: dict[str, set[str]] = {m: set() for m in modules}
  for mod, path in modules.items():
    is_pkg = os.path.basename(path) == "__init__.py"
    with open(path) as f:
      tree = ast.parse(f.read(), filename=path)
    for node in _import_nodes(tree):
      targets = []
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      else:
        if node.level:
          parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
          parts = parts[:len(parts) - (node.level - 1)]
          base = ".".join(parts + ([node.module] if node.module else []))
        else:
          base = node.module or ""
        for a in node.names:
          sub = f"{base}.{a.name}"
          targets.append(sub if sub in modules else base)
      for t in targets:
        # `import a.b.c` binds a module; the deepest module of the package that it names counts.
        while t and t not in modules:
          t = t.rpartition(".")[0]
        if t and t != mod:
          graph[mod].add(t)
  return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one node
  (Tarjan's algorithm, iterative)."""
  index, low, on_stack, stack, comps = {}, {}, set(), [], []
  counter = 0
  for start in sorted(graph):
    if start in index:
      continue
    work = [(start, iter(sorted(graph[start])))]
    index[start] = low[start] = counter
    counter += 1
    stack.append(start)
    on_stack.add(start)
    while work:
      v, it = work[-1]
      w = next(it, None)
      if w is not None:
        if w not in index:
          index[w] = low[w] = counter
          counter += 1
          stack.append(w)
          on_stack.add(w)
          work.append((w, iter(sorted(graph[w]))))
        elif w in on_stack:
          low[v] = min(low[v], index[w])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[v])
      if low[v] == index[v]:
        comp = []
        while True:
          w = stack.pop()
          on_stack.discard(w)
          comp.append(w)
          if w == v:
            break
        if len(comp) > 1:
          comps.append(set(comp))
  cycles = []
  for comp in comps:
    # A shortest cycle through the component's smallest module (breadth-first search).
    first = min(comp)
    prev = {first: None}
    queue = [first]
    found = None
    while queue and found is None:
      v = queue.pop(0)
      for w in sorted(graph[v] & comp):
        if w == first:
          found = v
          break
        if w not in prev:
          prev[w] = v
          queue.append(w)
    path = [first]
    v = found
    while v is not None and v != first:
      path.append(v)
      v = prev[v]
    cycles.append([first] + path[1:][::-1] + [first])
  return sorted(cycles)


def test_no_import_cycles():
  graph = import_graph(ROOT, PACKAGE)
  assert len(graph) > 20 and any(graph.values())   # the package was found and read
  cycles = find_cycles(graph)
  assert not cycles, "import cycles in percadv_jax: " + "; ".join(
      " -> ".join(c) for c in cycles)


def _write(root, files):
  for rel, text in files.items():
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(text)


def test_cycle_finder_sees_function_level_and_relative_imports(tmp_path):
  _write(str(tmp_path), {
      "pkg/__init__.py": "",
      "pkg/sub/__init__.py": "from pkg.sub.a import f\n",
      "pkg/sub/a.py": "from pkg.sub import b\n",
      "pkg/sub/b.py": "def g():\n  from . import c\n",
      "pkg/sub/c.py": "import pkg.sub.a as a\n",
      "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n  from pkg import e\n",
      "pkg/e.py": "from pkg import d\n",
  })
  graph = import_graph(str(tmp_path), "pkg")
  assert graph["pkg.sub.b"] == {"pkg.sub.c"}
  assert graph["pkg.sub"] == {"pkg.sub.a"}
  assert graph["pkg.d"] == set()
  assert find_cycles(graph) == [["pkg.sub.a", "pkg.sub.b", "pkg.sub.c", "pkg.sub.a"]]


@pytest.mark.parametrize("edges,expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b", "c"}, "b": {"c"}, "c": {"a"}, "x": {"y"}, "y": {"x"}},
     [["a", "c", "a"], ["x", "y", "x"]]),
])
def test_find_cycles(edges, expected):
  assert find_cycles(edges) == expected


def private_attacks_imports(root: str, dirs=("percadv_jax", "experiments", "tests")
                            ) -> list[str]:
  """``"file:line: module"`` for every import of a private ``percadv_jax.attacks._*`` module (or
  name) from outside ``percadv_jax/attacks``: the shared attack core is ``attacks.core``."""
  bad = []
  inside = os.path.join(root, "percadv_jax", "attacks") + os.sep
  for d in dirs:
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, d)):
      dirnames[:] = [x for x in dirnames if not x.startswith((".", "__pycache__"))]
      for f in filenames:
        path = os.path.join(dirpath, f)
        if not f.endswith(".py") or path.startswith(inside):
          continue
        with open(path) as fh:
          tree = ast.parse(fh.read(), path)
        for node in _import_nodes(tree):
          if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
          else:
            mod = node.module or ""
            names = [f"{mod}.{a.name}" for a in node.names]
          for name in names:
            parts = name.split(".")
            if parts[:2] == ["percadv_jax", "attacks"] and any(p.startswith("_")
                                                               for p in parts[2:]):
              bad.append(f"{os.path.relpath(path, root)}:{node.lineno}: {name}")
  return bad


def test_no_private_attacks_module_is_imported_from_outside():
  bad = private_attacks_imports(ROOT)
  assert not bad, "import the public percadv_jax.attacks (or attacks.core):\n" + "\n".join(bad)


def test_private_import_finder_sees_both_forms(tmp_path):
  _write(str(tmp_path), {
      "percadv_jax/attacks/_x.py": "",
      "percadv_jax/attacks/pgd.py": "from percadv_jax.attacks import _x\n",
      "percadv_jax/cam/a.py": ("from percadv_jax.attacks import _x\n"
                               "import percadv_jax.attacks.core\n"),
      "experiments/b.py": "def f():\n  import percadv_jax.attacks._x as x\n",
  })
  assert private_attacks_imports(str(tmp_path)) == [
      "percadv_jax/cam/a.py:1: percadv_jax.attacks._x",
      "experiments/b.py:2: percadv_jax.attacks._x"]
