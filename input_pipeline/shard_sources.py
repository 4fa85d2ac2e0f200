"""Sources over shard files, none holding the dataset in host memory: ArrayRecord (random access), WebDataset tar and
TFRecord (streamed), and TFDS (its `data_source` when stored as ArrayRecord, else its TFRecord files streamed).

ArrayRecord and tar import no TensorFlow. The columns and class names come from `info.json` next to the shards
(written by `python -m input_pipeline.convert`), else from the first record. Registered in `sources.SOURCES` on import.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np

from input_pipeline.sources import Source, StreamSource, register, rows_to_columns, split_paths
from records import array_records, examples, images, tfrecord, webdataset

TAR_COLUMNS = {"image": "image", "caption": "text", "label": "int"}


def read_info(paths: list[str]) -> dict:
  """info.json of the folder holding the first shard ({} when absent): columns, class_names, splits' rows."""
  path = os.path.join(os.path.dirname(paths[0]), "info.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def shard_rows(info: dict, paths: list[str]) -> list[int] | None:
  """Rows of each shard from info.json, or None when it does not list them all."""
  listed = {name: n for split in info.get("splits", {}).values() for name, n in split.get("shards", {}).items()}
  rows = [listed.get(os.path.basename(p)) for p in paths]
  return None if any(n is None for n in rows) else rows


def infer_columns(fields: dict[str, Any], allowed: dict[str, str] | None = None) -> dict[str, str]:
  """Column kinds of a record's fields (restricted to `allowed`, a name -> kind map, when given)."""
  if allowed is not None:
    return {k: kind for k, kind in allowed.items() if k in fields}
  return {k: examples.kind_of(k, v) for k, v in fields.items()}


class ArrayRecordSource(Source):
  """ArrayRecord shards of msgpack examples (records.examples), read by global record index."""

  def __init__(self, paths: list[str], image_size: int, info: dict):
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    rows = shard_rows(info, paths)
    specs = [f"{p}[0:{n}]" for p, n in zip(paths, rows)] if rows else paths  # known sizes: no file opened yet
    try:
      # The reader keeps its shard's record index in memory (20-40 bytes a record, measured): "offloaded"
      # indices cost as much here and read 16x slower.
      self.data = ArrayRecordDataSource(specs)
    except RuntimeError as e:
      raise ValueError(f"Cannot open the ArrayRecord shards {paths[0]!r}...: {e}") from None
    self.num_rows, self.image_size = len(self.data), image_size
    self.columns = info.get("columns") or (infer_columns(examples.decode(self.data[0])) if self.num_rows else {})
    self.class_names = info.get("class_names")

  def _raw(self, indices: list[int]) -> list[bytes | None]:
    out = []
    for i, raw in zip(indices, array_records.read_records(self.data, indices)):
      if isinstance(raw, Exception):
        logging.warning("input_pipeline: unreadable ArrayRecord record %d: %s", i, raw)
        raw = None
      out.append(raw)
    return out

  def read(self, indices):
    indices, fields = np.asarray(indices).tolist(), []
    for raw in self._raw(indices):
      try:
        fields.append(None if raw is None else examples.decode(raw))
      except examples.BadRecord as e:
        fields.append(e)
    return rows_to_columns(fields, self.columns, self.image_size, indices)


@register("array_record")
def array_record_source(data_config, split):
  paths = split_paths(data_config, split, "ArrayRecord shards")
  return ArrayRecordSource(paths, data_config.image_size, read_info(paths))


class TarSource(StreamSource):
  """WebDataset tar shards (records.webdataset): image + caption (.txt) and / or label (.cls / .json)."""

  def __init__(self, paths: list[str], image_size: int, info: dict):
    self.shards, self.image_size = paths, image_size
    self.rows = shard_rows(info, paths)
    self.columns = info.get("columns") or self._first_columns()
    self.class_names = info.get("class_names")

  def _first_columns(self) -> dict[str, str]:
    for shard in range(len(self.shards)):
      for sample in webdataset.iter_samples(self.shards[shard]):
        if sample is not None:
          return infer_columns(webdataset.sample_fields(sample), TAR_COLUMNS)
    raise ValueError(f"No readable sample in the tar shards {self.shards[0]!r}...")

  def records(self, shard, skip):
    return webdataset.iter_samples(self.shards[shard], skip)

  def decode(self, records):
    fields = [None if s is None else webdataset.sample_fields(s) for s in records]
    return rows_to_columns(fields, self.columns, self.image_size)

  def count(self, shard):
    return self.rows[shard] if self.rows else webdataset.count_samples(self.shards[shard])


@register("tar")
def tar_source(data_config, split):
  paths = split_paths(data_config, split, "tar shards")
  return TarSource(paths, data_config.image_size, read_info(paths))


def _example_fields(raw: bytes) -> dict[str, Any]:
  """tf.train.Example -> fields: "image" (or "image/encoded") bytes, int "label", "caption" / "text" bytes."""
  import tensorflow as tf

  feature = tf.train.Example.FromString(raw).features.feature
  fields = {}
  for name, keys in (("image", ("image", "image/encoded")), ("caption", ("caption", "text"))):
    values = next((feature[k].bytes_list.value for k in keys if k in feature), None)
    if values:
      fields[name] = values[0]
  label = next((feature[k].int64_list.value for k in ("label", "image/class/label") if k in feature), None)
  if label:
    fields["label"] = label[0]
  return fields


class TFRecordSource(StreamSource):
  """TFRecord files of tf.train.Example, framed by records.tfrecord and parsed with TensorFlow's proto."""

  def __init__(self, paths: list[str], image_size: int):
    self.shards, self.image_size = paths, image_size
    first = next((r for p in paths for r in tfrecord.iter_records(p) if r is not None), None)
    if first is None:
      raise ValueError(f"No readable record in the TFRecord files {paths[0]!r}...")
    self.columns = infer_columns(_example_fields(first), TAR_COLUMNS)

  def records(self, shard, skip):
    return tfrecord.iter_records(self.shards[shard], skip)

  def decode(self, records):
    fields = []
    for raw in records:
      try:
        fields.append(None if raw is None else _example_fields(raw))
      except Exception as e:  # protobuf's DecodeError: not an Example
        fields.append(e)
    return rows_to_columns(fields, self.columns, self.image_size)

  def count(self, shard):
    return tfrecord.count_records(self.shards[shard])


@register("tfrecord")
def tfrecord_source(data_config, split):
  """tf.train.Example records with encoded image bytes ("image" or "image/encoded"), an int label, a caption."""
  return TFRecordSource(split_paths(data_config, split, "TFRecord files"), data_config.image_size)


# ---------------------------------------------------------------------------------------------------------------
# TFDS.


def _tfds_fields(example: dict, image_key: str | None) -> dict[str, Any]:
  """A TFDS example (image left encoded) -> fields "image" bytes, "label" int, "caption" (first one)."""
  fields = {}
  if image_key is not None:
    image = example[image_key]
    # Datasets whose images arrive decoded (e.g. mock data) are re-encoded: one decode path for every source.
    fields["image"] = image if isinstance(image, bytes) else images.encode_png(np.asarray(image))
  if "label" in example:
    fields["label"] = int(example["label"])
  caption = example.get("caption", example.get("captions"))
  if isinstance(caption, dict):
    caption = caption.get("text")
  if caption is not None:
    fields["caption"] = caption[0] if np.ndim(caption) else caption
  return fields


class TfdsSource(Source):
  """A TFDS split through `builder.as_data_source` (ArrayRecord files, random access)."""

  def __init__(self, data, image_key: str | None, columns: dict[str, str], image_size: int):
    self.data, self.image_key, self.columns, self.image_size = data, image_key, columns, image_size
    self.num_rows = len(data)

  def read(self, indices):
    indices = np.asarray(indices).tolist()
    fields = [_tfds_fields(self.data[i], self.image_key) for i in indices]
    return rows_to_columns(fields, self.columns, self.image_size, indices)


class TfdsStreamSource(StreamSource):
  """A TFDS split stored as TFRecord files: each file instruction is a shard, examples parsed with NumPy."""

  def __init__(self, builder, instructions, decoders, image_key, columns, image_size):
    self.builder, self.instructions, self.decoders = builder, instructions, decoders
    self.shards = [os.fspath(i.filename) for i in instructions]
    self.image_key, self.columns, self.image_size = image_key, columns, image_size

  def records(self, shard, skip):
    instruction = self.instructions[shard]
    take = instruction.take - skip
    for k, raw in enumerate(tfrecord.iter_records(self.shards[shard], instruction.skip + skip)):
      if k >= take:
        return
      yield raw

  def decode(self, records):
    features, fields = self.builder.info.features, []
    for raw in records:
      try:
        example = None if raw is None else features.deserialize_example_np(raw, decoders=self.decoders)
        fields.append(None if example is None else _tfds_fields(example, self.image_key))
      except Exception as e:  # an undecodable record
        fields.append(e)
    return rows_to_columns(fields, self.columns, self.image_size)

  def count(self, shard):
    return self.instructions[shard].take


@register("tfds")
def tfds_source(data_config, split):
  """Any TFDS dataset prepared in data_dir (shapes generates locally; others download only with data_config.download)."""
  import tensorflow_datasets as tfds

  dataset = data_config.name[len("tfds:") :]
  builder = _tfds_builder(tfds, dataset, data_config)
  features = builder.info.features
  image_key = next((k for k in ("image", "img") if k in features), None)
  decoders = {image_key: tfds.decode.SkipDecoding()} if image_key else None
  columns = {"image": "image"} if image_key else {}
  if "label" in features:
    columns["label"] = "int"
  if any(k in features for k in ("caption", "captions")):
    columns["caption"] = "text"
  try:
    source = TfdsSource(
      builder.as_data_source(split=split, decoders=decoders), image_key, columns, data_config.image_size
    )
  except NotImplementedError:  # TFRecord files: no random access, streamed instead
    instructions = builder.info.splits[split].file_instructions
    source = TfdsStreamSource(builder, instructions, decoders, image_key, columns, data_config.image_size)
  label = features["label"] if "label" in features else None
  source.class_names = list(label.names) if hasattr(label, "names") else None
  return source


def _tfds_builder(tfds, dataset: str, data_config):
  local = dataset.split("/")[0].split(":")[0] == "shapes"
  if local:
    from input_pipeline import shapes_tfds  # noqa: F401  (registers the builder)
  try:
    builder = tfds.builder(dataset, data_dir=data_config.data_dir or None)
  except Exception as e:
    raise ValueError(f"No TFDS dataset {dataset!r}: {e}") from None
  if not builder.is_prepared():
    if local or data_config.download:  # The local builder generates, never downloads.
      builder.download_and_prepare()
    else:
      raise ValueError(
        f"TFDS dataset {dataset!r} is not prepared in {builder.data_dir!r}. Prepare it once with "
        f"`tfds build {dataset}` (add `--data_dir=DIR` and set data_config.data_dir to match), or set "
        f"data_config.download=True to let the pipeline download it."
      )
  return builder
