"""Command-line overrides `--config.a.b=value` of a recipe, with one clear error for a key that does not exist.

    config = overrides.apply(recipe_config, [("batch_size", "512"), ("evals.cifar10.type", "zero_shot")])

Values are Python literals (`512`, `1e-3`, `True`, `(0.2, 1.0)`, `None`) or, when they do not parse, plain strings.
A key must exist in the recipe, except:
- a new entry under `evals` (`evals.<name>.type=<type>`, then any option of that type): created from
  `default.eval_config(type)`;
- a new key of a keyword-argument block (`model`, `model.image`, `model.text`, `head`, `loss`, `augment`) or of an
  evaluation's `data` overrides (which takes the keys of config.data): checked where the block is used.
A misspelled key fails with the nearest declared ones.
"""

from __future__ import annotations

import ast
import difflib

import ml_collections

from configs import default

KWARG_BLOCKS = ("model", "model.image", "model.text", "head", "loss", "augment")


class ConfigError(ValueError):
  """A config override or value that cannot be applied; the message says what and what to do."""


def flatten(config, prefix: str = "") -> list[str]:
  """Dotted paths of every leaf of a ConfigDict (or dict)."""
  paths = []
  for key, value in config.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict | dict) and len(value):
      paths += flatten(value, path + ".")
    else:
      paths.append(path)
  return paths


def parse_value(text: str):
  """A Python literal, else the string itself (`--config.data.name=shapes` needs no quotes)."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def check_keywords(kwargs, accepted: list[str], block: str, what: str) -> None:
  """A ValueError naming the nearest accepted name for the first key of `kwargs` (a config block, e.g. block
  "config.loss") that is not among `accepted`, the keyword arguments of `what`."""
  for key in kwargs:
    if key not in accepted:
      close = difflib.get_close_matches(key, accepted, n=1)
      raise ValueError(
        f"{block}.{key} is not an argument of {what}"
        f"{f' (did you mean {close[0]}?)' if close else ''}; it takes {', '.join(accepted)}."
      )


def _nearest(path: str, config) -> str:
  close = difflib.get_close_matches(path, flatten(config), n=1, cutoff=0.6)
  return f" Did you mean {close[0]}?" if close else ""


def _coerce(current, value, path: str):
  """`value` in the type of the current value: ints for floats, tuples for lists, strings kept as given."""
  if current is None or value is None:
    return value
  if isinstance(current, bool):
    if not isinstance(value, bool):
      raise ConfigError(f"--config.{path} takes True or False, got {value!r}.")
    return value
  if isinstance(current, str):
    return value if isinstance(value, str) else str(value)
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if isinstance(current, tuple | list):
    value = tuple(value) if isinstance(value, tuple | list) else (value,)
    return value
  if type(value) is not type(current) and not isinstance(current, ml_collections.ConfigDict):
    raise ConfigError(f"--config.{path} takes a value of type {type(current).__name__}, got {value!r}.")
  return value


def _set(config, path: str, value) -> None:
  """Sets a dotted path, creating evaluation entries and keyword-argument keys where allowed."""
  keys = path.split(".")
  node = config
  for i, key in enumerate(keys[:-1]):
    prefix = ".".join(keys[: i + 1])
    if key not in node:
      if prefix == f"evals.{key}" and i == 1:
        raise ConfigError(
          f"--config.{path}: the evaluation {key!r} does not exist; add it with --config.evals.{key}.type=<type> "
          f"(types: {', '.join(default.EVAL_TYPES)})."
        )
      raise ConfigError(f"Unknown config key --config.{path}.{_nearest(path, config)}")
    node = node[key]
  leaf = keys[-1]
  parent = ".".join(keys[:-1])
  if leaf in node:
    with node.ignore_type():
      node[leaf] = _coerce(node[leaf], value, path)
    return
  if parent in KWARG_BLOCKS or (len(keys) == 4 and keys[0] == "evals" and keys[2] == "data"):
    if keys[2:3] == ["data"] and leaf not in config.data:
      raise ConfigError(f"Unknown data key --config.{path}.{_nearest('data.' + leaf, config)}")
    node[leaf] = value
    return
  raise ConfigError(f"Unknown config key --config.{path}.{_nearest(path, config)}")


def apply(config: ml_collections.ConfigDict, overrides: list[tuple[str, str]]) -> ml_collections.ConfigDict:
  """Applies `(dotted path, value text)` pairs in order; `evals.<new>.type` entries are created first."""
  for path, text in overrides:
    keys = path.split(".")
    if len(keys) == 3 and keys[0] == "evals" and keys[2] == "type" and keys[1] not in config.evals:
      config.evals[keys[1]] = default.eval_config(str(parse_value(text)))
  for path, text in overrides:
    _set(config, path, parse_value(text))
  return config
