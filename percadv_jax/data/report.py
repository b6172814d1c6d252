"""One call that writes a dataset's descriptive artefacts: Table 1, foreground share, figure.

    from percadv_jax.data import report
    out = report.write_dataset_artefacts({"train": train, "test": test}, f"{workdir}/data")
    # -> data/table1.{md,csv}, data/foreground_share.{md,csv}, data/examples_<name>.png
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from percadv_jax import io as pio
from percadv_jax.data import figures, stats


def write_dataset_artefacts(sources: Mapping[str, Any], out_dir: str, *,
                            figure_split: str | None = None, per_class: int = 2,
                            max_classes: int | None = 8, seed: int = 0, digits: int = 4,
                            subsets: Mapping[str, Any] | None = None,
                            reference: Mapping[str, Mapping[str, Any]] | None = None
                            ) -> dict[str, Any]:
  """Writes Table 1, the foreground-pixel share and an example figure of a dataset.

  Args:
    sources: split name -> source (e.g. ``{"train": train, "test": test}``), same classes.
    out_dir: folder to write into (created).
    figure_split: the split drawn in the figure (default: the last, usually ``"test"``).
    per_class, max_classes, seed: the figure's examples (see
      :func:`percadv_jax.data.figures.choose_examples`).
    digits: decimals of the foreground-share table.
    subsets, reference: Table 1's subset and reference columns (see
      :func:`percadv_jax.data.stats.table1`).

  Returns:
    ``{"table1": rows, "foreground_share": rows, "files": {"table1": "<out_dir>/table1.md",
    "foreground_share": ".../foreground_share.md", "figure": ".../examples_<name>.png"}}``
    (each table also as ``.csv`` beside its ``.md``).
  """
  if not isinstance(sources, Mapping) or not sources:
    raise ValueError("sources must be a non-empty mapping split name -> source")
  figure_split = list(sources)[-1] if figure_split is None else figure_split
  if figure_split not in sources:
    raise ValueError(f"figure_split {figure_split!r} is not among the splits {list(sources)}")
  os.makedirs(out_dir, exist_ok=True)
  table1, columns = stats.table1(sources, subsets=subsets, reference=reference)
  pio.write_table(os.path.join(out_dir, "table1"), table1, columns=columns)
  share = stats.foreground_share_rows(sources)
  pio.write_table(os.path.join(out_dir, "foreground_share"), share,
                  columns=list(stats.FOREGROUND_COLUMNS), digits=digits)
  src = sources[figure_split]
  fig_path = os.path.join(out_dir, f"examples_{src.info.name}.png")
  figures.example_figure(src, fig_path, per_class=per_class, max_classes=max_classes, seed=seed)
  return {"table1": table1, "foreground_share": share,
          "files": {"table1": os.path.join(out_dir, "table1.md"),
                    "foreground_share": os.path.join(out_dir, "foreground_share.md"),
                    "figure": fig_path}}
