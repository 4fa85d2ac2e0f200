"""Image bytes <-> uint8 arrays, with the evaluation preprocessing every reader shares (short side resize, centre crop)."""

from __future__ import annotations

import io

import numpy as np


def decode_image(data: bytes, image_size: int) -> np.ndarray:
  """Encoded image bytes -> uint8 [S, S, 3]: RGB, shorter side resized to S, centre-cropped."""
  from PIL import Image

  with Image.open(io.BytesIO(data)) as im:
    im = im.convert("RGB")
    w, h = im.size
    if (w, h) != (image_size, image_size):
      scale = image_size / min(w, h)
      nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
      im = im.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
      left, top = (nw - image_size) // 2, (nh - image_size) // 2
      im = im.crop((left, top, left + image_size, top + image_size))
    return np.asarray(im, np.uint8)


def encode_png(x: np.ndarray) -> bytes:
  """uint8 [H, W, 3] or [H, W, 1] -> PNG bytes."""
  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(np.asarray(x, np.uint8).squeeze(-1) if x.shape[-1] == 1 else np.asarray(x, np.uint8)).save(
    buf, format="PNG"
  )
  return buf.getvalue()
