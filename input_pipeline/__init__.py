"""Input pipeline: sources -> deterministic, resumable, per-process sharded global batches.

    data_config = configs.default.data()                         # the embedded "shapes" dataset
    it = input_pipeline.build(data_config, split="train", global_batch_size=256, sharding=batch_sharding, seed=0)
    batch = next(it)        # {"image": uint8 [256, 32, 32, 3], "label": int32 [256], "caption": int32 [256, L]}
    state = it.get_state()  # JSON; it.set_state(state) resumes exactly
    test = input_pipeline.load_split(data_config, "test")       # whole split on host, for evaluators

Augmentation runs on device (`augment_jax.simclr_augment`, `multi_view`, `multi_crop`), or on host with TF ops
(`data_config.host_views > 0` adds "views" uint8 [B, V, H, W, 3], see `augment_tf`). String columns are
tokenized with `data_config.tokenizer` (bytes by default) and never leave the host as strings.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import ml_collections
import numpy as np

import tokenization as tokenizers
from input_pipeline import sequence_sources, sources  # noqa: F401  (sequence_sources registers ucr, tu)
from input_pipeline.iterator import BatchIterator, batch_shards

__all__ = ["build", "BatchIterator", "load_split", "num_examples", "register_source"]

register_source = sources.register


def _host_transform(data_config: ml_collections.ConfigDict, seed: int, split: str):
  """Per-batch host work: text views, host image views, tokenization. None when there is nothing to do."""
  tokenizer = tokenizers.get(data_config.tokenizer, data_config.tokenizer_path) if data_config.tokenizer else None
  text_views, host_views, max_len = data_config.text_views, data_config.host_views, data_config.max_text_len
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
    if host_views:
      from input_pipeline import augment_tf

      columns["views"] = augment_tf.host_views(columns["image"], ids, seed=seed, num_views=host_views)
    for key in sources.string_columns(columns):
      if tokenizer is not None:
        columns[key] = tokenizer.encode(list(columns[key]), max_len)
    return columns

  return transform


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
  sharding does not divide, an unknown source, a wrong path or an empty split.
  """
  shards = batch_shards(sharding)
  if global_batch_size <= 0 or global_batch_size % shards:
    raise ValueError(
      f"global_batch_size={global_batch_size} is not divisible by the {shards} devices that shard "
      f"the batch dimension (sharding {sharding})."
    )
  source = sources.get_source(data_config, split)
  return BatchIterator(
    source,
    global_batch_size=global_batch_size,
    sharding=sharding,
    seed=seed,
    shuffle=shuffle,
    repeat=repeat,
    transform=_host_transform(data_config, seed, split),
    prefetch=prefetch,
  )


def load_split(data_config: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
  """The whole split on host, in order: "image" uint8 [N, S, S, 3], "label" int32 [N], "caption" str [N], ...

  Unreadable rows are dropped.
  """
  columns, _ = sources.read_all(sources.get_source(data_config, split))
  return {k: (v.astype(str) if k in sources.string_columns(columns) else v) for k, v in columns.items()}


def num_examples(data_config: ml_collections.ConfigDict, split: str) -> int:
  return len(sources.get_source(data_config, split))


def eval_batches(data_config, split: str, *, batch_size: int, limit: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Host batches of a split in dataset order for evaluation: images uint8 [b, S, S, 3] as evaluated (short side
  resized, centre-cropped), labels, and text columns as str arrays (not tokenized); unreadable rows skipped. At most
  `limit` rows (0 = all); the split is never held whole."""
  source = sources.get_source(data_config, split)
  total = min(len(source), limit) if limit else len(source)
  for start in range(0, total, batch_size):
    columns, valid = source.read(np.arange(start, min(start + batch_size, total)))
    if valid.any():
      yield {
        k: (v[valid].astype(str).astype(object) if k in sources.string_columns(columns) else v[valid])
        for k, v in columns.items()
      }


def class_names(data_config, split: str) -> list[str] | None:
  """The class names of a split's labels, when its source knows them (shapes, image folders, CIFAR, TFDS)."""
  names = getattr(sources.get_source(data_config, split), "class_names", None)
  return list(names)[: data_config.num_classes] if names is not None else None


def prompt_templates(data_config, split: str = "test") -> tuple[str, ...] | None:
  """Zero-shot prompt templates in the form of a source's own captions (e.g. shapes'), else None."""
  return getattr(sources.get_source(data_config, split), "prompt_templates", None)
