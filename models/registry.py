"""Model registry: configs name a model (`model.name = "resnet18_cifar"`), `models.get(name)(**kwargs)` builds it."""

from typing import TypeVar
from collections.abc import Callable

import flax.linen as nn

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
