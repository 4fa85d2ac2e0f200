"""Converter: bring your data as ArrayRecord or WebDataset tar shards, plus DIR/info.json (rows, columns, classes).

    python -m input_pipeline.convert --input=pairs.jsonl --output=DIR --format=tar --shard_size=10000
    python -m input_pipeline.convert --input=../shared/data/cifar10.npz --output=DIR --format=array_record --split=test
    python -m input_pipeline.convert --input=images/ --output=DIR --format=array_record     # root/[split/]class/*.jpg
    python -m input_pipeline.convert --input=tfds:cifar10 --output=DIR --format=array_record --data_dir=~/tfds

Inputs: a JSONL file of {"image": path, "text": caption[, "label": int]} lines ("{split}" substituted); an image
folder; an npz of arrays (`{split}_images` uint8 [N, H, W, 3], `{split}_labels`, `{split}_captions`), or a flat
JPEG npz like ../shared/data/cifar10.npz; a TFDS dataset `tfds:<name>` (needs TensorFlow). Encoded images are
copied as they are; arrays are encoded (PNG: lossless, or --image_format=jpeg). Every row is checked by decoding it
as training will: unreadable images, bombs, missing or empty captions and malformed lines are skipped and counted.

Output: DIR/{split}-00000.array_record ... (one msgpack example per record, records/examples.py; group_size 1 for
random access) or DIR/{split}-00000.tar ... (KEY.jpg|png + KEY.txt + KEY.cls + KEY.json). Train from them with
data.name="array_record" / "tar" and data.path="DIR/{split}-*.array_record" / "DIR/{split}-*.tar".
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from input_pipeline import file_sources
from records import examples, images, npz, webdataset

FORMATS = ("array_record", "tar")


def _read(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def jsonl_rows(path: str) -> Iterator[dict | None]:
  """{"image": bytes, "caption": str[, "label": int]} per line; None for a malformed line or a missing image."""
  base = os.path.dirname(os.path.abspath(path))
  with open(path, "rb") as f:
    for line in f:
      if not line.strip():
        continue
      try:
        row = json.loads(line.decode("utf-8", errors="replace"))
        fields = {"image": _read(os.path.join(base, row["image"])), "caption": row.get("text", row.get("caption"))}
        if "label" in row:
          fields["label"] = int(row["label"])
        yield fields
      except (ValueError, KeyError, TypeError, AttributeError, OSError):
        yield None


def folder_rows(root: str, split: str) -> tuple[Iterator[dict | None], list[str], int]:
  """root/[split/]class/*.jpg -> {"image": bytes, "label": class index}; the sorted class names."""
  if os.path.isdir(os.path.join(root, split)):
    root = os.path.join(root, split)
  classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
  files = [
    (os.path.join(root, name, f), label)
    for label, name in enumerate(classes)
    for f in sorted(os.listdir(os.path.join(root, name)))
    if f.lower().endswith(file_sources.IMAGE_EXTENSIONS)
  ]

  def rows():
    for path, label in files:
      try:
        yield {"image": _read(path), "label": label}
      except OSError:
        yield None

  return rows(), classes, len(files)


def npz_rows(path: str, split: str, image_format: str) -> tuple[Iterator[dict], list[str] | None, int]:
  """A flat JPEG npz ({split}_jpeg + {split}_offsets) or arrays ({split}_images); optional labels, captions."""
  names = npz.member_names(path)
  classes = [str(n) for n in npz.load_member(path, "class_names")] if "class_names" in names else None
  labels = next((npz.load_member(path, n) for n in (f"{split}_labels", f"y_{split}") if n in names), None)
  captions = npz.load_member(path, f"{split}_captions") if f"{split}_captions" in names else None
  if f"{split}_jpeg" in names:
    jpeg, offsets = npz.load_member(path, f"{split}_jpeg"), np.asarray(npz.load_member(path, f"{split}_offsets"))
    count, image = len(offsets) - 1, lambda i: jpeg[offsets[i] : offsets[i + 1]].tobytes()
  else:
    image_name = next((n for n in (f"{split}_images", f"{split}_image", f"x_{split}") if n in names), None)
    if image_name is None:
      raise ValueError(f"{path} has neither {split}_jpeg nor {split}_images (arrays: {names}).")
    arrays = npz.load_member(path, image_name)
    encode = images.encode_png if image_format == "png" else images.encode_jpeg
    count, image = len(arrays), lambda i: encode(np.asarray(arrays[i]))

  def rows():
    for i in range(count):
      fields = {"image": image(i)}
      if labels is not None:
        fields["label"] = int(labels[i])
      if captions is not None:
        fields["caption"] = str(captions[i])
      yield fields

  return rows(), classes, count


def tfds_rows(name: str, split: str, data_dir: str) -> tuple[Iterator[dict], list[str] | None, int]:
  """A TFDS split streamed with `as_dataset` (images left encoded)."""
  import tensorflow_datasets as tfds
  from ml_collections import ConfigDict

  from input_pipeline import shard_sources

  builder = shard_sources._tfds_builder(tfds, name, ConfigDict(dict(data_dir=data_dir, download=False)))
  image_key = next((k for k in ("image", "img") if k in builder.info.features), None)
  decoders = {image_key: tfds.decode.SkipDecoding()} if image_key else None
  ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
  label = builder.info.features["label"] if "label" in builder.info.features else None
  classes = list(label.names) if hasattr(label, "names") else None
  rows = (shard_sources._tfds_fields(ex, image_key) for ex in tfds.as_numpy(ds))
  return rows, classes, builder.info.splits[split].num_examples


def input_rows(source: str, split: str, image_format: str, data_dir: str) -> tuple[Iterator, list | None, int | None]:
  """(rows of fields or None, class names, row count if known) of any supported input."""
  if source.startswith("tfds:"):
    return tfds_rows(source[len("tfds:") :], split, data_dir)
  path = os.path.expanduser(source.replace("{split}", split))
  if os.path.isdir(path):
    return folder_rows(path, split)
  if not os.path.exists(path):
    raise ValueError(f"No input at {path!r}: give a .jsonl file, an image folder, an .npz or tfds:<name>.")
  if path.endswith(".npz"):
    return npz_rows(path, split, image_format)
  if path.endswith((".jsonl", ".json")):
    return jsonl_rows(path), None, None
  raise ValueError(f"Unknown input {path!r}: give a .jsonl file, an image folder, an .npz or tfds:<name>.")


def checked(rows: Iterator[dict | None], stats: dict, tick=lambda: None) -> Iterator[dict[str, Any]]:
  """The rows that decode as training will decode them (columns fixed by the first good row); others counted."""
  columns = None
  for fields in rows:
    tick()
    try:
      if fields is None:
        raise examples.BadRecord("unreadable input")
      kinds = columns or {k: examples.kind_of(k, v) for k, v in fields.items()}
      examples.convert(fields, kinds, image_size=16)
    except Exception as e:  # Corrupt image, bomb, missing caption...: one skipped row.
      stats["skipped"] += 1
      logging.info("convert: skipping row %d: %s", stats["skipped"] + stats["rows"], e)
      continue
    if columns is None:
      columns = stats["columns"] = kinds
    stats["rows"] += 1
    yield {k: (examples.clean_text(fields[k]) if kind == "text" else fields[k]) for k, kind in columns.items()}


def _tar_members(fields: dict[str, Any]) -> dict[str, bytes]:
  members = {images.image_format(fields["image"]): fields["image"]} if "image" in fields else {}
  if "caption" in fields:
    members["txt"] = fields["caption"].encode()
  if "label" in fields:
    members["cls"] = str(fields["label"]).encode()
  members["json"] = json.dumps({k: v for k, v in fields.items() if not isinstance(v, bytes)}).encode()
  return members


def write_shard(path: str, fmt: str, rows: list[dict[str, Any]], first_key: int) -> None:
  if fmt == "tar":
    webdataset.write_shard(path, ((f"{first_key + i:09d}", _tar_members(r)) for i, r in enumerate(rows)))
    return
  from array_record.python import array_record_module

  writer = array_record_module.ArrayRecordWriter(path + ".tmp", "group_size:1")  # group 1: one record per read
  for row in rows:
    writer.write(examples.encode(row))
  writer.close()
  os.replace(path + ".tmp", path)


def convert(
  source: str, output: str, fmt: str, shard_size: int, split: str, image_format: str = "png", data_dir: str = ""
) -> dict:
  """Writes the shards and info.json; returns this split's summary {"rows", "skipped", "shards", ...}."""
  from tqdm import tqdm

  if fmt not in FORMATS:
    raise ValueError(f"--format must be one of {FORMATS}, not {fmt!r}.")
  if shard_size <= 0:
    raise ValueError(f"--shard_size must be positive, not {shard_size}.")
  rows, classes, total = input_rows(source, split, image_format, data_dir)
  os.makedirs(output, exist_ok=True)
  for stale in glob.glob(os.path.join(glob.escape(output), f"{split}-*.{fmt}")):
    os.remove(stale)  # shards of an earlier conversion of this split would be read with the new ones
  stats, shards = {"rows": 0, "skipped": 0, "columns": {}}, {}
  with tqdm(total=total, desc=f"convert {split}", unit="row", dynamic_ncols=True, mininterval=1.0) as bar:
    good = checked(rows, stats, lambda: bar.update(1))
    while batch := list(itertools.islice(good, shard_size)):
      name = f"{split}-{len(shards):05d}.{fmt}"
      write_shard(os.path.join(output, name), fmt, batch, stats["rows"] - len(batch))
      shards[name] = len(batch)
      bar.set_postfix(skipped=stats["skipped"])
  if not shards:
    raise ValueError(f"No readable row in {source!r} split {split!r} ({stats['skipped']} skipped).")
  info_path = os.path.join(output, "info.json")
  info = {}
  if os.path.exists(info_path):
    with open(info_path) as f:
      info = json.load(f)
  info.update(format=fmt, columns=stats["columns"], class_names=classes)
  info.setdefault("splits", {})[split] = {"rows": stats["rows"], "skipped": stats["skipped"], "shards": shards}
  with open(info_path + ".tmp", "w") as f:
    json.dump(info, f, indent=1)
  os.replace(info_path + ".tmp", info_path)
  return {"split": split, "rows": stats["rows"], "skipped": stats["skipped"], "shards": len(shards), "output": output}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m input_pipeline.convert", description=__doc__.split("\n")[0])
  parser.add_argument("--input", required=True, help="a .jsonl file, an image folder, an .npz, or tfds:<name>")
  parser.add_argument("--output", required=True, help="folder for the shards and info.json")
  parser.add_argument("--format", default="array_record", choices=FORMATS)
  parser.add_argument("--shard_size", type=int, default=10_000, help="rows per shard")
  parser.add_argument("--split", default="train")
  parser.add_argument("--image_format", default="png", choices=("png", "jpeg"), help="encoding of npz arrays")
  parser.add_argument("--data_dir", default="", help="TFDS data_dir")
  args = parser.parse_args(argv)
  try:
    summary = convert(
      args.input, args.output, args.format, args.shard_size, args.split, args.image_format, args.data_dir
    )
  except ValueError as e:
    print(f"convert: {e}", file=sys.stderr)
    return 2
  pattern = os.path.join(args.output, "{split}-*." + args.format)
  print(
    f"wrote {summary['rows']} rows in {summary['shards']} shards to {args.output} "
    f"(skipped {summary['skipped']} unreadable inputs); train with "
    f'--config.data.name={args.format} --config.data.path="{pattern}"'
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
