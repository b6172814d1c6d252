"""The datasets' descriptive statistics, as plain rows for ``percadv_jax.io.write_table``.

* :func:`class_counts`: the masks paper's Table 1, examples per class and split, with names;
  :func:`table1` adds columns for subsets of a split (the images a study draws) and for reference
  counts (a paper's, the official ones) with our count minus theirs.
* :func:`foreground_share`: the share of foreground (mask) pixels per example, summarised over a
  source (mean, std, min, median, max); :func:`foreground_share_rows` does several sources.

Every function takes *sources* (``len(src)``, ``src[i]``, ``src.info``). Array-backed sources
(prepared GTSRB-IC / COCO-IC, synthetic signs) are read through their ``labels`` / ``masks``
arrays; other sources (TFDS, image folders) are iterated example by example.

    from percadv_jax import data, io
    from percadv_jax.data import stats
    train, test = (data.load("gtsrb_ic", split=s, data_dir=D) for s in ("train", "test"))
    io.write_table(f"{workdir}/table1", stats.class_counts({"train": train, "test": test}))
    io.write_table(f"{workdir}/foreground_share",
                   stats.foreground_share_rows({"train": train, "test": test}))
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def _check_sources(sources: Mapping[str, Any]) -> None:
  if not isinstance(sources, Mapping) or not sources:
    raise ValueError("sources must be a non-empty mapping split name -> source")


def source_labels(src: Any) -> np.ndarray:
  """int64 [N]: every example's label (from ``src.labels`` when it has them)."""
  labels = getattr(src, "labels", None)
  if labels is not None and len(labels) == len(src):
    return np.asarray(labels, np.int64)
  return np.asarray([int(src[i]["label"]) for i in range(len(src))], np.int64)


def foreground_fractions(src: Any) -> np.ndarray:
  """float64 [N]: the share of mask pixels (value 1) in every example's mask."""
  masks = getattr(src, "masks", None)
  if masks is not None and len(masks) == len(src):
    m = np.asarray(masks)
    return m.reshape(len(m), -1).astype(bool).mean(1).astype(np.float64)
  return np.asarray([np.asarray(src[i]["mask"]).astype(bool).mean() for i in range(len(src))],
                    np.float64)


def class_counts(sources: Mapping[str, Any], *, total_row: bool = True
                 ) -> list[dict[str, Any]]:
  """Table 1: examples per class and split.

  Args:
    sources: split name -> source, e.g. ``{"train": train, "test": test}`` (column order).
      All must have the same ``info.class_names``.
    total_row: append a row ``class="total"`` with the column sums.

  Returns:
    rows ``{"label": int, "class": str, <split>: int, ..., "total": int}``, one per class in
    label order (classes without examples included, with zeros), then the total row
    (``label = ""``).

  Raises:
    ValueError: no sources, different class lists, or a label outside ``[0, num_classes)``.
  """
  _check_sources(sources)
  names = None
  for split, src in sources.items():
    these = tuple(src.info.class_names)
    if names is None:
      names = these
    elif these != names:
      raise ValueError(f"split {split!r} has classes {list(these)[:5]}... but the first split "
                       f"has {list(names)[:5]}...; Table 1 needs one class list")
  counts = {}
  for split, src in sources.items():
    labels = source_labels(src)
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
      raise ValueError(f"split {split!r} has labels outside [0, {len(names)})")
    counts[split] = np.bincount(labels, minlength=len(names))
  rows = []
  for c, name in enumerate(names):
    row: dict[str, Any] = {"label": c, "class": name}
    for split in sources:
      row[split] = int(counts[split][c])
    row["total"] = int(sum(counts[s][c] for s in sources))
    rows.append(row)
  if total_row:
    row = {"label": "", "class": "total"}
    for split in sources:
      row[split] = int(counts[split].sum())
    row["total"] = int(sum(counts[s].sum() for s in sources))
    rows.append(row)
  return rows


