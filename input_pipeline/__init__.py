"""Input pipeline: sources -> deterministic, resumable, per-process sharded global batches.

    data_config = configs.default.data()                          # the embedded "shapes" dataset
    it = input_pipeline.build(data_config, split="train", global_batch_size=256, sharding=batch_sharding, seed=0)
    batch = next(it)        # {"image": uint8 [256, 32, 32, 3], "label": int32 [256], "caption": int32 [256, L]}
    state = it.get_state()  # JSON; it.set_state(state) resumes exactly; state["skipped"]: unreadable rows so far
    for batch in input_pipeline.eval_batches(data_config, "test", batch_size=512):  # host NumPy, dataset order
      ...
    names = input_pipeline.class_names(data_config, "test")     # ["circle", ...] or None

Sources stream from disk (ArrayRecord, tar, TFDS, TFRecord, files: see sources.py), decoded in `data_config.workers`
processes; `python -m input_pipeline.convert` writes ArrayRecord or tar shards from JSONL, image folders, npz, TFDS.

Augmentation runs on device (`augment_jax.simclr_augment`, `multi_view`, `multi_crop`), or on host with TF ops
(`data_config.host_views > 0` adds "views" uint8 [B, V, H, W, 3], see `augment_tf`); `data_config.with_index` adds
"index" int32 [B], each row's index in its split. String columns are
tokenized with `data_config.tokenizer` (bytes by default) and never leave the host as strings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import ml_collections
import numpy as np

import tokenization as tokenizers
from input_pipeline import file_sources, reader, sequence_sources, shard_sources, sources  # noqa: F401  (registers the sources)

if TYPE_CHECKING:  # jax only where batches go to devices: worker processes and eval_batches never import it
  import jax

  from input_pipeline.iterator import BatchIterator

__all__ = [
  "build",
  "eval_batches",
  "class_names",
  "prompt_templates",
  "load_split",
  "num_examples",
  "register_source",
]

register_source = sources.register


def _host_transform(data_config: ml_collections.ConfigDict, seed: int, split: str):
  """Host work on decoded rows: text views, host image views, tokenization. Row by row (a row's randomness comes
  from its ids), so it runs on each task's rows, in the worker processes when there are some."""
  tokenizer = tokenizers.get(data_config.tokenizer, data_config.tokenizer_path) if data_config.tokenizer else None
  text_views, host_views, max_len = data_config.text_views, data_config.host_views, data_config.max_text_len
  with_index = data_config.with_index
  caption_dropout = data_config.caption_word_dropout if split == "train" else 0.0
  if text_views or caption_dropout:
    from input_pipeline import text_views as text_views_lib

    make_view = text_views_lib.get(text_views) if text_views else None

  def transform(columns: dict[str, np.ndarray], ids: np.ndarray) -> dict[str, np.ndarray]:
    # ids [n, 2]: (epoch, dataset index) of each row, so host randomness is a function of the example.
    columns = dict(columns)
    if text_views:
      columns["text_pos"] = np.asarray(
        [make_view(t, np.random.default_rng([seed, *i])) for t, i in zip(columns["text"], ids)], object
      )
    if caption_dropout and "caption" in columns:
      # Image-text training: a caption with words left out still describes its image, and the words that are
      # left (e.g. only the shape) must then tell it from the other captions (random deletion: Wei & Zou 2019).
      columns["caption"] = np.asarray(
        [
          text_views_lib.word_deletion(t, np.random.default_rng([seed, *i, 1]), caption_dropout)
          for t, i in zip(columns["caption"], ids)
        ],
        object,
      )
    if with_index:  # per-example state on device (iSogCLR) is looked up by the example's dataset row
      columns["index"] = ids[:, 1].astype(np.int32)
    if host_views:
      from input_pipeline import augment_tf

      columns["views"] = augment_tf.host_views(columns["image"], ids, seed=seed, num_views=host_views)
    for key in sources.string_columns(columns):
      if tokenizer is not None:
        columns[key] = tokenizer.encode(list(columns[key]), max_len)
    return columns

  return transform


def _config_json(data_config) -> str:
  return json.dumps(data_config.to_dict() if hasattr(data_config, "to_dict") else dict(data_config), default=str)


def _worker_setup(config_json: str, split: str, seed: int, with_transform: bool) -> tuple:
  """In a worker process: the source and host transform of `build` / `eval_batches`, rebuilt from the config."""
  data_config = ml_collections.ConfigDict(json.loads(config_json))
  source = sources.get_source(data_config, split)
  return source, (_host_transform(data_config, seed, split) if with_transform else None)


