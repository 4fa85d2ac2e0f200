"""What `export.embed` reads: readers that stream records from an input path, and the per-record preparation
(image decoding with the model card's preprocessing) that turns a record into tower inputs or a skip reason.

A reader is one generator function `path -> Iterator[Record]` registered with `@reader(name, suffixes)`; records
are yielded in a fixed order and read their bytes lazily, so a resumed run skips the first K of them cheaply (shard
readers read the skipped records' bytes again, one at a time).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from collections.abc import Callable, Iterator

import numpy as np

from records import array_records, examples, images, shards, webdataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# 8-bit modes that PIL converts to RGB without loss of meaning; 16-bit / 32-bit integer and float images ("I;16",
# "I", "F") would be clipped to 255 by that conversion, so they are skipped instead of embedded as white noise.
EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
TEXT_KEYS = ("text", "caption")


@dataclasses.dataclass(frozen=True)
class Record:
  """One input of the stream: where it comes from (the index fields) and how to get its image and / or text."""

  source: dict  # written to the index as is: {"path": ...}, {"line": n, "text": ...}, {"item": i}, ...
  image: Callable[[], bytes | np.ndarray] | None = None  # encoded bytes, or uint8 [H, W, 3] pixels
  text: str | None = None
  tokens: np.ndarray | None = None  # int token ids [L], from a .npy of ids
  error: str = ""  # "kind: detail" when the reader already knows the record is bad (e.g. invalid UTF-8)


READERS: dict[str, Callable[[str], Iterator[Record]]] = {}
SUFFIXES: dict[str, str] = {}


def reader(name: str, suffixes: tuple[str, ...] = ()):
  """Registers `fn(path) -> Iterator[Record]` as input format `name`, chosen by default for files ending in
  `suffixes`."""

  def register(fn):
    READERS[name] = fn
    SUFFIXES.update({s: name for s in suffixes})
    return fn

  return register


def detect_format(path: str) -> str:
  """The reader for `path`: a folder, a registered suffix, else a text file of image paths when its first
  non-empty line ends with an image extension, else sentences."""
  if os.path.isdir(path):
    return "folder"
  suffix = next((s for s in SUFFIXES if path.lower().endswith(s)), None)
  if suffix:
    return SUFFIXES[suffix]
  with open(path, "rb") as f:
    first = next((line.strip() for line in f if line.strip()), b"")
  return "paths" if first.lower().endswith(tuple(e.encode() for e in IMAGE_EXTENSIONS)) else "sentences"


def _read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _image_file(path: str, shown: str | None = None, **source) -> Record:
  return Record({"path": shown or path, **source}, image=functools.partial(_read_bytes, path))


def _lines(path: str) -> Iterator[tuple[int, str | None, str]]:
  """(1-based line number, text or None, error) of each line of a file, streamed; invalid UTF-8 is an error."""
  with open(path, "rb") as f:
    for number, raw in enumerate(f, 1):
      raw = raw.rstrip(b"\n").rstrip(b"\r")
      try:
        yield number, raw.decode("utf-8"), ""
      except UnicodeDecodeError as e:
        yield number, None, f"invalid utf-8: byte {e.start} of the line ({raw[e.start : e.start + 1]!r})"


@reader("folder")
def read_folder(path: str) -> Iterator[Record]:
  """Every file with an image extension under `path`, recursively, in sorted order: a folder's files, then its
  subfolders' (depth first)."""
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
        yield _image_file(os.path.join(root, name))


@reader("image", IMAGE_EXTENSIONS)
def read_image(path: str) -> Iterator[Record]:
  """One image file."""
  yield _image_file(path)


@reader("paths")
def read_paths(path: str) -> Iterator[Record]:
  """A text file of image paths, one per line (relative ones to the file's folder); blank lines are ignored."""
  base = os.path.dirname(os.path.abspath(path))
  for number, line, error in _lines(path):
    if error:
      yield Record({"line": number}, error=error)
    elif line.strip():
      yield _image_file(os.path.join(base, line.strip()), line.strip(), line=number)


@reader("sentences")
def read_sentences(path: str) -> Iterator[Record]:
  """A UTF-8 text file, one sentence per line (an empty line is the empty sentence, so row i is line i + 1 until
  a line is skipped)."""
  for number, line, error in _lines(path):
    yield Record({"line": number, "text": line}, text=line, error=error)


