"""Blocks the recipes in configs/ share, on top of the base schema configs/default.py; each recipe keeps the values
specific to its method in view."""

from collections.abc import Sequence

import ml_collections

from configs import default

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
  """The base schema with a recipe's trainer keys: method, global batch, steps, log / checkpoint cadence."""
  c = default.get_config()
  c.update(
    dict(
      method=method,
      batch_size=batch_size,
      total_steps=total_steps,
      log_every=log_every,
      checkpoint_every=checkpoint_every,
      keep_checkpoints=keep_checkpoints,
    )
  )
  return c


def shapes_data(c: ml_collections.ConfigDict, *, max_text_len: int = 0, **extra) -> None:
  """The embedded "shapes" data (the schema's default source); byte-tokenized captions if max_text_len > 0."""
  if max_text_len:
    c.data.update(dict(tokenizer="bytes", max_text_len=max_text_len))
  c.data.update(extra)


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


def image_text_evals(**zero_shot) -> ml_collections.ConfigDict:
  """Zero-shot classification and image <-> text retrieval on the run's own test split (image-text recipes)."""
  return ml_collections.ConfigDict(
    dict(zero_shot=default.eval_config("zero_shot", **zero_shot), retrieval=default.eval_config("retrieval"))
  )


# Evaluation options that tiny runs shrink, by option name.
_TINY_EVAL = dict(batch_size=32, train_examples=64, k=10, epochs=5)


def tiny(c: ml_collections.ConfigDict, *, adamw: bool = False) -> None:
  """Shrinks recipe c in place to a run of seconds on CPU; adamw replaces an SGD / LARS optimizer by plain AdamW."""
  # 64 examples of at most 16 px, batch 16, 20 steps at lr 3e-3 with 1 warm-up step and no weight decay, log every
  # step, checkpoint every 10, small evaluations, no colour jitter or grayscale.
  c.data.update(dict(image_size=min(c.data.image_size, 16), train_size=64, test_size=64))
  if c.data.tokenizer:
    c.data.max_text_len = TINY_TEXT_LEN
  c.batch_size = 16
  c.total_steps = 20
  if adamw:
    c.optimizer.update(dict(name="adamw", schedule="cosine", scale_by_batch=False, b1=0.9, b2=None))
  c.optimizer.update(dict(base_lr=3e-3, warmup_steps=1, weight_decay=0.0))
  c.log_every = 1
  c.checkpoint_every = 10
  for entry in c.evals.values():
    entry.update({k: v for k, v in _TINY_EVAL.items() if k in entry})
    entry.examples = min(entry.examples or 64, 64)
  small_augment = dict(crop_scale=(0.5, 1.0), jitter_prob=0.0, grayscale_prob=0.0)
  c.augment.update({k: v for k, v in small_augment.items() if k in c.augment})
