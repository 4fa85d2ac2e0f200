"""One example as bytes (an ArrayRecord record), and the checks that turn untrusted fields into typed columns.

Serialization: a msgpack map from column name to value, e.g.
`{"image": <encoded JPEG/PNG bytes>, "label": 3, "caption": "a red circle"}`; values are bytes (encoded images,
columns whose name starts with "image"), str (text), int (labels) or float (scores). msgpack is a small, specified
binary format (https://msgpack.org) readable from any language, with no TensorFlow or protobuf schema.

Column kinds: "image" (encoded bytes -> uint8 [S, S, 3]), "int" (-> int32), "float" (-> float32), "text" (-> str).
A text value is decoded as UTF-8 with invalid bytes replaced (U+FFFD) and cut to MAX_TEXT_CHARS; an empty text is
a missing value. A row that lacks a declared column, or whose value does not convert, is rejected (BadRecord).
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from records import images

KINDS = ("image", "int", "float", "text")
MAX_TEXT_CHARS = 4096  # longer captions are cut: tokenizers keep far fewer tokens, and a 1 MB string is an attack


class BadRecord(ValueError):
  """A record that cannot become a row (missing column, unreadable value)."""


def encode(row: dict[str, Any]) -> bytes:
  """A row (column name -> bytes / str / int / float) -> msgpack bytes."""
  return msgpack.packb(row, use_bin_type=True)


def decode(data: bytes) -> dict[str, Any]:
  """msgpack bytes -> the row's fields; BadRecord for bytes that are not a msgpack map."""
  try:
    row = msgpack.unpackb(data, raw=False, strict_map_key=False, unicode_errors="surrogateescape")
  except Exception as e:  # msgpack raises several types on garbage; all mean one unreadable record.
    raise BadRecord(f"not a msgpack record: {type(e).__name__}") from None
  if not isinstance(row, dict):
    raise BadRecord(f"record is a {type(row).__name__}, not a map")
  return row


def kind_of(name: str, value: Any) -> str:
  """The column kind of a value found in a record."""
  if name.startswith("image") and isinstance(value, (bytes, bytearray)):
    return "image"
  if isinstance(value, bool) or isinstance(value, (int, np.integer)):
    return "int"
  if isinstance(value, (float, np.floating)):
    return "float"
  return "text"


def clean_text(value: Any) -> str | None:
  """UTF-8 text (invalid bytes replaced), at most MAX_TEXT_CHARS characters; None when empty or not text."""
  if isinstance(value, (bytes, bytearray)):
    value = bytes(value[: 4 * MAX_TEXT_CHARS]).decode("utf-8", errors="replace")
  elif isinstance(value, str):
    # Lone surrogates (msgpack's surrogateescape of invalid UTF-8, or any other) become U+FFFD like invalid bytes.
    value = value[:MAX_TEXT_CHARS]
    try:
      value = value.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    except UnicodeEncodeError:
      value = value.encode("utf-8", errors="replace").decode("utf-8")
  else:
    return None
  value = value[:MAX_TEXT_CHARS]
  return value if value.strip() else None


def convert(fields: dict[str, Any], columns: dict[str, str], image_size: int) -> dict[str, Any]:
  """Fields of one record -> {column: uint8 [S, S, 3] | int | float | str} for the declared columns.

  Raises BadRecord (missing / empty / unconvertible value) or the image decoder's error.
  """
  row = {}
  for name, kind in columns.items():
    value = fields.get(name)
    if value is None:
      raise BadRecord(f"missing {name!r}")
    if kind == "image":
      if not isinstance(value, (bytes, bytearray)):
        raise BadRecord(f"{name!r} is not encoded image bytes")
      row[name] = images.decode_image(bytes(value), image_size)
    elif kind == "text":
      row[name] = clean_text(value)
      if row[name] is None:
        raise BadRecord(f"empty or non-text {name!r}")
    else:
      try:
        row[name] = int(value) if kind == "int" else float(value)
      except (TypeError, ValueError):
        raise BadRecord(f"{name!r}={value!r:.40} is not a number") from None
  return row


def empty_columns(columns: dict[str, str], n: int, image_size: int) -> dict[str, np.ndarray]:
  """Arrays to fill with n rows: image uint8 [n, S, S, 3], int int32 [n], float float32 [n], text object [n]."""
  shapes = {"image": ((n, image_size, image_size, 3), np.uint8), "int": ((n,), np.int32), "float": ((n,), np.float32)}
  return {k: np.zeros(*shapes[kind]) if kind in shapes else np.full(n, "", object) for k, kind in columns.items()}
