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


def resnet(stage_sizes: tuple[int, ...] = (1, 1, 1, 1), width: int = 16, conv_impl: str = "xla") -> dict:
  """A ResNet image encoder with the CIFAR stem (3x3 conv, no max-pool) for 16-32 px images; conv_impl "auto": the
  cache-blocked (and, from 64 channels, Winograd) convolutions of models/conv.py on CPU (the make run step 0.50 ->
  0.43 s on Zen 4), XLA's elsewhere."""
  return dict(name="resnet", stage_sizes=stage_sizes, width=width, stem="cifar", conv_impl=conv_impl)


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


def two_tower_arguments(c: ml_collections.ConfigDict, args: set[str], *, pretrained_kind: str) -> None:
  """Applies the config arguments "pretrained" and "tiny" of the CLIP-style recipes (clip_shapes, siglip_shapes) to
  c in place: pretrained fine-tunes a Hugging Face checkpoint of `pretrained_kind` (config.pretrained.kind); tiny
  shrinks the run and, unless pretrained, the towers ("vit" in args: the ViT image tower)."""
  if "pretrained" in args:
    # Tower blocks are placeholders: train.setup fills config.model and config.data from the checkpoint.
    c.pretrained.kind = pretrained_kind
    c.model = default.two_tower_model(dict(name="vit"), dict(name="text_transformer"))
    c.optimizer.update(dict(base_lr=1e-5, warmup_steps=50))  # fine-tuning: a small step from the released weights
    c.total_steps = 500
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    tiny(c)
  if "tiny" in args and "pretrained" not in args:
    c.model.image = vit(width=16, depth=1, num_heads=2) if "vit" in args else resnet((1,), width=8)
    c.model.text.update(tiny_text())
    c.model.embed_dim = 16


def resnet_with_head(method: str, *, batch_size: int) -> ml_collections.ConfigDict:
  """The base of the image recipes with a projection head (simclr, supcon, moco, swav): 600 steps, a 4-stage 16-wide
  CIFAR ResNet and a 2-layer 256-64 MLP head; logs every 20 steps, keeps 3 checkpoints, one every 200 steps."""
  c = base(method, batch_size=batch_size, total_steps=600, log_every=20, checkpoint_every=200, keep_checkpoints=3)
  # On a CPU-only host: blocked / Winograd convolutions and one device per core (make run's step 0.50 -> 0.35 s on
  # 2 cores).
  c.model.update(resnet(conv_impl="auto"))
  c.head.update(dict(hidden_dim=256, out_dim=64, num_layers=2))
  c.cpu_devices = -1
  return c


def resnet_arguments(c: ml_collections.ConfigDict, args: set[str]) -> None:
  """Applies the config arguments "cifar10" and "tiny" of the ResNet recipes with a head (moco_shapes, swav_shapes) to
  c in place, after the recipe's own: cifar10 = ../shared/data CIFAR-10 on ResNet-18 stages for 5000 steps; tiny =
  a run of seconds with AdamW, a one-stage 8-wide ResNet and a 16-wide head."""
  if "cifar10" in args:
    c.data.update(cifar10_npz())
    c.model.stage_sizes = (2, 2, 2, 2)
    c.total_steps = 5000
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    tiny(c, adamw=True)
    c.model.update(resnet((1,), width=8))
    c.head.update(dict(hidden_dim=16, out_dim=16))


def embedding_recipe(c: ml_collections.ConfigDict, args: set[str], *, knn_k: int, tiny_model: dict) -> None:
  """Sets the evaluations and export of the recipes whose encoder is neither an image nor a text tower (graph_tu,
  timeseries_ucr) and applies their "tiny" argument, in place: kNN with knn_k neighbours and a 100-epoch linear
  probe, both also at step 0 (the untrained encoder as the baseline); no export; tiny = a run of seconds with the
  model overrides tiny_model and a 16-wide head."""
  c.evals = ml_collections.ConfigDict(
    dict(
      knn=default.eval_config("knn", k=knn_k, at_start=True),
      linear_probe=default.eval_config("linear_probe", epochs=100, at_start=True),
    )
  )
  c.export.enabled = False  # export/ writes image and text towers only
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    tiny(c)
    c.model.update(tiny_model)
    c.head.update(dict(hidden_dim=16, out_dim=16))


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