def _pair(source: dict, fields: dict, base: str) -> Record:
  """A record of an image path (relative to `base`) and / or a text, from parsed JSONL / TSV fields."""
  image, text = fields.get("image"), next((fields[k] for k in TEXT_KEYS if k in fields), None)
  if not isinstance(image, str | None) or not isinstance(text, str | None) or (image is None and text is None):
    return Record(source, error='bad record: needs a string "image" (path) and / or "text" field')
  source = {**source, **({"path": image} if image is not None else {}), **({"text": text} if text is not None else {})}
  load = functools.partial(_read_bytes, os.path.join(base, image)) if image is not None else None
  return Record(source, image=load, text=text)


@reader("jsonl", (".jsonl",))
def read_jsonl(path: str) -> Iterator[Record]:
  """One JSON object per line with "image" (a path, relative to the file's folder) and / or "text" ("caption")."""
  base = os.path.dirname(os.path.abspath(path))
  for number, line, error in _lines(path):
    if error or not line.strip():
      if error:
        yield Record({"line": number}, error=error)
      continue
    try:
      fields = json.loads(line)
    except ValueError as e:
      yield Record({"line": number}, error=f"bad record: {e}")
      continue
    yield _pair({"line": number}, fields if isinstance(fields, dict) else {}, base)


@reader("tsv", (".tsv",))
def read_tsv(path: str) -> Iterator[Record]:
  """Tab-separated rows: a header naming "image" and / or "text" ("caption") columns, or without one, one column
  (text) or two (image path, text)."""
  base, names = os.path.dirname(os.path.abspath(path)), None
  for number, line, error in _lines(path):
    if error:
      yield Record({"line": number}, error=error)
      continue
    fields = line.split("\t")
    if number == 1 and {"image", *TEXT_KEYS} & set(fields):
      names = fields
      continue
    columns = names or {1: ["text"], 2: ["image", "text"]}.get(len(fields), [])
    if len(fields) != len(columns):
      yield Record({"line": number}, error=f"bad record: {len(fields)} tab-separated fields, expected {len(columns)}")
      continue
    yield _pair({"line": number}, dict(zip(columns, fields)), base)


@reader("npy", (".npy",))
def read_npy(path: str) -> Iterator[Record]:
  """A memory-mapped .npy: uint8 images [N, H, W, 3] or int token ids [N, L]; row i is item i."""
  array = np.load(path, mmap_mode="r")
  if array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] == 3:
    return (Record({"item": i}, image=functools.partial(array.__getitem__, i)) for i in range(len(array)))
  if array.ndim == 2 and np.issubdtype(array.dtype, np.integer):
    return (Record({"item": i}, tokens=np.asarray(array[i], np.int32)) for i in range(len(array)))
  raise ValueError(
    f"{path} holds {array.dtype} {array.shape}: expected uint8 images [N, H, W, 3] or integer token ids [N, L]."
  )


def _shard_paths(pattern: str, what: str) -> list[str]:
  """The shard files of a path, glob or braces ("DIR/{000..009}.tar"); ValueError when none or some are missing."""
  paths, missing = shards.shard_files(pattern)
  if missing:
    raise ValueError(f"No {what} at {missing[0]!r} (from {pattern!r}).")
  if not paths:
    raise ValueError(f"No {what} match {pattern!r}.")
  return paths


def _row_record(source: dict, fields: dict) -> Record:
  """A record of a shard row's fields: "image" bytes and / or a text ("caption" or "text")."""
  image = fields.get("image")
  text = next((examples.clean_text(fields[k]) for k in TEXT_KEYS if k in fields), None)
  if image is not None and not isinstance(image, bytes | bytearray):
    return Record(source, error="bad record: the image field is not encoded image bytes")
  if image is None and text is None:
    return Record(source, error="bad record: neither an image nor a text")
  source = {**source, **({"text": text} if text is not None else {})}
  return Record(source, image=(lambda: bytes(image)) if image is not None else None, text=text)


