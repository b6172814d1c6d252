"""README.md and docs/*.md: the links resolve, the README's figures are docs/results.md's, and the
README's Python example runs."""

import contextlib
import glob
import io
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
RESULTS = os.path.join(ROOT, "docs", "results.md")


def _read(path: str) -> str:
  with open(path) as f:
    return f.read()


def test_relative_links_resolve():
  for path in [README, *glob.glob(os.path.join(ROOT, "docs", "*.md"))]:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _read(path)):
      if "://" in target:
        continue
      assert os.path.exists(os.path.join(os.path.dirname(path), target)), (path, target)


def _table4_pgd() -> dict[str, str]:
  """PGD column of the masks study's table in docs/results.md, by model."""
  rows = re.findall(r"^\| (Full image|Masked \(foreground only\)), (natural|adversarial) training "
                    r"\| [\d.]+ \| ([\d.]+) \|", _read(RESULTS), re.M)
  assert len(rows) == 4
  return {f"{where.split()[0].lower()}_{how}": pgd for where, how, pgd in rows}


def test_readme_headline_is_the_results_table():
  pgd = _table4_pgd()
  text = " ".join(_read(README).split())
  expected = (f"PGD-10 accuracy is {pgd['full_natural']}% (natural training) and "
              f"{pgd['full_adversarial']}% (adversarial training) on full images, and "
              f"{pgd['masked_natural']}% and {pgd['masked_adversarial']}% on foreground-masked "
              "images")
  assert expected in text


def test_readme_example_runs():
  text = _read(README)
  block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
  assert len(block.strip().splitlines()) <= 12
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(block, README, "exec"), {})  # noqa: S102 - the README's own example
  lines = out.getvalue().splitlines()
  assert lines[0].startswith("accuracy under Linf PGD-10:")
  ssim = float(lines[1].split(":")[1])
  assert 0.9 < ssim < 1.0  # eps 8/255 moves the images, but only a little
