"""CoCa-style hybrid on the embedded "shapes" dataset: ViT image encoder, text tower and a captioning decoder that
cross-attends to the image tokens, trained with CLIP's contrastive loss plus the captioning cross entropy; reports
zero-shot, retrieval R@1/R@5 and greedy-decoded captions (exact match, class named).

    python main.py --config=configs/coca_shapes.py --workdir=workdirs/coca
    python main.py --config=configs/coca_shapes.py:tiny --workdir=/tmp/w                  # seconds, for tests
    --config.loss.terms.caption.weight=2.0                                                 # generative vs contrastive

Arguments (comma separated): tiny, jsonl (image-text pairs, --config.data.path=pairs/{split}.jsonl).
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = set((arg or "").split(",")) - {""}
  unknown = args - {"tiny", "jsonl"}
  if unknown:
    raise ValueError(f"Unknown config arguments {sorted(unknown)}; use tiny, jsonl.")
  c = ml_collections.ConfigDict()
  c.method = "coca"
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name="shapes", image_size=32, num_classes=10, train_size=20000, test_size=2000, seed=0, tokenizer="bytes",
      max_text_len=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))

  c.model = ml_collections.ConfigDict(dict(
      image=dict(name="vit", patch_size=4, width=64, depth=2, num_heads=4, pool="gap"),
      text=dict(name="text_transformer", vocab_size=259, context_length=64, width=64, depth=2, num_heads=4,
                causal=True),
      decoder=dict(vocab_size=259, context_length=64, width=64, depth=2, num_heads=4),
      embed_dim=64, logit_scale_init=2.6593, max_logit_scale=100.0, num_classes=0))
  # CoCa weighs captioning 2 : contrastive 1 (Yu et al. 2022).
  c.loss = ml_collections.ConfigDict(dict(terms=dict(
      clip=dict(name="clip_softmax_loss", weight=1.0, inputs=("image_emb", "text_emb", "logit_scale"),
                kwargs=dict(mode="dense")),
      caption=dict(name="token_cross_entropy", weight=2.0, inputs=("caption_logits", "caption_targets",
                                                                   "caption_mask"), kwargs=dict(label_smoothing=0.0)),
  )))

  c.batch_size = 256
  c.total_steps = 1000
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", base_lr=1e-3, b1=0.9, b2=0.98, weight_decay=0.05, warmup_steps=50, schedule="cosine",
      grad_clip_norm=1.0))
  c.nonfinite = "stop"

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 2

  c.eval = ml_collections.ConfigDict(dict(batch_size=512, test_examples=0, class_names=(), templates=(),
                                          caption_examples=256))
  c.export = ml_collections.ConfigDict(dict(enabled=True))  # the image encoder's pooled features

  if "jsonl" in args:
    c.data.update(dict(name="jsonl", path="", image_size=64, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28)))
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    c.data.update(dict(image_size=16, train_size=64, test_size=64, max_text_len=48))
    c.model.image.update(dict(width=16, depth=1, num_heads=2))
    c.model.text.update(dict(context_length=48, width=16, depth=1, num_heads=2))
    c.model.decoder.update(dict(context_length=48, width=16, depth=1, num_heads=2))
    c.model.embed_dim = 16
    c.batch_size = 16
    c.total_steps = 20
    c.optimizer.update(dict(base_lr=3e-3, warmup_steps=1, weight_decay=0.0))
    c.log_every = 1
    c.checkpoint_every = 10
    c.eval.update(dict(batch_size=32, caption_examples=32))
  return c
