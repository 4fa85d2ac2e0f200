"""Model registry: configs name a model (`model.name = "resnet18_cifar"`), `models.get(name)(**kwargs)` builds it."""

import dataclasses
import difflib
from collections.abc import Callable
from typing import TypeVar

import flax.linen as nn
import jax.numpy as jnp

_MODELS: dict[str, type[nn.Module]] = {}
M = TypeVar("M", bound=type[nn.Module])


def register(name: str) -> Callable[[M], M]:
  """Class decorator: makes `cls` available as `get(name)`."""

  def decorate(cls: M) -> M:
    if name in _MODELS:
      raise ValueError(f"model {name!r} registered twice ({_MODELS[name].__name__} and {cls.__name__})")
    _MODELS[name] = cls
    return cls

  return decorate


def get(name: str) -> type[nn.Module]:
  """The module class registered as `name`; call it with the model's keyword arguments."""
  try:
    return _MODELS[name]
  except KeyError:
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())}") from None


def names() -> list[str]:
  """All registered model names, sorted."""
  return sorted(_MODELS)


# Run-wide levers every model block carries (config.model.dtype / .remat) and their no-op values.
LEVERS = {"dtype": "float32", "remat": False}


def build(spec: dict, module_name: str | None = None) -> nn.Module:
  """The module `spec["name"]` with the rest of `spec` as keyword arguments (a config block such as config.model).

  The levers `dtype` and `remat` go to modules that have such a field; for one that has not, their no-op values
  (float32, False) are dropped and any other value is an error. An unknown keyword fails with the module's fields
  and the nearest name. `module_name` names the submodule (its params subtree) inside a parent module.
  """
  spec = dict(spec)
  cls = get(spec.pop("name"))
  fields = {f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")}
  for key, no_op in LEVERS.items():
    if key in spec and key not in fields and spec[key] in (no_op, None):
      del spec[key]
  unknown = sorted(set(spec) - fields)
  if unknown:
    hints = {k: difflib.get_close_matches(k, fields, n=1) for k in unknown}
    hint = "; ".join(f"{k} (did you mean {h[0]}?)" if h else k for k, h in hints.items())
    raise ValueError(f"Model {cls.__name__} has no field {hint}; its fields: {', '.join(sorted(fields))}.")
  if isinstance(spec.get("dtype"), str):
    spec["dtype"] = jnp.dtype(spec["dtype"])
  return cls(**spec, name=module_name)
