"""Serialises a trained encoder with `jax.export`: a self-contained StableHLO artifact with a symbolic batch size."""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ARTIFACT = "encoder.jax_exported"
MODEL_CARD = "model_card.json"


def export_image_encoder(method, params: Any, model_state: Any, *, image_shape: tuple[int, int, int], out_dir: str,
                         config=None, platforms: tuple[str, ...] | None = None) -> str:
  """Writes `<out_dir>/encoder.jax_exported` (uint8 [b, H, W, 3] -> float32 [b, D]) and `model_card.json`.

  The parameters are baked into the artifact as constants; preprocessing (scale to [0, 1], per-channel
  standardisation) is inside the exported function, so callers pass raw uint8 pixels.
  """
  params, model_state = jax.device_get((params, model_state))

  def encode(images):
    return method.embed_fn(params, model_state, {"image": images}).astype(jnp.float32)

  batch = jax.export.symbolic_shape("b")
  spec = jax.ShapeDtypeStruct(batch + tuple(image_shape), jnp.uint8)
  exported = jax.export.export(jax.jit(encode), platforms=platforms)(spec)
  os.makedirs(out_dir, exist_ok=True)
  tmp = os.path.join(out_dir, ARTIFACT + ".tmp")
  with open(tmp, "wb") as f:
    f.write(exported.serialize())
  os.replace(tmp, os.path.join(out_dir, ARTIFACT))  # never leave a half-written artifact under the final name
  out_dim = int(exported.out_avals[0].shape[-1])
  card = {
      "format": "jax.export (StableHLO), load with jax.export.deserialize",
      "artifact": ARTIFACT,
      "saved_model": "saved_model/ (TF SavedModel, signature serving_default: images -> embeddings), when TF is installed",
      "input": {"name": "images", "dtype": "uint8", "shape": ["batch", *image_shape], "range": [0, 255],
                "layout": "NHWC, RGB"},
      "output": {"dtype": "float32", "shape": ["batch", out_dim], "note": "backbone features (before projection)"},
      "preprocessing": "included: x/255, then (x - mean) / std per channel",
      "mean": list(config.data.mean) if config is not None else None,
      "std": list(config.data.std) if config is not None else None,
      "platforms": list(exported.platforms),
      "method": config.method if config is not None else None,
      "model": config.model.to_dict() if config is not None else None,
  }
  with open(os.path.join(out_dir, MODEL_CARD), "w") as f:
    json.dump(card, f, indent=2, default=str)
  return out_dir


def load(artifact_dir: str):
  """The deserialised `jax.export.Exported`; call it with `.call(images)`."""
  with open(os.path.join(artifact_dir, ARTIFACT), "rb") as f:
    return jax.export.deserialize(bytearray(f.read()))


def embed_images(artifact_dir: str, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
  """Embeds uint8 [N, H, W, 3] images with an exported encoder, in batches (the last one padded, then trimmed)."""
  exported = load(artifact_dir)
  fn = jax.jit(exported.call)
  out = []
  starts = range(0, len(images), batch_size)
  if progress:
    from tqdm import tqdm
    starts = tqdm(starts, desc="embed", unit="batch")
  for i in starts:
    chunk = images[i:i + batch_size]
    n = len(chunk)
    if n < batch_size and len(images) > batch_size:
      chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:], chunk.dtype)])
    out.append(np.asarray(fn(chunk))[:n])
  return np.concatenate(out) if out else np.zeros((0, exported.out_avals[0].shape[-1]), np.float32)