def foreground_share(src: Any, *, per_class: bool = False) -> dict[str, Any]:
  """The share of foreground pixels per example, summarised over ``src``.

  Shares are measured on the source's masks at its image size (the cached resolution for
  prepared datasets). A source without masks (``info.has_masks`` False) has share 1 everywhere.

  Args:
    src: a source.
    per_class: add ``"per_class"``: one dict per class (``label``, ``class``, ``examples``,
      ``mean``, ``std``), ``mean``/``std`` ``None`` for classes without examples.

  Returns:
    ``{"dataset", "split", "mask_source", "has_masks", "examples", "mean", "std", "min",
    "median", "max"}`` (shares in [0, 1]; ``std`` is the population standard deviation).

  Raises:
    ValueError: the source is empty.
  """
  n = len(src)
  if n == 0:
    raise ValueError(f"{src.info.name} {src.info.split}: the source is empty")
  f = foreground_fractions(src)
  out: dict[str, Any] = {
      "dataset": src.info.name, "split": src.info.split, "mask_source": src.info.mask_source,
      "has_masks": bool(src.info.has_masks), "examples": int(n), "mean": float(f.mean()),
      "std": float(f.std()), "min": float(f.min()), "median": float(np.median(f)),
      "max": float(f.max())}
  if per_class:
    labels = source_labels(src)
    rows = []
    for c, name in enumerate(src.info.class_names):
      fc = f[labels == c]
      rows.append({"label": c, "class": name, "examples": int(fc.size),
                   "mean": float(fc.mean()) if fc.size else None,
                   "std": float(fc.std()) if fc.size else None})
    out["per_class"] = rows
  return out


def table1(sources: Mapping[str, Any], *, subsets: Mapping[str, Any] | None = None,
           reference: Mapping[str, Mapping[str, Any]] | None = None
           ) -> tuple[list[dict[str, Any]], list[str]]:
  """Table 1 (:func:`class_counts`) with subset and reference columns.

  Args:
    sources: split name -> source (see :func:`class_counts`).
    subsets: split name -> indices into that split's source: adds the column ``"<split>
      (<n> drawn)"`` counting those examples per class (e.g. the training images a study draws).
    reference: split name -> ``{"name": column name, "per_class": {class name: count},
      "total": count or None}``: adds the column ``name`` (blank where the reference gives no
      count) and ``"<ours> - <name>"``, where ``<ours>`` is the split's subset column when it has
      one, else the split's column.

  Returns:
    ``(rows, columns)``: the rows of :func:`class_counts` with the added keys, and the column
    order (``label, class``, the splits, ``total``, then per split its subset, reference and
    difference columns).

  Raises:
    ValueError: a subset or reference of a split not in ``sources``, or subset indices out of
      range.
  """
  rows = class_counts(sources)
  columns = ["label", "class", *sources, "total"]
  subsets, reference = dict(subsets or {}), dict(reference or {})
  for what, d in (("subsets", subsets), ("reference", reference)):
    unknown = sorted(set(d) - set(sources))
    if unknown:
      raise ValueError(f"{what} name splits {unknown} that are not among {list(sources)}")
  names = [r["class"] for r in rows[:-1]]
  for split in sources:
    ours = split
    if split in subsets:
      labels = source_labels(sources[split])
      idx = np.asarray(subsets[split], np.int64).reshape(-1)
      if idx.size and (idx.min() < 0 or idx.max() >= labels.size):
        raise ValueError(f"subsets[{split!r}] has indices outside [0, {labels.size})")
      counts = np.bincount(labels[idx], minlength=len(names))
      ours = f"{split} ({idx.size} drawn)"
      for r, n in zip(rows, counts):
        r[ours] = int(n)
      rows[-1][ours] = int(idx.size)
      columns.append(ours)
    if split in reference:
      ref = reference[split]
      name, diff = ref["name"], f"{ours} - {ref['name']}"
      per_class = ref.get("per_class") or {}
      for r, cls in zip(rows, names):
        r[name] = per_class.get(cls, "")
        r[diff] = r[ours] - r[name] if r[name] != "" else ""
      total = ref.get("total")
      rows[-1][name] = "" if total is None else int(total)
      rows[-1][diff] = "" if total is None else rows[-1][ours] - int(total)
      columns += [name, diff]
  return rows, columns


FOREGROUND_COLUMNS = ("dataset", "split", "examples", "mean", "std", "min", "median", "max",
                      "mask_source")


def foreground_share_rows(sources: Mapping[str, Any]) -> list[dict[str, Any]]:
  """:func:`foreground_share` of every split (rows in ``sources`` order), plus an ``"all"`` row
  pooling their examples when there is more than one split.

  Returns:
    rows with the keys of :data:`FOREGROUND_COLUMNS` (and ``has_masks``).
  """
  _check_sources(sources)
  rows, pooled = [], []
  for split, src in sources.items():
    row = foreground_share(src)
    row["split"] = split
    rows.append(row)
    pooled.append(foreground_fractions(src))
  if len(rows) > 1:
    f = np.concatenate(pooled)
    first = rows[0]
    rows.append({"dataset": first["dataset"], "split": "all", "mask_source":
                 first["mask_source"], "has_masks": first["has_masks"],
                 "examples": int(f.size), "mean": float(f.mean()), "std": float(f.std()),
                 "min": float(f.min()), "median": float(np.median(f)), "max": float(f.max())})
  return rows
