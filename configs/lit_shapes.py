"""LiT (locked-image tuning) on the embedded "shapes" dataset: a frozen pretrained image tower (the encoder of an
earlier run, e.g. SimCLR / SupCon / MoCo) and a text tower trained to read it out with CLIP's loss; reports
zero-shot accuracy and retrieval R@1/R@5.

    python main.py --config=configs/simclr_shapes.py --workdir=workdirs/simclr                # 1. pretrain
    python main.py --config=configs/lit_shapes.py --workdir=workdirs/lit \
        --config.model.image_checkpoint=workdirs/simclr                                        # 2. lock + tune
    python main.py --config=configs/lit_shapes.py:tiny --config.model.image_checkpoint=<tiny moco run> --workdir=...

config.model.image must match the pretrained encoder (default: configs/simclr_shapes.py's ResNet);
config.model.image_checkpoint_key names its params subtree ("backbone" for SimCLR / SupCon / MoCo runs,
"image_tower" for CLIP runs). Arguments: tiny.
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = set((arg or "").split(",")) - {""}
  unknown = args - {"tiny"}
  if unknown:
    raise ValueError(f"Unknown config arguments {sorted(unknown)}; use tiny.")
  c = ml_collections.ConfigDict()
  c.method = "lit"
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name="shapes", image_size=32, num_classes=10, train_size=20000, test_size=2000, seed=0, tokenizer="bytes",
      max_text_len=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))

  c.model = ml_collections.ConfigDict(dict(
      image=dict(name="resnet", stage_sizes=(1, 1, 1, 1), width=16, stem="cifar"),
      text=dict(name="text_transformer", vocab_size=259, context_length=64, width=64, depth=2, num_heads=4,
                causal=True),
      embed_dim=64, logit_scale_init=2.6593, max_logit_scale=100.0,
      lock_image=True, image_checkpoint="workdirs/simclr", image_checkpoint_key="backbone"))
  c.loss = ml_collections.ConfigDict(dict(name="clip_softmax_loss", mode="dense", chunk_size=0))

  c.batch_size = 256
  c.total_steps = 600
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", base_lr=1e-3, b1=0.9, b2=0.98, weight_decay=0.1, warmup_steps=50, schedule="cosine",
      grad_clip_norm=1.0))
  c.nonfinite = "stop"

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.log_every = 50
  c.checkpoint_every = 300
  c.keep_checkpoints = 2

  c.eval = ml_collections.ConfigDict(dict(batch_size=512, test_examples=0, class_names=(), templates=()))
  c.export = ml_collections.ConfigDict(dict(enabled=True))

  if "tiny" in args:  # seconds on CPU: tests and smoke runs (image tower of configs/moco_shapes.py:tiny)
    c.data.update(dict(image_size=16, train_size=64, test_size=64, max_text_len=48))
    c.model.image = dict(name="resnet", stage_sizes=(1,), width=8, stem="cifar")
    c.model.text.update(dict(context_length=48, width=16, depth=1, num_heads=2))
    c.model.embed_dim = 16
    c.batch_size = 16
    c.total_steps = 20
    c.optimizer.update(dict(base_lr=3e-3, warmup_steps=1, weight_decay=0.0))
    c.log_every = 1
    c.checkpoint_every = 10
    c.eval.batch_size = 32
  return c
