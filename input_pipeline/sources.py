"""Data sources: finite, random-access splits, registered by name and selected by `data_config.name`.

A source is `len(source)` rows and `source.read(indices) -> (columns, valid)`: a dict of NumPy arrays with
leading dimension `len(indices)` and a bool mask `valid [n]`. A row that cannot be read (corrupt image, missing
file) is `valid=False` and the iterator skips and counts it; rows that are malformed at load time (a bad JSONL
line, an unreadable TFRecord record) are dropped then and counted in `source.skipped_at_load`. A wrong path or
an empty split is a ValueError at construction.

Columns: "image" uint8 [n, S, S, 3], "label" int32 [n], "caption" / "text" / "text_pos" / "text_neg" str [n],
"score" float32 [n], "embedding" float32 [n, ...].

| name | what | data_config fields |
|---|---|---|
| shapes | the embedded procedural dataset (`shapes.py`) | seed, num_classes, train_size, test_size, hard_negatives |
| tfds:<dataset> | any TFDS dataset prepared in data_dir (no download unless asked; shapes generates) | data_dir, download |
| npz | arrays in one .npz (`{split}_images`, `{split}_labels`, optional `{split}_captions`) | path |
| cifar10_npz | a flat JPEG-bytes npz like ../shared/data/cifar10.npz | path (default: that file) |
| image_folder | root/[split/]class/*.jpg | path |
| tfrecord | TFRecord files of tf.train.Example with encoded images | path (glob, "{split}") |
| jsonl | image-text pairs, one {"image": path, "text": ...} per line | path ("{split}") |
| sentences | one sentence per line (.txt) or TSV pairs / triplets / scored pairs | path ("{split}"), columns |
| embeddings | precomputed embeddings in a .npy | path ("{split}") |
"""

from __future__ import annotations

import concurrent.futures
import functools
import glob
import json
import logging
import os
from collections.abc import Callable

import ml_collections
import numpy as np

from input_pipeline import shapes
from records import images

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CIFAR10_NPZ = os.path.join(_PROJECT_ROOT, "..", "shared", "data", "cifar10.npz")


