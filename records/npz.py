"""Arrays of a .npz read without loading them: members stored uncompressed (np.savez) are memory-mapped."""

from __future__ import annotations

import struct
import zipfile

import numpy as np


def load_member(path: str, name: str) -> np.ndarray:
  """Array `name` of the npz at `path`: a read-only memmap when stored uncompressed, else loaded (np.savez_compressed).

  KeyError when the npz has no such array.
  """
  with zipfile.ZipFile(path) as z:
    info = z.getinfo(name + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
      with z.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)
  with open(path, "rb") as f:
    # The member's data starts after its local header: 30 bytes + file name + extra field (lengths at 26 and 28).
    f.seek(info.header_offset)
    local = f.read(30)
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    f.seek(info.header_offset + 30 + name_len + extra_len)
    version = np.lib.format.read_magic(f)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in read_header:
      f.seek(-6, 1)  # back to the magic string
      return np.lib.format.read_array(f, allow_pickle=False)
    shape, fortran, dtype = read_header[version](f)
    if dtype.hasobject:
      raise ValueError(f"{path}:{name} holds Python objects; store text as a fixed-width string array.")
    offset = f.tell()
  if not np.prod(shape):
    return np.zeros(shape, dtype)
  return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def member_names(path: str) -> list[str]:
  """Array names in the npz."""
  with zipfile.ZipFile(path) as z:
    return [n[: -len(".npy")] for n in z.namelist() if n.endswith(".npy")]
