"""CoCa-style hybrid on the embedded "shapes" dataset: ViT image encoder, text tower and a captioning decoder that
cross-attends to the image tokens, trained with CLIP's contrastive loss plus the captioning cross entropy; reports
zero-shot, retrieval R@1/R@5 and captions decoded greedily and by contrastive search (exact match, class named,
repeated bigrams; `--config.evals.captioning_contrastive.top_k=4 --config.evals.captioning_contrastive.alpha=0.6`).

    python main.py --config=configs/coca_shapes.py --workdir=workdirs/coca
    python main.py --config=configs/coca_shapes.py:tiny --workdir=/tmp/w                  # seconds, for tests
    --config.loss.terms.caption.weight=2.0                                                 # generative vs contrastive

Arguments (comma separated): tiny, jsonl (image-text pairs, --config.data.path=pairs/{split}.jsonl).
"""

import ml_collections

from configs import common, default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "jsonl"))
  c = common.base("coca", batch_size=256, total_steps=1000)
  common.shapes_data(c, max_text_len=64)

  c.model = default.multitask_model(
    common.vit(),
    text=common.text_transformer(64, causal=True),
    decoder=dict(vocab_size=259, context_length=64, width=64, depth=2, num_heads=4),
  )
  # CoCa weighs captioning 2 : contrastive 1 (Yu et al. 2022).
  c.loss.terms = dict(
    clip=dict(
      name="clip_softmax_loss", weight=1.0, inputs=("image_emb", "text_emb", "logit_scale"), kwargs=dict(mode="dense")
    ),
    caption=dict(
      name="token_cross_entropy",
      weight=2.0,
      inputs=("caption_logits", "caption_targets", "caption_mask"),
      kwargs=dict(label_smoothing=0.0),
    ),
  )
  c.optimizer.update(
    dict(name="adamw", base_lr=1e-3, b1=0.9, b2=0.98, weight_decay=0.05, warmup_steps=50, grad_clip_norm=1.0)
  )
  c.evals = common.image_text_evals()
  c.evals.captioning = default.eval_config("captioning", examples=256)
  # The same images decoded by contrastive search (Su et al. 2022): less repetition at equal quality, or not.
  c.evals.captioning_contrastive = default.eval_config("captioning", examples=256, decode="contrastive")

  if "jsonl" in args:
    c.data.update(common.jsonl_pairs())
    del c.evals["zero_shot"]  # image-text pairs without labels
    c.evals.captioning.examples = c.evals.captioning_contrastive.examples = 0
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    common.tiny(c)
    c.model.image = common.vit(width=16, depth=1, num_heads=2)
    c.model.text.update(common.tiny_text())
    c.model.decoder.update(common.tiny_text())
    c.model.embed_dim = 16
  return c
