"""Random-access sources over plain files: npz arrays, a flat JPEG npz, image folders, JSONL pairs, sentences, .npy.

Large inputs are read lazily: npz members stored uncompressed are memory-mapped, image folders and JSONL files keep
only an index (file names; line offsets, 12 bytes a line) and read a row's bytes when it is read. Registered in
`sources.SOURCES` on import.
"""

from __future__ import annotations

import array
import json
import os

import numpy as np

from input_pipeline.sources import DEFAULT_CIFAR10_NPZ, ArraySource, FieldSource, register, split_paths
from records import examples, npz

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def _read_file(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


@register("npz")
def npz_source(data_config, split):
  """Arrays `{split}_images` / `{split}_image` / `x_{split}` and labels likewise, optional `{split}_captions`."""
  (path,) = split_paths(data_config, split, ".npz file")[:1]
  names = npz.member_names(path)

  def pick(*candidates):
    name = next((n for n in candidates if n in names), None)
    return None if name is None else npz.load_member(path, name)

  images = pick(f"{split}_images", f"{split}_image", f"x_{split}", "images", "image")
  labels = pick(f"{split}_labels", f"{split}_label", f"y_{split}", "labels", "label")
  captions = pick(f"{split}_captions", f"{split}_caption", "captions", "caption")
  if images is None:
    raise ValueError(f"{path} has no image array for split {split!r} (arrays: {names}).")
  columns = {"image": images if images.dtype == np.uint8 else np.asarray(images, np.uint8)}
  if labels is not None:
    columns["label"] = np.asarray(labels, np.int32)
  if captions is not None:
    columns["caption"] = captions if captions.dtype.kind in "US" else np.asarray(captions).astype(str)
  return ArraySource(columns)


@register("cifar10_npz")
def cifar10_npz_source(data_config, split):
  """A flat JPEG-bytes npz: `{split}_jpeg` uint8 [total], `{split}_offsets` [N+1], `{split}_labels` [N]."""
  path = data_config.path or DEFAULT_CIFAR10_NPZ
  if not os.path.exists(path):
    raise ValueError(
      f"No CIFAR-10 npz at {path!r}: set data_config.path to a file made like ../shared/data/build_cifar10.py makes it."
    )
  names = npz.member_names(path)
  if f"{split}_jpeg" not in names:
    raise ValueError(f"{path} has no split {split!r} (arrays: {names}).")
  jpeg, offsets = npz.load_member(path, f"{split}_jpeg"), np.asarray(npz.load_member(path, f"{split}_offsets"))
  labels = np.asarray(npz.load_member(path, f"{split}_labels"), np.int32)
  source = FieldSource(
    len(labels),
    lambda i: {"image": jpeg[offsets[i] : offsets[i + 1]].tobytes()},
    {"image": "image"},
    data_config.image_size,
    {"label": labels},
    cache=data_config.cache,
  )
  if "class_names" in names:
    source.class_names = [str(n) for n in npz.load_member(path, "class_names")]
  return source


@register("image_folder")
def image_folder_source(data_config, split):
  """root/[split/]class_name/*.jpg; labels are the sorted class folder names."""
  (root,) = split_paths(data_config, split, "image folder")[:1]
  if os.path.isdir(os.path.join(root, split)):
    root = os.path.join(root, split)
  classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
  files, labels = [], array.array("i")
  for label, name in enumerate(classes):
    for f in sorted(os.listdir(os.path.join(root, name))):
      if f.lower().endswith(IMAGE_EXTENSIONS):
        files.append(os.path.join(name, f).encode())
        labels.append(label)
  if not files:
    raise ValueError(f"No images under {root!r}: expected root/class_name/*.jpg (extensions {IMAGE_EXTENSIONS}).")
  names = np.asarray(files)  # fixed-width bytes: ~ the path length per file, not a Python object each
  source = FieldSource(
    len(names),
    lambda i: {"image": _read_file(os.path.join(root, names[i].decode()))},
    {"image": "image"},
    data_config.image_size,
    {"label": np.asarray(labels, np.int32)},
    cache=data_config.cache,
  )
  source.class_names = classes
  return source


class _JsonlLines:
  """Line index of JSONL files (file id, start, length per non-blank line) and the parse of one line."""

  def __init__(self, paths: list[str]):
    self.paths = paths
    self.bases = [os.path.dirname(os.path.abspath(p)) for p in paths]
    file_ids, starts, lengths = array.array("H"), array.array("q"), array.array("i")
    for f_id, path in enumerate(paths):
      with open(path, "rb") as f:
        offset = 0
        for line in f:
          if line.strip():
            file_ids.append(f_id), starts.append(offset), lengths.append(len(line))
          offset += len(line)
    self.file_ids, self.starts, self.lengths = (np.asarray(a) for a in (file_ids, starts, lengths))
    self.fds = [os.open(p, os.O_RDONLY) for p in paths]

  def __len__(self) -> int:
    return len(self.starts)

  def fields(self, i: int) -> dict:
    """{"image": bytes, "caption": str} of line i; raises for a malformed line or a missing image file."""
    f_id = int(self.file_ids[i])
    line = os.pread(self.fds[f_id], int(self.lengths[i]), int(self.starts[i]))
    row = json.loads(line.decode("utf-8", errors="replace"))  # invalid UTF-8 in a caption: U+FFFD, kept
    if not isinstance(row, dict):
      raise examples.BadRecord(f"line is a JSON {type(row).__name__}, not an object")
    image, text = row.get("image"), row.get("text", row.get("caption"))
    if not isinstance(image, str) or not isinstance(text, str):
      raise examples.BadRecord('a line needs "image" (a path) and "text" (a caption) strings')
    return {"image": _read_file(os.path.join(self.bases[f_id], image)), "caption": text}


@register("jsonl")
def jsonl_source(data_config, split):
  """Image-text pairs: one {"image": path, "text": caption} per line, paths relative to the JSONL file.

  A malformed line, a missing image or an empty caption is a skipped row when it is read.
  """
  lines = _JsonlLines(split_paths(data_config, split, "JSONL file"))
  return FieldSource(
    len(lines),
    lines.fields,
    {"image": "image", "caption": "text"},
    data_config.image_size,
    cache=data_config.cache,
  )


@register("sentences")
def sentences_source(data_config, split):
  """Sentences, one per line (.txt), or TSV rows; `data_config.columns` names the TSV columns.

  Default column names by count: 1 -> text; 2 -> text, text_pos; 3 -> text, text_pos, text_neg (supervised
  SimCSE triplets). Columns named "score" (float) or "label" (int) are parsed as numbers, e.g.
  columns=("score", "text", "text_pos") for STS-B files. Rows with the wrong number of fields are skipped.
  """
  defaults = {1: ("text",), 2: ("text", "text_pos"), 3: ("text", "text_pos", "text_neg")}
  columns = tuple(data_config.columns)
  rows, skipped = [], 0
  for path in split_paths(data_config, split, "sentence file"):
    with open(path, encoding="utf-8", errors="replace") as f:
      for line in f:
        line = line.rstrip("\n")
        if not line.strip():
          continue
        fields = line.split("\t") if path.endswith(".tsv") else [line]
        if not columns:
          columns = defaults.get(len(fields), ())
        if len(fields) != len(columns):
          skipped += 1
          continue
        rows.append([f[: examples.MAX_TEXT_CHARS] for f in fields])
  if not rows:
    return ArraySource({"text": np.asarray([], object)})
  out = {}
  for name, values in zip(columns, zip(*rows)):
    if name in ("score", "label"):
      try:
        out[name] = np.asarray(values, np.float32 if name == "score" else np.int32)
      except ValueError as e:
        raise ValueError(f"Column {name!r} of {data_config.path!r} is not numeric: {e}") from None
    else:
      out[name] = np.asarray(values, object)
  source = ArraySource(out)
  source.skipped_at_load = skipped
  return source


@register("embeddings")
def embeddings_source(data_config, split):
  """Precomputed embeddings: a .npy float [N, D] (or [N, V, D] for pairs) -> "embedding" float32."""
  (path,) = split_paths(data_config, split, ".npy file")[:1]
  return ArraySource({"embedding": np.load(path).astype(np.float32)})