def build(
  data_config: ml_collections.ConfigDict,
  *,
  split: str,
  global_batch_size: int,
  sharding: jax.sharding.NamedSharding,
  seed: int,
  shuffle: bool = True,
  repeat: bool = True,
  prefetch: int = 2,
) -> BatchIterator:
  """Iterator of global batches (dict of jax.Array, leading dim `global_batch_size`, sharded with `sharding`).

  Each process reads only the rows its devices own. Raises ValueError at start-up for a batch size the batch
  sharding does not divide, an unknown source, a wrong path, an empty split or fewer shards than processes.
  """
  from input_pipeline.iterator import BatchIterator, batch_shards

  shards = batch_shards(sharding)
  if global_batch_size <= 0 or global_batch_size % shards:
    raise ValueError(
      f"global_batch_size={global_batch_size} is not divisible by the {shards} devices that shard "
      f"the batch dimension (sharding {sharding})."
    )
  source = sources.get_source(data_config, split)
  if data_config.with_index and isinstance(source, sources.StreamSource):
    raise ValueError(
      f"data.with_index gives each row its index in the split, which needs a random-access source; "
      f"{data_config.name!r} streams its records."
    )
  return BatchIterator(
    source,
    global_batch_size=global_batch_size,
    sharding=sharding,
    seed=seed,
    shuffle=shuffle,
    repeat=repeat,
    transform=_host_transform(data_config, seed, split),
    prefetch=prefetch,
    workers=data_config.workers,
    shuffle_buffer=data_config.shuffle_buffer,
    worker_setup=_worker_setup,
    worker_args=(_config_json(data_config), split, seed, True),
  )


class EvalBatches(Iterator[dict]):
  """Host batches of a split in dataset order (see `eval_batches`); `skipped` counts unreadable rows met so far."""

  def __init__(self, data_config: ml_collections.ConfigDict, split: str, batch_size: int, limit: int):
    self.source = sources.get_source(data_config, split)
    workers = data_config.workers
    self._runner = reader.TaskRunner(
      self.source, None, workers, _worker_setup, (_config_json(data_config), split, 0, False)
    )
    spec = reader.ReadSpec(shuffle=False, repeat=False, chunk=min(batch_size, 256))
    self._totals: dict = {}
    self._batches = reader.read_batches(
      self.source, spec, reader.initial_state(self.source), self._runner, batch_size, True, self._totals
    )
    self.limit, self.rows, self._skipped = limit, 0, 0

  @property
  def skipped(self) -> int:
    return self.source.skipped_at_load + self._totals.get("skipped", self._skipped)

  def __next__(self) -> dict[str, np.ndarray]:
    if self.limit and self.rows >= self.limit:
      self.close()
      raise StopIteration
    try:
      host, state = next(self._batches)
    except StopIteration:
      self.close()
      raise
    self._skipped = state["skipped"]
    if self.limit:
      host = {k: v[: self.limit - self.rows] for k, v in host.items()}
    self.rows += len(next(iter(host.values())))
    return {k: (v.astype(object) if k in sources.string_columns(host) else v) for k, v in host.items()}

  def __iter__(self):
    return self

  def close(self) -> None:
    self._runner.close()


def eval_batches(data_config: ml_collections.ConfigDict, split: str, *, batch_size: int, limit: int = 0) -> EvalBatches:
  """Host NumPy batches of a split in dataset order, for evaluators; never the whole split in memory.

  Each batch: "image" uint8 [b, S, S, 3] (evaluation preprocessing: short side resized to S, centre crop),
  "label" int32 [b], text columns ("caption", "text", ...) as str object arrays [b], not tokenized; b = batch_size
  except for a smaller last batch. Unreadable rows are skipped and counted (`.skipped`); `limit` > 0 stops after
  that many rows. Every process reads the whole split (evaluation data is not sharded across processes).
  """
  return EvalBatches(data_config, split, batch_size, limit)


def prompt_templates(data_config: ml_collections.ConfigDict, split: str = "test") -> tuple[str, ...] | None:
  """Zero-shot prompt templates in the form of a source's own captions (e.g. shapes'), else None."""
  return getattr(sources.get_source(data_config, split), "prompt_templates", None)


def class_names(data_config: ml_collections.ConfigDict, split: str) -> list[str] | None:
  """The split's class names from its source (info.json, TFDS features, image-folder names, shapes), or None."""
  names = sources.get_source(data_config, split).class_names
  return None if names is None else [str(n) for n in names]


def load_split(data_config: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
  """The whole split on host, in order: "image" uint8 [N, S, S, 3], "label" int32 [N], "caption" str [N], ...

  O(N) host memory: kept for evaluators until they read `eval_batches`. Unreadable rows are dropped.
  """
  parts = list(eval_batches(data_config, split, batch_size=4096))
  if not parts:
    raise ValueError(f"No readable row in split {split!r} of data source {data_config.name!r}.")
  columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return {k: (v.astype(str) if k in sources.string_columns(columns) else v) for k, v in columns.items()}


def num_examples(data_config: ml_collections.ConfigDict, split: str) -> int:
  return len(sources.get_source(data_config, split))
