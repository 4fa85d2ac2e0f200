"""Methods: which models, which views, which loss. `methods.get(name)(config, mesh) -> Method`."""
from __future__ import annotations

import importlib
from typing import Callable

from methods.base import Method

_MODULES = {"simclr": "methods.simclr"}


def names() -> list[str]:
  return sorted(_MODULES)


def get(name: str) -> Callable[..., Method]:
  """Returns the `build(config, mesh) -> Method` function of a method by name."""
  if name not in _MODULES:
    raise ValueError(f"Unknown method {name!r}; known methods: {names()}.")
  return importlib.import_module(_MODULES[name]).build


__all__ = ["Method", "get", "names"]
