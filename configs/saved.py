"""The config a run saved as <workdir>/config.json, for --mode=eval|export without --config."""

from __future__ import annotations

import json
import os

import ml_collections

FILE = "config.json"


def _tuples(value):
  """JSON lists back to the tuples configs use; dicts stay dicts (ConfigDict turns them into blocks)."""
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def save(config: ml_collections.ConfigDict, workdir: str) -> None:
  with open(os.path.join(workdir, FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2))


def load(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"No {FILE} in {workdir!r}: pass --config=<recipe file> (the run's recipe).")
  with open(path) as f:
    return ml_collections.ConfigDict(_tuples(json.load(f)))
