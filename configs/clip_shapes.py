"""CLIP on the embedded "shapes" images and their captions; reports zero-shot accuracy and retrieval R@1/R@5.

    python main.py --config=configs/clip_shapes.py --workdir=workdirs/clip
    python main.py --config=configs/clip_shapes.py:vit,causal --workdir=workdirs/clip_vit   # ViT + causal text
    python main.py --config=configs/clip_shapes.py:tiny --workdir=/tmp/w                   # seconds, for tests
    python main.py --config=configs/clip_shapes.py:jsonl --config.data.path=pairs/{split}.jsonl --workdir=...
    --config.loss.mode=ring --config.loss.chunk_size=64     # chunked / ring logits (same loss and gradients)
    python main.py --config=configs/clip_shapes.py:pretrained --config.pretrained.path=DIR --workdir=...   # HF CLIPModel

Arguments (comma separated): tiny, vit (image tower; default a ResNet), causal (text tower with causal attention
and EOT pooling, as CLIP; default bidirectional with mean pooling), jsonl (image-text pairs), pretrained (fine-tune a
Hugging Face CLIPModel directory, --config.pretrained.path: it sets the towers, projections, logit scale
and the data's image size, mean / std, tokenizer and text length; see methods/pretrained.py).
"""

import ml_collections

from configs import common, default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "vit", "causal", "jsonl", "pretrained"))
  c = common.base("clip", batch_size=128, total_steps=1500)
  common.shapes_data(c, max_text_len=56, hard_negatives=True)

  image = common.vit() if "vit" in args else common.resnet()
  c.model = default.two_tower_model(image, common.text_transformer(56, causal="causal" in args))
  # "dense" gathers the full [N, N] logits; "chunked" / "ring" cover them in [n, chunk_size] blocks (same loss and
  # gradients, memory O(local batch x chunk)).
  c.loss.update(dict(name="clip_softmax_loss", mode="dense", chunk_size=256))
  c.optimizer.update(
    dict(name="adamw", base_lr=2e-3, b1=0.9, b2=0.98, weight_decay=0.1, warmup_steps=50, grad_clip_norm=1.0)
  )
  c.evals = common.image_text_evals()

  if "jsonl" in args:
    c.data.update(common.jsonl_pairs(), hard_negatives=False)
    c.batch_size, c.total_steps = 256, 1000
  common.two_tower_arguments(c, args, pretrained_kind="clip_hf")
  return c
