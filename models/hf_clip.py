"""Hugging Face `CLIPModel` / `SiglipModel` checkpoints <-> `models.two_tower.TwoTower` (ViT + text transformer),
read and written with numpy and `safetensors` (no torch, no transformers).

    kwargs, params = load("clip-vit-base-patch32")     # HF directory: config.json + model.safetensors
    model = models.get("two_tower")(**kwargs)
    out = model.apply({"params": params}, images, tokens, train=False)   # images [B, S, S, 3] normalised, NHWC
    data = data_settings("clip-vit-base-patch32")       # image size, mean / std, tokenizer, context length

config.json decides the layout. CLIP: class token, a LayerNorm before the blocks, bias-free patch embedding and
projections, text pooled at the first EOS (QuickGELU for OpenAI's ViT-B/32, B/16, L/14; GELU for others). SigLIP: no
class token, MAP head, text pooled at the last position through an affine head, image features unprojected, a learnt
logit bias. `to_hf(kwargs, params)` is the inverse, which export/hf.py writes. Torch linears are [out, in], ours
[in, out]; torch convolutions [out, in, h, w], ours [h, w, in, out].
"""

from __future__ import annotations

import copy
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

from models import registry
from models.two_tower import TwoTower

ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
HF_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
# CLIP configs saved before transformers PR #24773 say eos_token_id 2, and the model then pools at the largest id.
LEGACY_EOS_ID = 2
# Buffers that older checkpoints saved and the models recompute.
IGNORED_SUFFIXES = (".position_ids",)
# torch nn.MultiheadAttention's fused q, k, v of SigLIP's MAP head; split into q_proj / k_proj / v_proj on import.
FUSED = "vision_model.head.attention.in_proj_"
# config.json of CLIPModel / SiglipModel as transformers 5.24.0 writes it (the release that made
# tests/fixtures/hf_*_tiny), with its class defaults; hf_config fills in the architecture. SigLIP's projection_size
# null means the text width.
with open(Path(__file__).with_name("hf_config_templates.json")) as _f:
  TEMPLATES = json.load(_f)
# config.pretrained.kind of a run that starts from such a checkpoint -> its model_type (methods/pretrained.py).
PRETRAINED_KINDS = {"clip_hf": "clip", "siglip_hf": "siglip"}
PREPROCESSING = {
  "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
  "siglip": ((0.5,) * 3, (0.5,) * 3),
}

Names = dict[tuple[str, ...], tuple[str, str]]  # our param path -> (checkpoint tensor name, layout)
# Our transformer encoders' kwargs -> the Hugging Face config keys that hold them (BERT, CLIP and SigLIP alike).
HF_ENCODER_KEYS = {
  "width": "hidden_size",
  "depth": "num_hidden_layers",
  "num_heads": "num_attention_heads",
  "mlp_dim": "intermediate_size",
  "layer_norm_epsilon": "layer_norm_eps",
}


def encoder_kwargs(hf: Mapping[str, Any]) -> dict:
  """Width, depth, heads, MLP width and layer-norm epsilon of a Hugging Face transformer config, in our names."""
  return {ours: hf[theirs] for ours, theirs in HF_ENCODER_KEYS.items()}


def hf_encoder_config(kwargs: Mapping[str, Any]) -> dict:
  """The inverse of `encoder_kwargs`: those five settings of our (filled-in) encoder kwargs in Hugging Face names."""
  return {theirs: kwargs[ours] for ours, theirs in HF_ENCODER_KEYS.items()}


