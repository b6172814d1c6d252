"""Config files of the binaries (``ml_collections``): ``get_config(preset)`` per file."""

from __future__ import annotations

from typing import Callable, Mapping

import ml_collections


def select(presets: Mapping[str, Callable[[], ml_collections.ConfigDict]], name: str | None,
           default: str) -> ml_collections.ConfigDict:
  """The preset ``name`` (the part after ``:`` in ``--config``; None/"" = ``default``).

  Raises:
    ValueError: an unknown preset (the message lists the known ones).
  """
  name = name or default
  if name not in presets:
    raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(presets)}")
  return presets[name]()
