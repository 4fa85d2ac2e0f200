"""Blocks the recipes in configs/ share; each recipe file keeps the values specific to its method in view."""

from collections.abc import Sequence

import ml_collections

TINY_TEXT_LEN = 48  # tokens per caption in tiny runs; text towers' context_length must match


def parse_arg(arg: str | None, allowed: Sequence[str]) -> set[str]:
  """The comma-separated config argument (`--config=file.py:a,b`) as a set; ValueError on a name not in allowed."""
  args = set((arg or "").split(",")) - {""}
  unknown = args - set(allowed)
  if unknown:
    raise ValueError(
      f"Unknown config arguments {sorted(unknown)}; use a comma-separated subset of {', '.join(allowed)}."
    )
  return args


def base(
  method: str,
  *,
  batch_size: int,
  total_steps: int,
  log_every: int = 50,
  checkpoint_every: int = 500,
  keep_checkpoints: int = 2,
) -> ml_collections.ConfigDict:
  """Trainer keys of every recipe: method, seed, global batch, steps, NaN/Inf policy, mesh, log/checkpoint cadence."""
  c = ml_collections.ConfigDict()
  c.method = method
  c.seed = 0
  c.batch_size = batch_size
  c.total_steps = total_steps
  c.nonfinite = "stop"  # or "skip": a NaN/Inf step is never applied; "stop" raises with a clear message
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.log_every = log_every
  c.checkpoint_every = checkpoint_every
  c.keep_checkpoints = keep_checkpoints
  return c


def shapes_data(*, max_text_len: int = 0, normalize: bool = True, **extra) -> ml_collections.ConfigDict:
  """The embedded "shapes" data; byte-tokenized captions if max_text_len > 0, image mean / std if normalize."""
  data = ml_collections.ConfigDict(
    dict(
      name="shapes",
      image_size=32,
      num_classes=10,
      train_size=20000,
      test_size=2000,
      seed=0,
      tokenizer="bytes" if max_text_len else "",
      path="",  # files / shards of the other sources (input_pipeline/sources.py): glob or braces, "{split}" substituted
      workers=0,  # processes decoding and transforming data (0: the reading thread); batches do not depend on it
      shuffle_buffer=1000,  # tar / TFRecord / TFDS files: records per shuffle window
    )
  )
  if max_text_len:
    data.max_text_len = max_text_len
    data.caption_word_dropout = 0.0  # language augmentation of training captions (input_pipeline)
    data.hard_negatives = False  # shapes: each training row also carries its scene with another shape
  if normalize:
    data.update(dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
  data.update(extra)
  return data


def cifar10_npz() -> dict:
  """Data overrides for CIFAR-10 from ../shared/data/cifar10.npz (or --config.data.path) and its channel statistics."""
  return dict(name="cifar10_npz", path="", mean=(0.491, 0.482, 0.447), std=(0.247, 0.243, 0.262))


def jsonl_pairs() -> dict:
  """Data overrides for image-text pairs, {"image": path, "text": caption} per line; retrieval only (no labels)."""
  return dict(name="jsonl", path="", image_size=64, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28))


def resnet(stage_sizes: tuple[int, ...] = (1, 1, 1, 1), width: int = 16) -> dict:
  """A ResNet image encoder with the CIFAR stem (3x3 conv, no max-pool) for 16-32 px images."""
  return dict(name="resnet", stage_sizes=stage_sizes, width=width, stem="cifar")


def vit(width: int = 64, depth: int = 2, num_heads: int = 4) -> dict:
  """A ViT image encoder on 4x4 patches with global average pooling."""
  return dict(name="vit", patch_size=4, width=width, depth=depth, num_heads=num_heads, pool="gap")


def text_transformer(context_length: int, *, causal: bool, **extra) -> dict:
  """A 2-layer, 64-wide text transformer over byte tokens (vocab 256 + 3 special); causal = EOT pooling, as CLIP."""
  return dict(
    name="text_transformer",
    vocab_size=259,
    context_length=context_length,
    width=64,
    depth=2,
    num_heads=4,
    causal=causal,
    **extra,
  )


def tiny_text() -> dict:
  """Overrides that shrink a text transformer (or captioning decoder) for tiny runs."""
  return dict(context_length=TINY_TEXT_LEN, width=16, depth=1, num_heads=2)


def probe_eval(*, by_trainer: bool = True, **extra) -> ml_collections.ConfigDict:
  """kNN and linear probe on frozen features; by_trainer adds the keys of the trainer's own encoder evaluation."""
  ev = ml_collections.ConfigDict(dict(batch_size=512, knn_k=200, knn_temperature=0.1, train_examples=10000))
  if by_trainer:
    ev.update(dict(linear_probe=True, every_steps=0, health_examples=1024))
  ev.update(extra)
  return ev


def image_text_eval(**extra) -> ml_collections.ConfigDict:
  """Zero-shot classification and retrieval on the whole test split, with the data's class names and templates."""
  return ml_collections.ConfigDict(
    dict(batch_size=512, test_examples=0, class_names=(), templates=(), every_steps=0, **extra)
  )


def tiny(c: ml_collections.ConfigDict, *, adamw: bool = False) -> None:
  """Shrinks recipe c in place to a run of seconds on CPU; adamw replaces an SGD / LARS optimizer by plain AdamW."""
  # 64 examples of at most 16 px, batch 16, 20 steps at lr 3e-3 with 1 warm-up step and no weight decay, log every
  # step, checkpoint every 10, small evaluations, no colour jitter or grayscale.
  c.data.update(dict(image_size=min(c.data.image_size, 16), train_size=64, test_size=64))
  if "max_text_len" in c.data:
    c.data.max_text_len = TINY_TEXT_LEN
  c.batch_size = 16
  c.total_steps = 20
  if adamw:
    c.optimizer = ml_collections.ConfigDict(dict(name="adamw", schedule="cosine"))
  c.optimizer.update(dict(base_lr=3e-3, warmup_steps=1, weight_decay=0.0))
  c.log_every = 1
  c.checkpoint_every = 10
  small_eval = dict(batch_size=32, knn_k=10, train_examples=64, health_examples=32, caption_examples=32)
  c.eval.update({k: v for k, v in small_eval.items() if k in c.eval})
  if "augment" in c:
    small_augment = dict(crop_scale=(0.5, 1.0), jitter_prob=0.0, grayscale_prob=0.0)
    c.augment.update({k: v for k, v in small_augment.items() if k in c.augment})
