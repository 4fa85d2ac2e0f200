"""TFRecord files read front to back without TensorFlow: the framing only (records are opaque bytes).

Format (https://www.tensorflow.org/tutorials/load_data/tfrecord): per record `uint64 length`, `uint32 masked crc32c
of length`, `length bytes`, `uint32 masked crc32c of data`, little-endian. The CRCs are not checked (the standard
library has no crc32c); a length past the end of the file or a short read is a truncated file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator


def iter_records(path: str, skip: int = 0) -> Iterator[bytes | None]:
  """Records of one file from record `skip` on; `None` once if the rest is truncated or corrupt."""
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    index = 0
    while True:
      header = f.read(12)
      if not header:
        return
      if len(header) < 12:
        yield None
        return
      (length,) = struct.unpack("<Q", header[:8])
      if f.tell() + length + 4 > size:  # a cut file, or a corrupt length that would ask for petabytes
        yield None
        return
      if index < skip:
        f.seek(length + 4, os.SEEK_CUR)
      else:
        data = f.read(length)
        f.seek(4, os.SEEK_CUR)
        yield data
      index += 1


def count_records(path: str) -> int:
  """Records in a file (those before any damage), from the length fields only."""
  count = 0
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    while len(header := f.read(12)) == 12:
      (length,) = struct.unpack("<Q", header[:8])
      if f.tell() + length + 4 > size:
        break
      f.seek(length + 4, os.SEEK_CUR)
      count += 1
  return count
