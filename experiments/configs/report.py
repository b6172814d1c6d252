r"""Configuration of the combined Table 4 (``python -m experiments.report``).

Fields: ``studies``: the workdirs of finished ``attention_masks`` runs (e.g. the GTSRB-IC and the
MS-COCO-IC run), in the order of the table's column groups.
"""

from __future__ import annotations

import ml_collections


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  del preset  # one preset
  c = ml_collections.ConfigDict()
  c.studies = ()
  return c
