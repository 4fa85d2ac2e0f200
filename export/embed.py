"""Embeds a .npy array or a folder of images with an exported encoder; needs only jax, numpy, Pillow (no training code).

    python -m export.embed --artifact=workdir/export --input=images.npy --output=emb.npy
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from export import jax_export

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _load_images(path: str, image_shape) -> np.ndarray:
  if path.endswith(".npy"):
    images = np.load(path)
  elif os.path.isdir(path):
    from PIL import Image
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
      raise ValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) under {path}.")
    h, w = image_shape[:2]
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((w, h), Image.BILINEAR)) for f in files])
  else:
    raise ValueError(f"--input must be a .npy array or a folder of images, got {path!r}.")
  if images.ndim != 4 or images.shape[1:] != tuple(image_shape):
    raise ValueError(f"Expected images of shape [N, {', '.join(map(str, image_shape))}], got {images.shape}.")
  return images.astype(np.uint8)


def embed_path(artifact_dir: str, input_path: str, output_path: str, batch_size: int = 256) -> str:
  """Reads `input_path`, embeds it with the artifact in `artifact_dir`, writes float32 [N, D] to `output_path`."""
  if not input_path or not os.path.exists(input_path):
    raise FileNotFoundError(f"Input not found: {input_path!r}.")
  card_path = os.path.join(artifact_dir, jax_export.MODEL_CARD)
  if not os.path.exists(card_path):
    raise FileNotFoundError(f"No exported model in {artifact_dir} (run --mode=export first).")
  with open(card_path) as f:
    card = json.load(f)
  images = _load_images(input_path, card["input"]["shape"][1:])
  emb = jax_export.embed_images(artifact_dir, images, batch_size=batch_size, progress=True)
  np.save(output_path, emb)
  return output_path


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--artifact", required=True)
  parser.add_argument("--input", required=True)
  parser.add_argument("--output", required=True)
  parser.add_argument("--batch_size", type=int, default=256)
  args = parser.parse_args()
  print(embed_path(args.artifact, args.input, args.output, args.batch_size))


if __name__ == "__main__":
  main()