class Source:
  """A finite random-access split. Subclasses set `self.num_rows` and implement `read`."""

  num_rows: int = 0
  skipped_at_load: int = 0

  def __len__(self) -> int:
    return self.num_rows

  def read(self, indices: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    raise NotImplementedError


class ArraySource(Source):
  """Columns already in memory; every row is valid."""

  def __init__(self, columns: dict[str, np.ndarray]):
    self.columns = columns
    self.num_rows = len(next(iter(columns.values())))

  def read(self, indices):
    return {k: v[indices] for k, v in self.columns.items()}, np.ones(len(indices), bool)


@functools.cache
def _decode_pool() -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(
    max_workers=max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="decode"
  )


class EncodedImageSource(Source):
  """Images decoded on read from bytes or file paths; a row that fails to decode is invalid.

  `load(i)` returns the encoded bytes of row i (or raises). With `cache=True` decoded rows are kept in
  memory (uint8 [N, S, S, 3]), so later epochs skip decoding.
  """

  def __init__(
    self,
    num_rows: int,
    load: Callable[[int], bytes],
    image_size: int,
    columns: dict[str, np.ndarray] | None = None,
    cache: bool = False,
  ):
    self.num_rows, self.load, self.image_size = num_rows, load, image_size
    self.columns = columns or {}
    self._cache = np.zeros((num_rows, image_size, image_size, 3), np.uint8) if cache else None
    self._cached = np.zeros(num_rows, bool) if cache else None

  def _decode_row(self, i: int) -> np.ndarray | None:
    try:
      return images.decode_image(self.load(i), self.image_size)
    except Exception as e:  # Corrupt / missing / unsupported: skip the row, never crash mid-run.
      logging.warning("input_pipeline: skipping row %d: %s: %s", i, type(e).__name__, e)
      return None

  def read(self, indices):
    indices = np.asarray(indices)
    images = np.zeros((len(indices), self.image_size, self.image_size, 3), np.uint8)
    valid = np.ones(len(indices), bool)
    todo = np.arange(len(indices))
    if self._cache is not None:
      hit = self._cached[indices]
      images[hit] = self._cache[indices[hit]]
      todo = todo[~hit]
    for j, image in zip(todo, _decode_pool().map(self._decode_row, indices[todo].tolist())):
      if image is None:
        valid[j] = False
      else:
        images[j] = image
        if self._cache is not None:
          self._cache[indices[j]], self._cached[indices[j]] = image, True
    out = {k: v[indices] for k, v in self.columns.items()}
    out["image"] = images
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

SourceFactory = Callable[[ml_collections.ConfigDict, str], Source]
SOURCES: dict[str, SourceFactory] = {}


def register(name: str) -> Callable[[SourceFactory], SourceFactory]:
  def wrap(factory):
    SOURCES[name] = factory
    return factory

  return wrap


def known_names() -> list[str]:
  return sorted(SOURCES) + ["tfds:<dataset name>"]


def get_source(data_config: ml_collections.ConfigDict, split: str) -> Source:
  """The source named by data_config.name for `split`; ValueError for unknown names, wrong paths, empty data.

  Sources are cached per (config, split), so the training iterator, evaluators and repeated `load_split` calls
  share one index and one decoded / rendered cache.
  """
  as_dict = data_config.to_dict() if hasattr(data_config, "to_dict") else dict(data_config)
  return _cached_source(json.dumps(as_dict, sort_keys=True, default=str), split)


@functools.lru_cache(maxsize=16)
def _cached_source(config_json: str, split: str) -> Source:
  data_config = ml_collections.ConfigDict(json.loads(config_json))
  name = data_config.name
  if name.startswith("tfds:"):
    source = tfds_source(data_config, split, name[len("tfds:") :])
  elif name in SOURCES:
    source = SOURCES[name](data_config, split)
  else:
    raise ValueError(f"Unknown data source {name!r}; known sources: {', '.join(known_names())}.")
  if len(source) == 0:
    raise ValueError(f"Data source {name!r} split {split!r} is empty (path={data_config.path!r}).")
  if source.skipped_at_load:
    logging.warning("input_pipeline: %s/%s: skipped %d malformed records at load", name, split, source.skipped_at_load)
  return source


def _read_file(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _split_paths(data_config, split: str, what: str) -> list[str]:
  """Files named by data_config.path for `split` ("{split}" substituted, globs expanded); ValueError if none."""
  path = data_config.path
  if not path:
    raise ValueError(f"data_config.path must name the {what} for source {data_config.name!r}.")
  pattern = os.path.expanduser(path.replace("{split}", split))
  paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else ([pattern] if os.path.exists(pattern) else [])
  if not paths:
    raise ValueError(f"No {what} at {pattern!r} (data_config.path={path!r}, split={split!r}).")
  return paths


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


@register("npz")
def npz_source(data_config, split):
  """Arrays `{split}_images` / `{split}_image` / `x_{split}` and labels likewise, optional `{split}_captions`."""
  (path,) = _split_paths(data_config, split, ".npz file")[:1]
  with np.load(path, allow_pickle=False) as d:

    def pick(*names):
      return next((d[n] for n in names if n in d.files), None)

    images = pick(f"{split}_images", f"{split}_image", f"x_{split}", "images", "image")
    labels = pick(f"{split}_labels", f"{split}_label", f"y_{split}", "labels", "label")
    captions = pick(f"{split}_captions", f"{split}_caption", "captions", "caption")
    if images is None:
      raise ValueError(f"{path} has no image array for split {split!r} (arrays: {d.files}).")
  columns = {"image": np.asarray(images, np.uint8)}
  if labels is not None:
    columns["label"] = np.asarray(labels, np.int32)
  if captions is not None:
    columns["caption"] = np.asarray(captions).astype(object)
  return ArraySource(columns)


@register("cifar10_npz")
def cifar10_npz_source(data_config, split):
  """A flat JPEG-bytes npz: `{split}_jpeg` uint8 [total], `{split}_offsets` [N+1], `{split}_labels` [N]."""
  data_config_path = data_config.path or DEFAULT_CIFAR10_NPZ
  if not os.path.exists(data_config_path):
    raise ValueError(
      f"No CIFAR-10 npz at {data_config_path!r}: set data_config.path to a file made like "
      "../shared/data/build_cifar10.py makes it."
    )
  with np.load(data_config_path) as d:
    if f"{split}_jpeg" not in d.files:
      raise ValueError(f"{data_config_path} has no split {split!r} (arrays: {d.files}).")
    jpeg, offsets = d[f"{split}_jpeg"], d[f"{split}_offsets"]
    labels = d[f"{split}_labels"].astype(np.int32)
    class_names = [str(n) for n in d["class_names"]] if "class_names" in d.files else None
  source = EncodedImageSource(
    len(labels),
    lambda i: jpeg[offsets[i] : offsets[i + 1]].tobytes(),
    data_config.image_size,
    {"label": labels},
    cache=True,
  )
  source.class_names = class_names
  return source


@register("image_folder")
def image_folder_source(data_config, split):
  """root/[split/]class_name/*.jpg; labels are the sorted class folder names."""
  (root,) = _split_paths(data_config, split, "image folder")[:1]
  if os.path.isdir(os.path.join(root, split)):
    root = os.path.join(root, split)
  classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
  files, labels = [], []
  for label, name in enumerate(classes):
    for f in sorted(os.listdir(os.path.join(root, name))):
      if f.lower().endswith(IMAGE_EXTENSIONS):
        files.append(os.path.join(root, name, f))
        labels.append(label)
  if not files:
    raise ValueError(f"No images under {root!r}: expected root/class_name/*.jpg (extensions {IMAGE_EXTENSIONS}).")
  source = EncodedImageSource(
    len(files),
    lambda i: _read_file(files[i]),
    data_config.image_size,
    {"label": np.asarray(labels, np.int32)},
    cache=data_config.cache,
  )
  source.class_names = classes
  return source


@register("jsonl")
def jsonl_source(data_config, split):
  """Image-text pairs: one {"image": path, "text": caption} per line, paths relative to the JSONL file."""
  paths, texts, skipped = [], [], 0
  for jsonl in _split_paths(data_config, split, "JSONL file"):
    base = os.path.dirname(os.path.abspath(jsonl))
    with open(jsonl, encoding="utf-8") as f:
      for line in f:
        if not line.strip():
          continue
        try:
          row = json.loads(line)
          image, text = row["image"], row.get("text", row.get("caption"))
          if not isinstance(image, str) or not isinstance(text, str):
            raise TypeError("image and text must be strings")
        except (ValueError, KeyError, TypeError, AttributeError):
          skipped += 1
          continue
        paths.append(os.path.join(base, image))
        texts.append(text)
  source = EncodedImageSource(
    len(paths),
    lambda i: _read_file(paths[i]),
    data_config.image_size,
    {"caption": np.asarray(texts, object)},
    cache=data_config.cache,
  )
  source.skipped_at_load = skipped
  return source


@register("tfrecord")
def tfrecord_source(data_config, split):
  """tf.train.Example records with encoded image bytes ("image" or "image/encoded") and an int label."""
  import tensorflow as tf

  encoded, labels, captions, skipped = [], [], [], 0
  for path in _split_paths(data_config, split, "TFRecord files"):
    records = iter(tf.data.TFRecordDataset(path).as_numpy_iterator())
    while True:
      try:
        raw = next(records)
      except StopIteration:
        break
      except tf.errors.DataLossError:  # A truncated / corrupt file: keep what was read before.
        skipped += 1
        break
      try:
        feature = tf.train.Example.FromString(raw).features.feature
        key = next(k for k in ("image", "image/encoded") if k in feature)
        encoded.append(feature[key].bytes_list.value[0])
      except Exception:
        skipped += 1
        continue
      label = next((feature[k].int64_list.value for k in ("label", "image/class/label") if k in feature), [-1])
      labels.append(label[0] if len(label) else -1)
      text = next((feature[k].bytes_list.value for k in ("text", "caption") if k in feature), None)
      captions.append(text[0].decode("utf-8") if text else None)
  columns = {"label": np.asarray(labels, np.int32)}
  if any(c is not None for c in captions):
    columns["caption"] = np.asarray([c or "" for c in captions], object)
  source = EncodedImageSource(
    len(encoded), encoded.__getitem__, data_config.image_size, columns, cache=data_config.cache
  )
  source.skipped_at_load = skipped
  return source


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
  for path in _split_paths(data_config, split, "sentence file"):
    with open(path, encoding="utf-8") as f:
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
        rows.append(fields)
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
  (path,) = _split_paths(data_config, split, ".npy file")[:1]
  return ArraySource({"embedding": np.load(path).astype(np.float32)})


def tfds_source(data_config, split: str, dataset: str) -> Source:
  """Any TFDS dataset: encoded images kept in memory and decoded on read; labels / first caption if present."""
  import tensorflow_datasets as tfds

  local = dataset.split("/")[0].split(":")[0] == "shapes"
  if local:
    from input_pipeline import shapes_tfds  # noqa: F401  (registers the builder)
  data_dir = data_config.data_dir or None
  try:
    builder = tfds.builder(dataset, data_dir=data_dir)
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
  features = builder.info.features
  image_key = next((k for k in ("image", "img") if k in features), None)
  decoders = {image_key: tfds.decode.SkipDecoding()} if image_key else None
  ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
  images, columns = [], {"label": [], "caption": []}
  for ex in tfds.as_numpy(ds):
    if image_key:
      images.append(ex[image_key])
    if "label" in ex:
      columns["label"].append(ex["label"])
    caption = ex.get("caption", ex.get("captions"))
    if isinstance(caption, dict):
      caption = caption.get("text")
    if caption is not None:
      caption = caption[0] if np.ndim(caption) else caption
      columns["caption"].append(caption.decode("utf-8") if isinstance(caption, bytes) else str(caption))
  out = {k: np.asarray(v, np.int32 if k == "label" else object) for k, v in columns.items() if v}
  if not image_key:
    return ArraySource(out) if out else ArraySource({"label": np.zeros((0,), np.int32)})
  size = data_config.image_size

  def load(i):
    x = images[i]
    if isinstance(x, bytes):
      return x
    return images.encode_png(x)  # Datasets with decoded images (e.g. mock data): re-encode to one decode path.

  return EncodedImageSource(len(images), load, size, out, cache=data_config.cache)


def read_all(source: Source, chunk: int = 4096) -> tuple[dict[str, np.ndarray], int]:
  """Every valid row of a source (for evaluation) and the number of invalid rows dropped."""
  parts, skipped = [], 0
  for start in range(0, len(source), chunk):
    cols, valid = source.read(np.arange(start, min(start + chunk, len(source))))
    parts.append({k: v[valid] for k, v in cols.items()})
    skipped += int((~valid).sum())
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, skipped


def string_columns(columns: dict[str, np.ndarray]) -> list[str]:
  """Names of the columns that hold text (host-only; tokenized or dropped before reaching devices)."""
  return [k for k, v in columns.items() if v.dtype == object or v.dtype.kind in "US"]
