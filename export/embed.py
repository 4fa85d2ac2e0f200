"""Embeds images or sentences with an exported encoder; needs only jax, numpy, Pillow and the project's tokenizers
(no training code, no TensorFlow).

    python -m export.embed --artifact=workdir/export --input=images.npy --output=emb.npy      # image tower
    python -m export.embed --artifact=workdir/export --input=sentences.txt --output=emb.npy   # text tower

Inputs: a folder of images or a .npy of uint8 [N, H, W, 3] (image tower); a UTF-8 text file with one sentence per
line (text tower, row i of the output = line i); with --tower=text a .npy of int32 token ids [N, L].
"""

from __future__ import annotations

import argparse
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
    raise ValueError(f"The image tower takes a .npy array or a folder of images, got {path!r}.")
  if images.ndim != 4 or images.shape[1:] != tuple(image_shape):
    raise ValueError(f"Expected images of shape [N, {', '.join(map(str, image_shape))}], got {images.shape}.")
  return images.astype(np.uint8)


def _load_tokens(path: str, artifact_dir: str, tokenizer: dict) -> np.ndarray:
  """int32 [N, max_len]: a .npy of token ids as is, else the lines of a UTF-8 text file tokenized as the card says."""
  max_len = tokenizer["max_len"]
  if path.endswith(".npy"):
    tokens = np.load(path)
    if tokens.ndim != 2 or tokens.shape[1] != max_len or not np.issubdtype(tokens.dtype, np.integer):
      raise ValueError(f"Expected int token ids of shape [N, {max_len}], got {tokens.dtype} {tokens.shape}.")
    return tokens.astype(np.int32)
  if os.path.isdir(path):
    raise ValueError(
      f"The text tower takes a text file (one sentence per line) or a .npy of token ids, got the folder {path!r}."
    )
  import tokenization as tokenizers

  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  file = os.path.join(artifact_dir, tokenizer["file"]) if tokenizer.get("file") else ""
  return tokenizers.get(tokenizer["name"], file).encode(lines, max_len)


def default_tower(input_path: str) -> str:
  """The tower an input goes to: images for a folder or a .npy, text for any other file."""
  return "image" if os.path.isdir(input_path) or input_path.endswith(".npy") else "text"


def embed_path(
  artifact_dir: str, input_path: str, output_path: str, batch_size: int = 256, tower: str | None = None
) -> str:
  """Reads `input_path`, embeds it with the exported `tower` (default: by input type), writes float32 [N, D] to
  `output_path`."""
  if not input_path or not os.path.exists(input_path):
    raise FileNotFoundError(f"Input not found: {input_path!r}.")
  card = jax_export.read_card(artifact_dir)
  tower = tower or default_tower(input_path)
  towers = card.get("towers", {})
  if tower not in towers:
    raise ValueError(
      f"{artifact_dir} has no exported {tower} tower (it has: {', '.join(sorted(towers)) or 'none'}); "
      "pass --tower or an input of the other kind."
    )
  if tower == "image":
    inputs = _load_images(input_path, towers["image"]["input"]["shape"][1:])
  else:
    inputs = _load_tokens(input_path, artifact_dir, towers["text"]["tokenizer"])
  emb = jax_export.embed_arrays(artifact_dir, inputs, tower=tower, batch_size=batch_size, progress=True)
  np.save(output_path, emb)
  return output_path


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--artifact", required=True)
  parser.add_argument("--input", required=True)
  parser.add_argument("--output", required=True)
  parser.add_argument("--tower", choices=("image", "text"), default=None, help="default: by the input's type")
  parser.add_argument("--batch_size", type=int, default=256)
  args = parser.parse_args()
  print(embed_path(args.artifact, args.input, args.output, args.batch_size, args.tower))


if __name__ == "__main__":
  main()
