"""SigLIP on the embedded "shapes" images and their captions: pairwise sigmoid loss with learnable temperature and
bias; reports zero-shot accuracy and retrieval R@1/R@5.

    python main.py --config=configs/siglip_shapes.py --workdir=workdirs/siglip
    python main.py --config=configs/siglip_shapes.py:pretrained --config.pretrained.path=DIR --workdir=...   # HF SiglipModel

The arguments (tiny, vit, causal, jsonl, pretrained) and loss modes are those of configs/clip_shapes.py; here
pretrained fine-tunes a Hugging Face SiglipModel directory, and jsonl keeps the batch size and steps.
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
  common.two_tower_arguments(c, args, pretrained_kind="siglip_hf")
  return c
