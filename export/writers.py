"""Every export format of a trained model, chosen by config.export.formats: one entry point for main.py's
--mode=export and the end of training.

| format | what | written by |
|---|---|---|
| jax | `encoder.jax_exported` / `text_encoder.jax_exported` (jax.export, symbolic batch) + model_card.json | jax_export |
| saved_model | TF SavedModels `saved_model/`, `text_saved_model/` (skipped with a warning without TensorFlow) | saved_model |
"""

from __future__ import annotations

import logging
import os

from export import jax_export

FORMATS = ("jax", "saved_model")


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
  return out


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
