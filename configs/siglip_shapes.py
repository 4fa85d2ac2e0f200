"""SigLIP on the embedded "shapes" images and their captions: pairwise sigmoid loss with learnable temperature and
bias; reports zero-shot accuracy and retrieval R@1/R@5.

    python main.py --config=configs/siglip_shapes.py --workdir=workdirs/siglip
    python main.py --config=configs/siglip_shapes.py:vit,causal --workdir=workdirs/siglip_vit   # ViT + causal text
    python main.py --config=configs/siglip_shapes.py:tiny --workdir=/tmp/w                     # seconds, for tests
    python main.py --config=configs/siglip_shapes.py:jsonl --config.data.path=pairs/{split}.jsonl --workdir=...
    --config.loss.mode=ring --config.loss.chunk_size=64     # chunked / ring logits (same loss and gradients)
    python main.py --config=configs/siglip_shapes.py:pretrained --config.pretrained.path=DIR --workdir=...   # HF SiglipModel

Arguments (comma separated): tiny, vit (image tower; default a ResNet), causal (text tower with causal attention
and EOT pooling, as CLIP; default bidirectional with mean pooling), jsonl (image-text pairs), pretrained (fine-tune a
Hugging Face SiglipModel directory, --config.pretrained.path: it sets the towers, projections, logit scale
and the data's image size, mean / std, tokenizer and text length; see methods/pretrained.py).
"""

import ml_collections

from configs import common, default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "vit", "causal", "jsonl", "pretrained"))
  c = common.base("siglip", batch_size=256, total_steps=1000)
  common.shapes_data(c, max_text_len=56)

  # SigLIP's initialisation: t = exp(log 10), b = -10.
  image = common.vit() if "vit" in args else common.resnet()
  c.model = default.two_tower_model(
    image, common.text_transformer(56, causal="causal" in args), logit_scale_init=2.3026, logit_bias_init=-10.0
  )
  c.loss.update(dict(name="siglip_loss", mode="dense", chunk_size=256))
  c.optimizer.update(
    dict(name="adamw", base_lr=2e-3, b1=0.9, b2=0.98, weight_decay=0.1, warmup_steps=50, grad_clip_norm=1.0)
  )
  c.evals = common.image_text_evals()

  if "jsonl" in args:
    c.data.update(common.jsonl_pairs())
  if "pretrained" in args:
    # Tower blocks are placeholders: train.setup fills config.model and config.data from the checkpoint.
    c.pretrained.kind = "siglip_hf"
    c.model = default.two_tower_model(dict(name="vit"), dict(name="text_transformer"))
    c.optimizer.update(dict(base_lr=1e-5, warmup_steps=50))  # fine-tuning: a small step from the released weights
    c.total_steps = 500
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    common.tiny(c)
  if "tiny" in args and "pretrained" not in args:
    c.model.image = common.vit(width=16, depth=1, num_heads=2) if "vit" in args else common.resnet((1,), width=8)
    c.model.text.update(common.tiny_text())
    c.model.embed_dim = 16
  return c
