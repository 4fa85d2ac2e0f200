"""Writes trained parameters in the formats other tools load: a Hugging Face `CLIPModel` / `SiglipModel` directory
(config.json + model.safetensors + tokenizer files) and a flat `params.safetensors` of any params subtree.

    kwargs, params = models.hf_clip.load(src)                  # or a two-tower trained from such an import
    export.hf.save(out, kwargs, params, tokenizer_files(src), base_config=models.hf_clip.read_config(src))
    transformers.CLIPModel.from_pretrained(out)                # or SiglipModel; AutoTokenizer.from_pretrained(out)
    export.hf.save_params("image_tower.safetensors", params["image_tower"])   # names "encoder/block0/attn/query/kernel"

Only towers with a Hugging Face layout export as a directory (models.hf_clip.hf_config says what does not fit);
`save_params` takes anything.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any
from collections.abc import Iterable, Mapping

import numpy as np
from flax import traverse_util

from models import hf_clip

# Files of a Hugging Face directory that `save` copies along: tokenizers (CLIP BPE, SigLIP SentencePiece) and the
# image processor.
TOKENIZER_FILES = (
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "vocab.json",
  "merges.txt",
  "spiece.model",
  "preprocessor_config.json",
)
SEPARATOR = "/"


def tokenizer_files(model_dir: str) -> list[str]:
  """The TOKENIZER_FILES present in a Hugging Face model directory (full paths)."""
  return [os.path.join(model_dir, f) for f in TOKENIZER_FILES if os.path.exists(os.path.join(model_dir, f))]


def _write_safetensors(tensors: Mapping[str, np.ndarray], path: str, metadata: dict[str, str] | None = None) -> None:
  from safetensors.numpy import save_file

  # np.asarray(order="C"), not ascontiguousarray, which turns scalars (CLIP's logit_scale) into shape (1,).
  save_file({k: np.asarray(v, order="C") for k, v in tensors.items()}, path + ".tmp", metadata=metadata)
  os.replace(path + ".tmp", path)  # never leave a half-written file under the final name


def save(
  out_dir: str,
  kwargs: Mapping[str, Any],
  params: Mapping[str, Any],
  tokenizer_files: Iterable[str] = (),
  base_config: Mapping[str, Any] | None = None,
) -> str:
  """Writes a Hugging Face directory for a two-tower model: config.json, model.safetensors (torch layout, the
  params' dtype) and copies of `tokenizer_files`. `kwargs`: the `TwoTower` keyword arguments (as
  models.hf_clip.load returns them); `base_config`: a config.json dict whose non-architectural keys (token ids,
  init ranges) to keep. Returns out_dir."""
  config, tensors = hf_clip.to_hf(kwargs, jax_to_numpy(params), base_config)
  files = list(tokenizer_files)
  missing = [f for f in files if not os.path.exists(f)]
  if missing:
    raise FileNotFoundError(f"tokenizer files not found: {missing}")
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
  # transformers refuses safetensors files whose metadata does not name their framework.
  _write_safetensors(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
  for path in files:
    if os.path.abspath(os.path.dirname(path)) != os.path.abspath(out_dir):
      shutil.copyfile(path, os.path.join(out_dir, os.path.basename(path)))
  return out_dir


def jax_to_numpy(params: Mapping[str, Any]) -> dict:
  """A params tree with every leaf as a host numpy array (fetched from devices, dtype kept)."""
  return traverse_util.unflatten_dict({k: np.asarray(v) for k, v in traverse_util.flatten_dict(dict(params)).items()})


def save_params(path: str, params: Mapping[str, Any]) -> None:
  """Writes a params tree (any tower or subtree) as one safetensors file, names joined by "/" ("encoder/block0/
  attn/query/kernel"), our layout and dtypes unchanged."""
  flat = traverse_util.flatten_dict(jax_to_numpy(params), sep=SEPARATOR)
  _write_safetensors(flat, path, metadata={"format": "flax", "layout": "contrastive-jax params"})


def load_params(path: str) -> dict:
  """The params tree that `save_params` wrote (numpy arrays)."""
  from safetensors.numpy import load_file

  return traverse_util.unflatten_dict(load_file(path), sep=SEPARATOR)
