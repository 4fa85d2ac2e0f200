"""SigLIP on the embedded "shapes" images and their captions: pairwise sigmoid loss with learnable temperature and
bias; reports zero-shot accuracy and retrieval R@1/R@5.

    python main.py --config=configs/siglip_shapes.py --workdir=workdirs/siglip
    python main.py --config=configs/siglip_shapes.py:vit,causal --workdir=workdirs/siglip_vit   # ViT + causal text
    python main.py --config=configs/siglip_shapes.py:tiny --workdir=/tmp/w                     # seconds, for tests
    python main.py --config=configs/siglip_shapes.py:jsonl --config.data.path=pairs/{split}.jsonl --workdir=...
    --config.loss.mode=ring --config.loss.chunk_size=64     # chunked / ring logits (same loss and gradients)

Arguments (comma separated): tiny, vit (image tower; default a ResNet), causal (text tower with causal attention
and EOT pooling, as CLIP; default bidirectional with mean pooling), jsonl (image-text pairs).
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = set((arg or "").split(",")) - {""}
  unknown = args - {"tiny", "vit", "causal", "jsonl"}
  if unknown:
    raise ValueError(f"Unknown config arguments {sorted(unknown)}; use tiny, vit, causal, jsonl.")
  c = ml_collections.ConfigDict()
  c.method = "siglip"
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name="shapes", image_size=32, num_classes=10, train_size=20000, test_size=2000, seed=0, tokenizer="bytes",
      max_text_len=56, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))

  # SigLIP's initialisation: t = exp(log 10), b = -10.
  c.model = ml_collections.ConfigDict(dict(
      image=dict(name="resnet", stage_sizes=(1, 1, 1, 1), width=16, stem="cifar"),
      text=dict(name="text_transformer", vocab_size=259, context_length=56, width=64, depth=2, num_heads=4,
                causal=False),
      embed_dim=64, logit_scale_init=2.3026, logit_bias_init=-10.0, max_logit_scale=100.0, lock_image=False))
  c.loss = ml_collections.ConfigDict(dict(name="siglip_loss", mode="dense", chunk_size=0))

  c.batch_size = 256
  c.total_steps = 1000
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", base_lr=2e-3, b1=0.9, b2=0.98, weight_decay=0.1, warmup_steps=50, schedule="cosine",
      grad_clip_norm=1.0))
  c.nonfinite = "stop"

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 2

  c.eval = ml_collections.ConfigDict(dict(batch_size=512, test_examples=0, class_names=(), templates=()))
  c.export = ml_collections.ConfigDict(dict(enabled=True))  # the image tower: {"image": uint8} -> embedding

  if "vit" in args:
    c.model.image = dict(name="vit", patch_size=4, width=64, depth=2, num_heads=4, pool="gap")
  if "causal" in args:
    c.model.text.causal = True
  if "jsonl" in args:  # image-text pairs: {"image": path, "text": caption} per line; retrieval only (no labels)
    c.data.update(dict(name="jsonl", path="", image_size=64, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28)))
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    c.data.update(dict(image_size=16, train_size=64, test_size=64, max_text_len=48))
    c.model.image = dict(name="resnet", stage_sizes=(1,), width=8, stem="cifar")
    if "vit" in args:
      c.model.image = dict(name="vit", patch_size=4, width=16, depth=1, num_heads=2, pool="gap")
    c.model.text.update(dict(context_length=48, width=16, depth=1, num_heads=2))
    c.model.embed_dim = 16
    c.batch_size = 16
    c.total_steps = 20
    c.optimizer.update(dict(base_lr=3e-3, warmup_steps=1, weight_decay=0.0))
    c.log_every = 1
    c.checkpoint_every = 10
    c.eval.batch_size = 32
  return c
