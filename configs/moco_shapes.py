"""MoCo v2 on the embedded "shapes" dataset: momentum encoder + queue of negatives; kNN and linear probe reported.

    python main.py --config=configs/moco_shapes.py --workdir=workdirs/moco
    python main.py --config=configs/moco_shapes.py:mochi --workdir=workdirs/mochi        # MoCHi hard negatives
    python main.py --config=configs/moco_shapes.py:cifar10 --workdir=workdirs/moco_cifar  # ../shared/data CIFAR-10
    python main.py --config=configs/moco_shapes.py:tiny --workdir=/tmp/w                  # seconds, for tests

Arguments (comma separated): tiny, mochi, cifar10.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "mochi", "cifar10"))
  c = common.base("moco", batch_size=256, total_steps=600, log_every=20, checkpoint_every=200, keep_checkpoints=3)
  c.data = common.shapes_data()

  c.model = ml_collections.ConfigDict(common.resnet())
  c.head = ml_collections.ConfigDict(dict(hidden_dim=256, out_dim=64, num_layers=2))
  c.moco = ml_collections.ConfigDict(dict(queue_size=4096, momentum=0.99))
  c.loss = ml_collections.ConfigDict(dict(name="nt_xent", temperature=0.2))
  c.augment = ml_collections.ConfigDict(
    dict(crop_scale=(0.2, 1.0), flip_prob=0.5, jitter_strength=0.5, jitter_prob=0.8, grayscale_prob=0.2)
  )
  c.optimizer = ml_collections.ConfigDict(
    dict(
      name="sgd",
      base_lr=0.06,
      scale_by_batch=True,
      batch_size=c.get_ref("batch_size"),
      weight_decay=5e-4,
      momentum=0.9,
      warmup_steps=20,
      schedule="cosine",
      grad_clip_norm=0.0,
    )
  )

  c.eval = common.probe_eval()
  c.export = ml_collections.ConfigDict(dict(enabled=True))

  if "mochi" in args:
    c.loss = ml_collections.ConfigDict(
      dict(name="mochi", temperature=0.2, num_hard=512, num_mixed=128, num_query_mixed=64, query_mix_max=0.5)
    )
  if "cifar10" in args:
    c.data.update(common.cifar10_npz())
    c.model.stage_sizes = (2, 2, 2, 2)
    c.moco.queue_size = 8192
    c.total_steps = 5000
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    common.tiny(c, adamw=True)
    c.model.update(common.resnet((1,), width=8))
    c.head.update(dict(hidden_dim=16, out_dim=16))
    c.moco.update(dict(queue_size=48, momentum=0.9))
    if "mochi" in args:
      c.loss.update(dict(num_hard=16, num_mixed=8, num_query_mixed=4))
  return c
