"""Every export format of a trained model, chosen by config.export.formats: one entry point for main.py's
--mode=export and the end of training.

| format | what | written by |
|---|---|---|
| jax | `encoder.jax_exported` / `text_encoder.jax_exported` (jax.export, symbolic batch) + model_card.json | jax_export |
| saved_model | TF SavedModels `saved_model/`, `text_saved_model/` (skipped with a warning without TensorFlow) | saved_model |
| hf | `hf/`: a Hugging Face CLIPModel / SiglipModel directory (config.json, model.safetensors, tokenizer files) | hf |
| safetensors | `safetensors/<name>.safetensors`: each top-level params entry (e.g. image_tower), flat "/" names | hf |

hf and safetensors write the whole model: trained params and locked towers (model_state["locked"]).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from export import jax_export

FORMATS = ("jax", "saved_model", "hf", "safetensors")
# Flax variables that are not params but belong with them in a safetensors export (BatchNorm running statistics).
STATISTICS = ("batch_stats",)


def towers(predict_fns: dict) -> list[str]:
  """The towers a method has: image (embed_image) and / or text (embed_text)."""
  return [tower for tower in ("image", "text") if f"embed_{tower}" in predict_fns]


def export_all(config, predict_fns: dict, params, model_state, workdir: str) -> str:
  """Writes every tower of `predict_fns` in each of config.export.formats to <workdir>/export; returns the folder."""
  unknown = sorted(set(config.export.formats) - set(FORMATS))
  if unknown:
    raise ValueError(f"Unknown export formats {unknown}; choose from {', '.join(FORMATS)}.")
  out = os.path.join(os.path.abspath(workdir), "export")
  found = towers(predict_fns)
  if not found:
    raise ValueError(f"Method {config.method!r} has no image or text tower to export.")
  size, max_len = config.data.image_size, config.data.max_text_len
  if "jax" in config.export.formats:
    if os.path.exists(os.path.join(out, jax_export.MODEL_CARD)):  # list only this export's towers
      os.remove(os.path.join(out, jax_export.MODEL_CARD))
    if "image" in found:
      jax_export.export_image_encoder(
        predict_fns["embed_image"], params, model_state, image_shape=(size, size, 3), out_dir=out, config=config
      )
    if "text" in found:
      jax_export.export_text_encoder(
        predict_fns["embed_text"],
        params,
        model_state,
        max_len=max_len,
        out_dir=out,
        tokenizer=config.data.tokenizer or "bytes",
        tokenizer_path=config.data.tokenizer_path,
        config=config,
      )
    print(f"exported the {' and '.join(found)} tower(s) (jax.export) to {out}")
  if "saved_model" in config.export.formats:
    _export_saved_models(predict_fns, params, model_state, found, (size, size, 3), max_len, out)
  whole = {**params, **model_state.get("locked", {})}
  if "hf" in config.export.formats:
    print(f"exported the two-tower model (Hugging Face) to {export_hf(config, whole, os.path.join(out, 'hf'))}")
  if "safetensors" in config.export.formats:
    path = export_safetensors(whole, model_state, os.path.join(out, "safetensors"))
    print(f"exported the params (safetensors, one file per top-level entry) to {path}")
  return out


def two_tower_kwargs(model_config) -> dict:
  """`models.two_tower.TwoTower` keyword arguments of config.model (a `two_tower_model` block), levers left out:
  what methods/clip.py builds, as models.hf_clip describes it."""
  if model_config.name != "two_tower":
    raise ValueError(
      f"Export format 'hf' writes a two-tower model (CLIP, SigLIP, LiT); this run's model is {model_config.name!r}."
    )
  tower = lambda block: {k: v for k, v in block.to_dict().items() if k not in ("name", "dtype", "remat")}
  return dict(
    image_encoder=model_config.image.name,
    image_kwargs=tower(model_config.image),
    text_encoder=model_config.text.name,
    text_kwargs=tower(model_config.text),
    embed_dim=model_config.embed_dim,
    logit_bias_init=model_config.logit_bias_init,
    image_projection=model_config.image_projection,
    text_projection=model_config.text_projection,
  )


def export_hf(config, params, out_dir: str) -> str:
  """A Hugging Face directory of the run's two-tower model (export.hf.save). A run imported from such a directory
  (config.pretrained.kind clip_hf / siglip_hf) keeps its config.json's other keys (token ids, init ranges) and
  gets its tokenizer and image processor files (those of config.data.tokenizer_path)."""
  from export import hf
  from models import hf_clip

  base = None
  if config.pretrained.kind in hf_clip.PRETRAINED_KINDS and config.pretrained.path:
    base = hf_clip.read_config(config.pretrained.path)
  files = []
  if config.data.tokenizer in ("clip_bpe", "siglip"):
    path = config.data.tokenizer_path
    files = hf.tokenizer_files(path if os.path.isdir(path) else os.path.dirname(path))
  return hf.save(out_dir, two_tower_kwargs(config.model), params, files, base_config=base)


def export_safetensors(params, model_state, out_dir: str) -> str:
  """`<out_dir>/<name>.safetensors` for each top-level entry of `params` (a subtree: its flat "/" names, e.g.
  image_tower.safetensors holding "encoder/block0/attn/query/kernel"; an array: one tensor of that name), and
  `<name>.batch_stats.safetensors` for an entry with BatchNorm statistics. export.hf.load_params reads one back."""
  from export import hf

  os.makedirs(out_dir, exist_ok=True)
  for name, value in params.items():
    hf.save_params(os.path.join(out_dir, f"{name}.safetensors"), value if isinstance(value, Mapping) else {name: value})
    for collection in STATISTICS:
      if name in model_state.get(collection, {}):
        hf.save_params(os.path.join(out_dir, f"{name}.{collection}.safetensors"), model_state[collection][name])
  return out_dir


def _export_saved_models(predict_fns, params, model_state, found, image_shape, max_len, out) -> None:
  try:
    import tensorflow  # noqa: F401  (optional: GPU machines may not have it)
  except ImportError:
    logging.warning("TensorFlow is not installed: skipping the SavedModel export.")
    return
  from export import saved_model

  if "image" in found:
    path = saved_model.export_image_encoder_saved_model(
      predict_fns["embed_image"], params, model_state, image_shape=image_shape, out_dir=out
    )
    print(f"exported the image encoder (TF SavedModel) to {path}")
  if "text" in found:
    path = saved_model.export_text_encoder_saved_model(
      predict_fns["embed_text"], params, model_state, max_len=max_len, out_dir=out
    )
    print(f"exported the text encoder (TF SavedModel) to {path}")
