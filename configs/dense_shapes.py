"""Pixel-level contrast (PixPro) on the embedded "shapes" dataset; kNN / linear probe and the per-pixel dense probe
(background or shape class of every pixel) reported.

    python main.py --config=configs/dense_shapes.py --workdir=workdirs/dense
    python main.py --config=configs/dense_shapes.py:pixcontrast --workdir=w  # PixContrast: pixel InfoNCE instead
    python main.py --config=configs/dense_shapes.py:tiny --workdir=/tmp/w    # seconds, for tests

The baseline on the same encoder and probe: python main.py --config=configs/simclr_shapes.py --workdir=w
--config.model.stage_sizes='(1, 1, 1)' --config.evals.dense_probe.type=dense_probe

Arguments (comma separated): tiny, pixcontrast.
"""

import ml_collections

from configs import common, default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "pixcontrast"))
  c = common.base("dense", batch_size=128, total_steps=600, log_every=20, checkpoint_every=200, keep_checkpoints=3)

  # Three stages: an 8 x 8 feature map of 32 px images (a 4-stage ResNet leaves 4 x 4, too coarse for pixels).
  c.model.update(common.resnet((1, 1, 1)))
  c.head.update(dict(hidden_dim=256, out_dim=64, num_layers=2))  # per-pixel projector (PixPro: 2048-256, 1x1 convs)
  c.dense = default.dense()
  c.loss.update(dict(name="pixpro"))
  # SimCLR-shapes' views (both views must overlap: crops of at least half the image), so the two compare.
  c.augment = default.image_augment(crop_scale=(0.5, 1.0), hue_range=0.5)
  c.optimizer.update(dict(name="adamw", base_lr=5e-3, weight_decay=1e-4, warmup_steps=50, schedule="cosine"))
  c.evals = default.probe_evals()
  c.evals.dense_probe = default.eval_config("dense_probe", examples=500)
  if "pixcontrast" in args:  # Xie et al. 2021, eq. 1: tau = 0.3
    c.loss = ml_collections.ConfigDict(dict(name="pixel_contrast", temperature=0.3))

  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    common.tiny(c)
    c.data.image_size = 8  # a 4 x 4 feature map: 16 pixels per view
    c.model.update(common.resnet((1, 1), width=8))
    c.head.update(dict(hidden_dim=16, out_dim=16))
    c.dense.momentum = 0.9
    c.evals.dense_probe.update(dict(train_examples=32, epochs=2, lrs=(1e-2,)))
  return c
