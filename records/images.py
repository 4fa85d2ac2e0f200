"""Image bytes <-> uint8 arrays, with the evaluation preprocessing every reader shares (short side resize, centre crop).

`decode_image` is the one decoder of untrusted bytes: it raises (never hangs, never allocates unbounded memory) on
random bytes, truncated files, zero-byte files and decompression bombs, and maps every Pillow mode to RGB: CMYK,
grayscale, palette, 16-bit grayscale (scaled, not clipped) and images with alpha (composited over white, as
img2dataset does). Readers catch its exceptions and skip the row.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Declared sizes above this are decompression bombs (a few bytes that decode to gigabytes): refused before decoding.
# Pillow's own guard is set to the same value (it warns above it and raises above twice it).
MAX_PIXELS = 8192 * 8192
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def _to_rgb(im: Image.Image) -> Image.Image:
  """Any Pillow mode -> RGB: alpha over white, 16/32-bit grayscale scaled to 8 bits."""
  if im.mode == "RGB":
    return im
  if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
    # 16-bit grayscale PNGs open as I;16 or I; convert("RGB") would clip them to white.
    gray = np.clip(np.asarray(im, np.float64) / 257.0, 0, 255)
    return Image.fromarray(np.round(gray).astype(np.uint8)).convert("RGB")
  if im.mode == "F":
    return Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8)).convert("RGB")
  if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
    background = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, im.convert("RGBA")).convert("RGB")
  return im.convert("RGB")


def decode_image(data: bytes, image_size: int) -> np.ndarray:
  """Encoded image bytes -> uint8 [S, S, 3]: RGB, shorter side resized to S, centre-cropped.

  Raises on anything that is not a readable image of at most MAX_PIXELS pixels.
  """
  with Image.open(io.BytesIO(data)) as im:
    w, h = im.size
    if w * h > MAX_PIXELS or not w or not h:
      raise Image.DecompressionBombError(f"declared size {w}x{h} is outside 1..{MAX_PIXELS} pixels")
    if im.format == "JPEG" and min(w, h) >= 2 * image_size:
      # Decode in the DCT domain at 1/2, 1/4 or 1/8 scale, never below the target short side: big JPEGs cost less.
      scale = image_size / min(w, h)
      im.draft("RGB", (round(w * scale), round(h * scale)))
    im = _to_rgb(im)
    w, h = im.size
    if (w, h) != (image_size, image_size):
      scale = image_size / min(w, h)
      nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
      im = im.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
      left, top = (nw - image_size) // 2, (nh - image_size) // 2
      im = im.crop((left, top, left + image_size, top + image_size))
    return np.asarray(im, np.uint8)


_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF8", "gif"), (b"BM", "bmp"))


def image_format(data: bytes) -> str:
  """The file extension of encoded image bytes ("jpg", "png", ...): magic bytes, else Pillow's identification."""
  for magic, ext in _MAGIC:
    if data.startswith(magic):
      return ext
  if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
    return "webp"
  with Image.open(io.BytesIO(data)) as im:
    return {"JPEG": "jpg", "MPO": "jpg"}.get(im.format, (im.format or "img").lower())


def encode_png(x: np.ndarray) -> bytes:
  """uint8 [H, W, 3] or [H, W, 1] -> PNG bytes."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(x, np.uint8).squeeze(-1) if x.shape[-1] == 1 else np.asarray(x, np.uint8)).save(
    buf, format="PNG"
  )
  return buf.getvalue()


def encode_jpeg(x: np.ndarray, quality: int = 95) -> bytes:
  """uint8 [H, W, 3] -> JPEG bytes."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(x, np.uint8)).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()
