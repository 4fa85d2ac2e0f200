"""WebDataset / img2dataset tar shards: consecutive members `KEY.EXT` with one KEY form one sample.

A shard `000000.tar` holds e.g. `000000000.jpg`, `000000000.txt`, `000000000.json`, `000000001.jpg`, ... (the key is
the member path up to the first dot of its base name, the extension the rest, lower-cased). A sample's fields:
"image" from the first image extension, "caption" from `.txt` (else the json's "caption"), "label" from `.cls`
(else the json's "label"); other json keys are ignored. Shards are read front to back (plain or compressed tar),
never unpacked, and a reader can start at any sample by skipping headers without reading data.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from typing import Any

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "ppm", "tif", "tiff")


def split_name(name: str) -> tuple[str, str]:
  """Member path -> (key, extension): "dir/000001.seg.png" -> ("dir/000001", "seg.png")."""
  base = name.rfind("/") + 1
  dot = name.find(".", base)
  return (name, "") if dot < 0 else (name[:dot], name[dot + 1 :].lower())


def iter_samples(path: str, skip: int = 0) -> Iterator[dict[str, bytes] | None]:
  """Samples of one shard ({extension: bytes}) from sample `skip` on; `None` once if the rest is unreadable.

  A member cut short (a truncated copy) or a damaged header loses its sample, reported as one `None`, and ends the
  shard; a shard cut exactly between two samples ends after the last whole one. Memory: one sample.
  """
  try:
    tar = tarfile.open(path, "r:*")
  except (tarfile.TarError, OSError, EOFError):
    yield None
    return
  with tar:
    key, fields, index = None, {}, 0
    try:
      for member in tar:
        tar.members = []  # TarFile keeps every header it has read; a shard of 10k samples would keep 30k.
        if not member.isfile():
          continue
        member_key, ext = split_name(member.name)
        if member_key != key:
          if key is not None and index >= skip:
            yield fields
          index += key is not None
          key, fields = member_key, {}
        if index >= skip:
          fields[ext] = tar.extractfile(member).read()
      damaged = _damaged_tail(tar)
    except (tarfile.TarError, OSError, EOFError):
      yield None
      return
    if key is not None and index >= skip:
      yield fields
    if damaged:
      yield None


def _damaged_tail(tar: tarfile.TarFile) -> bool:
  """Whether the bytes where TarFile stopped are a partial or corrupt header rather than the zero end blocks."""
  tar.fileobj.seek(tar.offset)
  return bool(tar.fileobj.read(2 * tarfile.BLOCKSIZE).strip(b"\0"))


def count_samples(path: str) -> int:
  """Samples in a shard (those before any damage), from its headers only."""
  count, last = 0, None
  try:
    with tarfile.open(path, "r:*") as tar:
      for member in tar:
        tar.members = []
        key = split_name(member.name)[0]
        if member.isfile() and key != last:
          count, last = count + 1, key
  except (tarfile.TarError, OSError, EOFError):
    pass
  return count


def sample_fields(sample: dict[str, bytes]) -> dict[str, Any]:
  """Tar sample -> fields {"image": bytes, "caption": bytes, "label": int | str, ...} (absent ones left out)."""
  fields: dict[str, Any] = {}
  meta = sample.get("json")
  if meta is not None:
    try:
      meta = json.loads(meta)
    except ValueError:
      meta = None
    if isinstance(meta, dict):
      fields.update({k: meta[k] for k in ("caption", "label") if meta.get(k) is not None})
  image = next((sample[e] for e in IMAGE_EXTENSIONS if e in sample), None)
  if image is not None:
    fields["image"] = image
  if "txt" in sample:
    fields["caption"] = sample["txt"]
  if "cls" in sample:
    fields["label"] = sample["cls"].decode("ascii", errors="replace").strip()
  return fields


def write_shard(path: str, samples: Iterable[tuple[str, dict[str, bytes]]]) -> int:
  """Writes (key, {extension: bytes}) samples to a tar at `path` (via a temporary name); returns the count."""
  count = 0
  with tarfile.open(path + ".tmp", "w") as tar:
    for key, members in samples:
      for ext, data in members.items():
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
      count += 1
  os.replace(path + ".tmp", path)
  return count
