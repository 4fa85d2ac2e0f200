"""Methods: which models, which views, which loss. `methods.get(name)(config, mesh) -> Method`."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from methods.base import Method

# One file per method; variants of a method share its file and are told apart by the config:
# siglip and lit by config.loss.name / config.model.lock_image in clip.py, esimcse by config.simcse.queue_size,
# coca (a CoCa-style hybrid) by the heads and loss terms of its multitask config.
_MODULES = {
  "simclr": "methods.simclr",
  "clip": "methods.clip",
  "siglip": "methods.clip",
  "lit": "methods.clip",
  "moco": "methods.moco",
  "supcon": "methods.supcon",
  "swav": "methods.swav",
  "simcse": "methods.simcse",
  "esimcse": "methods.simcse",
  "simskip": "methods.simskip",
  "multitask": "methods.multitask",
  "coca": "methods.multitask",
  "dense": "methods.dense",
  "timeseries": "methods.timeseries",
  "graphcl": "methods.graph",
}


def names() -> list[str]:
  return sorted(_MODULES)


def get(name: str) -> Callable[..., Method]:
  """Returns the `build(config, mesh) -> Method` function of a method by name."""
  if name not in _MODULES:
    raise ValueError(f"Unknown method {name!r}; known methods: {names()}.")
  return importlib.import_module(_MODULES[name]).build


__all__ = ["Method", "get", "names"]