def _activation(name: str) -> str:
  if name not in ACTIVATIONS:
    raise ValueError(f"hidden_act {name!r} is not implemented; known: {', '.join(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def sub_configs(config: Mapping[str, Any]) -> tuple[str, dict, dict]:
  """(model type, vision config, text config), the class defaults filled in for keys config.json leaves out."""
  kind = config.get("model_type")
  if kind not in TEMPLATES:
    raise ValueError(f"model_type {kind!r} is not a CLIPModel or SiglipModel checkpoint (expected 'clip' or 'siglip')")
  template = TEMPLATES[kind]
  vision = {**template["vision_config"], **config.get("vision_config", {})}
  return kind, vision, {**template["text_config"], **config.get("text_config", {})}


def two_tower_kwargs(config: Mapping[str, Any]) -> dict:
  """`TwoTower` keyword arguments for a Hugging Face CLIP or SigLIP config.json (logit scale / bias inits left at
  their defaults: `load` sets them to the checkpoint's values)."""
  kind, v, t = sub_configs(config)
  clip = kind == "clip"
  if not v.get("vision_use_head", True):
    raise ValueError("vision_config.vision_use_head=false: a SigLIP vision tower without MAP head has no embedding")
  image_kwargs = dict(
    patch_size=v["patch_size"],
    **encoder_kwargs(v),
    pool="cls" if clip else "map",
    patch_bias=not clip,
    ln_pre=clip,
    activation=_activation(v["hidden_act"]),
  )
  text_kwargs = dict(
    vocab_size=t["vocab_size"],
    context_length=t["max_position_embeddings"],
    **encoder_kwargs(t),
    causal=clip,
    activation=_activation(t["hidden_act"]),
  )
  if clip:
    legacy = t["eos_token_id"] == LEGACY_EOS_ID
    text_kwargs.update(pool="argmax" if legacy else "first_eos", eos_id=None if legacy else t["eos_token_id"])
    embed_dim = config.get("projection_dim", TEMPLATES["clip"]["projection_dim"])
  else:
    text_kwargs.update(pool="last", mask_padding=False)
    embed_dim = v["hidden_size"]
    if t["projection_size"] is not None and t["projection_size"] != embed_dim:
      raise ValueError(
        f"text_config.projection_size={t['projection_size']} differs from the vision width {embed_dim}: "
        "SiglipModel compares the two embeddings directly"
      )
  return dict(
    image_encoder="vit",
    image_kwargs=image_kwargs,
    text_encoder="text_transformer",
    text_kwargs=text_kwargs,
    embed_dim=embed_dim,
    logit_bias_init=None if clip else 0.0,
    image_projection="linear" if clip else "none",
    text_projection="linear" if clip else "affine",
  )


def _filled(name: str, kwargs: Mapping[str, Any]) -> dict:
  """A tower's kwargs with the module's defaults filled in (mlp_dim None -> 4 * width)."""
  fields = registry.get(name).__dataclass_fields__
  out = {k: kwargs.get(k, f.default) for k, f in fields.items() if k not in ("parent", "name")}
  out["mlp_dim"] = out["mlp_dim"] or 4 * out["width"]
  return out


def hf_config(kwargs: Mapping[str, Any], image_size: int, base: Mapping[str, Any] | None = None) -> dict:
  """The Hugging Face config.json of a `TwoTower` (kwargs as `load` returns them) for `image_size` pixels.

  Keys that do not shape the model (token ids, init ranges...) come from `base` (e.g. the config.json the model
  was imported from) when given, else transformers' defaults. ValueError listing every setting that CLIPModel /
  SiglipModel cannot represent (e.g. a "gap"-pooled ViT, a bidirectional CLIP text tower, a byte vocabulary's pad 0).
  """
  encoders = (kwargs.get("image_encoder", TwoTower.image_encoder), kwargs.get("text_encoder", TwoTower.text_encoder))
  if encoders != ("vit", "text_transformer"):
    raise ValueError(
      f"towers {encoders} have no Hugging Face CLIP / SigLIP layout: it needs ('vit', 'text_transformer')"
    )
  image = _filled("vit", kwargs.get("image_kwargs") or {})
  text = _filled("text_transformer", kwargs.get("text_kwargs") or {})
  kind = "siglip" if image.get("pool") == "map" else "clip"
  config = copy.deepcopy(TEMPLATES[kind])
  for key, value in (base or {}).items():
    config[key] = {**config[key], **value} if isinstance(config.get(key), dict) else value
  config.pop("torch_dtype", None)  # transformers < 5's name of "dtype"; to_hf writes the params' dtype there
  config["vision_config"].update(
    hf_encoder_config(image),
    image_size=image_size,
    patch_size=image["patch_size"],
    hidden_act=HF_ACTIVATIONS.get(image["activation"], image["activation"]),
  )
  config["text_config"].update(
    hf_encoder_config(text),
    vocab_size=text["vocab_size"],
    max_position_embeddings=text["context_length"],
    hidden_act=HF_ACTIVATIONS.get(text["activation"], text["activation"]),
  )
  embed_dim = kwargs.get("embed_dim", TwoTower.embed_dim)
  if kind == "clip":
    eos = LEGACY_EOS_ID if text.get("pool") == "argmax" else text.get("eos_id")
    config["text_config"].update(eos_token_id=eos, projection_dim=embed_dim)
    config["vision_config"]["projection_dim"] = embed_dim
    config["projection_dim"] = embed_dim
  else:
    config["text_config"]["projection_size"] = embed_dim
  _check_round_trip(kwargs, image, text, config)
  return config


def _check_round_trip(kwargs: Mapping[str, Any], image: dict, text: dict, config: dict) -> None:
  """Raises unless `config` gives back the architecture of `kwargs` (what the HF layout cannot say is lost)."""
  try:
    back = two_tower_kwargs(config)
  except ValueError as e:
    raise ValueError(f"this two-tower model has no Hugging Face layout: {e}") from None
  ours = {
    "embed_dim": kwargs.get("embed_dim", TwoTower.embed_dim),
    "image_projection": kwargs.get("image_projection", "linear"),
    "text_projection": kwargs.get("text_projection", "linear"),
    "logit_bias_init": kwargs.get("logit_bias_init") is not None,
  }
  back["logit_bias_init"] = back["logit_bias_init"] is not None
  problems = [f"{k}={v!r} (HF: {back[k]!r})" for k, v in ours.items() if back[k] != v]
  for tower, filled in (("image", image), ("text", text)):
    problems += [
      f"{tower}_kwargs.{k}={filled.get(k)!r} (HF: {v!r})"
      for k, v in back[f"{tower}_kwargs"].items()
      if filled.get(k) != v
    ]
  if problems:
    kind = config["architectures"][0]
    raise ValueError(f"this two-tower model has no Hugging Face {kind} layout:\n  " + "\n  ".join(problems))


def _ln(ours: tuple[str, ...], theirs: str) -> Names:
  return {ours + ("scale",): (theirs + ".weight", "same"), ours + ("bias",): (theirs + ".bias", "same")}


def _dense(ours: tuple[str, ...], theirs: str, inputs: int = 1) -> Names:
  return {ours + ("kernel",): (theirs + ".weight", f"linear{inputs}"), ours + ("bias",): (theirs + ".bias", "flat")}


def _attention(ours: tuple[str, ...], theirs: str) -> Names:
  names = {}
  for q, name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
    names |= _dense(ours + (q,), f"{theirs}.{name}")
  return names | _dense(ours + ("out",), f"{theirs}.out_proj", inputs=2)


def _mlp(ours: tuple[str, ...], theirs: str) -> Names:
  return _dense(ours + ("fc1",), theirs + ".fc1") | _dense(ours + ("fc2",), theirs + ".fc2")


def _encoder(ours: tuple[str, ...], theirs: str, depth: int) -> Names:
  names = {}
  for i in range(depth):
    block, layer = ours + (f"block{i}",), f"{theirs}.encoder.layers.{i}."
    names |= _ln(block + ("ln1",), layer + "layer_norm1") | _ln(block + ("ln2",), layer + "layer_norm2")
    names |= _attention(block + ("attn",), layer + "self_attn") | _mlp(block + ("mlp",), layer + "mlp")
  return names


def tensor_names(kind: str, image_depth: int, text_depth: int) -> Names:
  """Our param path -> (HF tensor name, layout) for a "clip" or "siglip" two-tower. Layouts: "same", "flat" (HF 1-D),
  "squeeze" (HF drops our leading 1), "conv", "linear{k}" (HF [out, in]; our kernel has k leading input axes)."""
  clip = kind == "clip"
  img, v, txt, t = ("image_tower",), "vision_model", ("text_tower",), "text_model"
  names = {
    img + ("patch_embed", "kernel"): (f"{v}.embeddings.patch_embedding.weight", "conv"),
    img + ("pos_embed",): (f"{v}.embeddings.position_embedding.weight", "squeeze"),
    txt + ("token_embed", "embedding"): (f"{t}.embeddings.token_embedding.weight", "same"),
    txt + ("pos_embed",): (f"{t}.embeddings.position_embedding.weight", "same"),
    ("logit_scale",): ("logit_scale", "same" if clip else "flat"),
  }
  names |= _encoder(img + ("encoder",), v, image_depth) | _ln(img + ("encoder", "ln_final"), f"{v}.post_layernorm")
  names |= _encoder(txt + ("encoder",), t, text_depth) | _ln(txt + ("encoder", "ln_final"), f"{t}.final_layer_norm")
  if clip:
    names[img + ("cls_token",)] = (f"{v}.embeddings.class_embedding", "flat")
    names |= _ln(img + ("ln_pre",), f"{v}.pre_layrnorm")
    names[("image_proj", "kernel")] = ("visual_projection.weight", "linear1")
    names[("text_proj", "kernel")] = ("text_projection.weight", "linear1")
    return names
  head = img + ("map_head",)
  names[img + ("patch_embed", "bias")] = (f"{v}.embeddings.patch_embedding.bias", "same")
  names[head + ("probe",)] = (f"{v}.head.probe", "same")
  names |= _attention(head + ("attn",), f"{v}.head.attention") | _ln(head + ("ln",), f"{v}.head.layernorm")
  names |= _mlp(head + ("mlp",), f"{v}.head.mlp") | _dense(("text_proj",), f"{t}.head")
  names[("logit_bias",)] = ("logit_bias", "flat")
  return names


def names_for(kwargs: Mapping[str, Any]) -> Names:
  """`tensor_names` of the two-tower `kwargs` describe (SigLIP when the image tower is MAP-pooled, else CLIP)."""
  image, text = kwargs.get("image_kwargs") or {}, kwargs.get("text_kwargs") or {}
  return tensor_names("siglip" if image.get("pool") == "map" else "clip", image.get("depth"), text.get("depth"))


def _hf_shape(layout: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  if layout.startswith("linear"):
    k = int(layout.removeprefix("linear"))
    return (math.prod(shape[k:]), math.prod(shape[:k]))
  if layout == "conv":
    return (shape[3], shape[2], shape[0], shape[1])
  return {"same": shape, "flat": (math.prod(shape),), "squeeze": shape[1:]}[layout]


def _to_ours(layout: str, tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  tensor = np.asarray(tensor, np.float32)
  if layout.startswith("linear"):
    return np.ascontiguousarray(tensor.T).reshape(shape)
  return np.ascontiguousarray(tensor.transpose(2, 3, 1, 0)) if layout == "conv" else tensor.reshape(shape)


def _to_hf(layout: str, value: np.ndarray) -> np.ndarray:
  value = np.asarray(value)
  if layout.startswith("linear"):
    k = int(layout.removeprefix("linear"))
    return np.ascontiguousarray(value.reshape(math.prod(value.shape[:k]), -1).T)
  return (
    np.ascontiguousarray(value.transpose(3, 2, 0, 1))
    if layout == "conv"
    else value.reshape(_hf_shape(layout, value.shape))
  )


def _split_fused(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = dict(tensors)
  prefix = FUSED.removesuffix("in_proj_")
  for suffix in ("weight", "bias"):
    fused = out.pop(FUSED + suffix, None)
    if fused is not None:
      for proj, part in zip(("q_proj", "k_proj", "v_proj"), np.array_split(fused, 3)):
        out[f"{prefix}{proj}.{suffix}"] = part
  return out


def _fuse(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = dict(tensors)
  prefix = FUSED.removesuffix("in_proj_")
  for suffix in ("weight", "bias"):
    parts = [out.pop(f"{prefix}{proj}.{suffix}", None) for proj in ("q_proj", "k_proj", "v_proj")]
    if parts[0] is not None:
      out[FUSED + suffix] = np.concatenate(parts)
  return out


def param_shapes(kwargs: Mapping[str, Any], image_size: int) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Flat param path -> shape of `TwoTower(**kwargs)` on `image_size` pixels (abstract: nothing is allocated)."""
  model = TwoTower(**kwargs)
  images, tokens = jnp.zeros((1, image_size, image_size, 3)), jnp.zeros((1, 1), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images, tokens, train=False))
  return {path: tuple(x.shape) for path, x in traverse_util.flatten_dict(shapes["params"]).items()}


def hf_shapes(kwargs: Mapping[str, Any], image_size: int) -> dict[str, tuple[int, ...]]:
  """Hugging Face tensor name -> shape that `TwoTower(**kwargs)` on `image_size` pixels reads and writes (SigLIP's
  MAP-head q, k, v fused as torch saves them)."""
  names = names_for(kwargs)
  shapes = {names[p][0]: _hf_shape(names[p][1], s) for p, s in param_shapes(kwargs, image_size).items()}
  prefix = FUSED.removesuffix("in_proj_")
  for suffix in ("weight", "bias"):
    parts = [shapes.pop(f"{prefix}{proj}.{suffix}", None) for proj in ("q_proj", "k_proj", "v_proj")]
    if parts[0] is not None:
      shapes[FUSED + suffix] = (sum(p[0] for p in parts), *parts[0][1:])
  return shapes


def params_from_tensors(
  tensors: Mapping[str, np.ndarray], kwargs: Mapping[str, Any], image_size: int, source: str = "checkpoint"
) -> dict:
  """Checkpoint tensors (name -> array) -> `TwoTower(**kwargs)` params (nested dict of float32 numpy arrays).

  ValueError naming every missing tensor, every shape mismatch (checkpoint vs the shape the model needs) and every
  tensor the model has no place for.
  """
  tensors = _split_fused({k: v for k, v in tensors.items() if not k.endswith(IGNORED_SUFFIXES)})
  targets = param_shapes(kwargs, image_size)
  names = names_for(kwargs)
  kind = "siglip" if ("logit_bias",) in names else "clip"
  params, errors = {}, []
  for path, shape in targets.items():
    name, layout = names[path]
    expected = _hf_shape(layout, shape)
    where = f"{name} (for {'/'.join(path)} {shape})"
    if name not in tensors:
      errors.append(f"missing tensor {where}")
    elif tuple(tensors[name].shape) != expected:
      errors.append(f"tensor {where} has shape {tuple(tensors[name].shape)}, expected {expected}")
    else:
      params[path] = _to_ours(layout, tensors[name], shape)
  used = {names[path][0] for path in targets}
  errors += [f"unexpected tensor {k} {tuple(v.shape)}" for k, v in sorted(tensors.items()) if k not in used]
  if errors:
    raise ValueError(f"{source} does not fit the {kind} two-tower of its config.json:\n  " + "\n  ".join(errors))
  return traverse_util.unflatten_dict(params)


def to_hf(
  kwargs: Mapping[str, Any], params: Mapping[str, Any], base: Mapping[str, Any] | None = None
) -> tuple[dict, dict[str, np.ndarray]]:
  """(config.json dict, HF tensor name -> numpy array) of a `TwoTower`'s kwargs and params; `base` as in hf_config.
  Arrays keep their dtype (float32 params give a bit-exact round trip through `params_from_tensors`)."""
  flat = {path: np.asarray(x) for path, x in traverse_util.flatten_dict(dict(params)).items()}
  pos = flat.get(("image_tower", "pos_embed"))
  if pos is None:
    raise ValueError(f"no image_tower/pos_embed in params (top level: {sorted(dict(params))}): not a ViT two-tower")
  image = kwargs.get("image_kwargs") or {}
  tokens = pos.shape[1] - (image.get("pool", "cls") == "cls")
  image_size = math.isqrt(tokens) * image.get("patch_size", 16)
  config = hf_config(kwargs, image_size, base)
  names = names_for(kwargs)
  missing, extra = sorted(set(names) - set(flat)), sorted(set(flat) - set(names))
  if missing or extra:
    raise ValueError(f"params do not match their kwargs: missing {missing}, unexpected {extra}")
  config["dtype"] = str(flat[("logit_scale",)].dtype)
  return config, _fuse({names[path][0]: _to_hf(names[path][1], value) for path, value in flat.items()})


def read_tensors(model_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """All tensors of a Hugging Face directory's model.safetensors (or its shards, model.safetensors.index.json)."""
  from safetensors.numpy import load_file

  model_dir = Path(model_dir)
  index = model_dir / "model.safetensors.index.json"
  if index.exists():
    files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
  elif (model_dir / "model.safetensors").exists():
    files = ["model.safetensors"]
  else:
    raise FileNotFoundError(
      f"{model_dir} has no model.safetensors: expected a Hugging Face model directory (a pytorch_model.bin-only "
      "checkpoint can be re-saved with transformers' save_pretrained(dir, safe_serialization=True))"
    )
  tensors = {}
  for name in files:
    tensors.update(load_file(model_dir / name))
  return tensors


def read_config(model_dir: str | os.PathLike) -> dict:
  path = Path(model_dir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: expected a Hugging Face CLIP or SigLIP model directory")
  return json.loads(path.read_text())


def load(model_dir: str | os.PathLike) -> tuple[dict, dict]:
  """(`TwoTower` kwargs, params as float32 numpy) of a Hugging Face CLIPModel or SiglipModel directory (config.json
  + model.safetensors). The kwargs' logit_scale_init / logit_bias_init are the checkpoint's values."""
  config = read_config(model_dir)
  kwargs = two_tower_kwargs(config)
  image_size = sub_configs(config)[1]["image_size"]
  params = params_from_tensors(read_tensors(model_dir), kwargs, image_size, source=str(Path(model_dir)))
  kwargs["logit_scale_init"] = float(params["logit_scale"])
  if "logit_bias" in params:
    kwargs["logit_bias_init"] = float(params["logit_bias"])
  return kwargs, params


def data_settings(model_dir: str | os.PathLike) -> dict:
  """What the data pipeline needs to feed the checkpoint: image_size, mean / std (per channel, on [0, 1] pixels,
  from preprocessor_config.json when present), tokenizer name and path (tokenization.get), max_text_len."""
  config = read_config(model_dir)
  kind, vision, text = sub_configs(config)
  mean, std = PREPROCESSING[kind]
  processor = Path(model_dir) / "preprocessor_config.json"
  if processor.exists():
    found = json.loads(processor.read_text())
    mean, std = tuple(found.get("image_mean", mean)), tuple(found.get("image_std", std))
  return dict(
    image_size=vision["image_size"],
    mean=tuple(mean),
    std=tuple(std),
    tokenizer="clip_bpe" if kind == "clip" else "siglip",
    tokenizer_path=str(model_dir),
    max_text_len=text["max_position_embeddings"],
  )