@reader("tar", (".tar", ".tar.gz", ".tgz"))
def read_tar(path: str) -> Iterator[Record]:
  """WebDataset / img2dataset tar shards (key.jpg + key.txt + key.json; records.webdataset), a shard or a pattern;
  rows in shard order. A damaged member ends its shard with one skipped row."""
  for shard in _shard_paths(path, "tar shards"):
    for i, sample in enumerate(webdataset.iter_samples(shard)):
      source = {"shard": shard, "sample": i}
      if sample is None:
        yield Record(source, error="damaged: unreadable tar member; the rest of the shard is lost")
      else:
        yield _row_record(source, webdataset.sample_fields(sample))


@reader("array_record", (".array_record",))
def read_array_record(path: str) -> Iterator[Record]:
  """ArrayRecord shards of msgpack examples (`python -m input_pipeline.convert`), a shard or a pattern; rows in
  shard order, read 256 records at a time."""
  from array_record.python.array_record_data_source import ArrayRecordDataSource

  for shard in _shard_paths(path, "ArrayRecord shards"):
    try:
      data = ArrayRecordDataSource([shard])
    except Exception as e:  # not an ArrayRecord file: one skipped row, never the run's end
      yield Record({"shard": shard}, error=f"damaged: cannot open the shard: {e}")
      continue
    for start in range(0, len(data), 256):
      for i, raw in enumerate(array_records.read_records(data, range(start, min(start + 256, len(data)))), start):
        source = {"shard": shard, "record": i}
        try:
          if isinstance(raw, Exception):
            raise examples.BadRecord(f"unreadable: {raw}")
          yield _row_record(source, examples.decode(raw))
        except examples.BadRecord as e:
          yield Record(source, error=f"bad record: {e}")


class Skip(Exception):
  """A bad input; the message is its skip reason, "kind: detail" (kinds are counted in the summary)."""


def _decode_error(e: Exception) -> Skip:
  from PIL import Image

  if isinstance(e, Image.UnidentifiedImageError):
    return Skip("not an image: PIL cannot identify the format")
  if "truncated" in str(e).lower():
    return Skip(f"truncated: {e}")
  return Skip(f"corrupt: {type(e).__name__}: {e}")


def decode(data: bytes | np.ndarray, image_size: int) -> np.ndarray:
  """Encoded bytes (or uint8 pixels [H, W, 3]) -> uint8 [S, S, 3], as the evaluation path decodes them
  (`records.images.decode_image`: RGB, shorter side resized to S, centre crop); Skip on a bad image."""
  from PIL import Image

  if isinstance(data, np.ndarray):  # pixels: as they are at the model's size, else through the same resize + crop
    pixels = np.asarray(data, np.uint8)
    return pixels if pixels.shape == (image_size, image_size, 3) else decode(images.encode_png(pixels), image_size)
  if not data:
    raise Skip("empty: the file has 0 bytes")
  try:
    with Image.open(io.BytesIO(data)) as im:
      mode = im.mode
    if mode not in EIGHT_BIT_MODES:
      raise Skip(f"wrong mode: {mode} is not an 8-bit image mode")
    return images.decode_image(data, image_size)
  except Skip:
    raise
  except Exception as e:  # any decoder failure is this file's skip reason, never the run's end
    raise _decode_error(e) from e


def _read(record: Record) -> bytes | np.ndarray:
  try:
    return record.image()
  except FileNotFoundError:
    raise Skip("missing: no such file") from None
  except OSError as e:
    raise Skip(f"unreadable: {e.strerror or e}") from None


def prepare(record: Record, towers: tuple[str, ...], image_size: int) -> tuple[dict, str]:
  """({tower: input}, "") for a good record (image uint8 [S, S, 3]; text str or token ids int32 [L]), else ({},
  skip reason). Runs in worker threads; never raises on bad data."""
  try:
    if record.error:
      raise Skip(record.error)
    out = {}
    if "image" in towers:
      if record.image is None:
        raise Skip("missing: no image in this record")
      out["image"] = decode(_read(record), image_size)
    if "text" in towers:
      if record.text is None and record.tokens is None:
        raise Skip("missing: no text in this record")
      out["text"] = record.tokens if record.tokens is not None else record.text
    return out, ""
  except Skip as e:
    return {}, str(e)


def towers_of(record: Record) -> tuple[str, ...]:
  """The towers a record can feed."""
  return (("image",) if record.image is not None else ()) + (
    ("text",) if record.text is not None or record.tokens is not None else ()
  )
