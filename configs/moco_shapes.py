"""MoCo v2 on the embedded "shapes" dataset: momentum encoder + queue of negatives; kNN and linear probe reported.

    python main.py --config=configs/moco_shapes.py --workdir=workdirs/moco
    python main.py --config=configs/moco_shapes.py:mochi --workdir=workdirs/mochi        # MoCHi hard negatives
    python main.py --config=configs/moco_shapes.py:cifar10 --workdir=workdirs/moco_cifar  # ../shared/data CIFAR-10
    python main.py --config=configs/moco_shapes.py:tiny --workdir=/tmp/w                  # seconds, for tests

Arguments (comma separated): tiny, mochi, cifar10.
"""

import ml_collections

from configs import common, default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "mochi", "cifar10"))
  c = common.resnet_with_head("moco", batch_size=256)
  c.moco = default.moco()
  c.moco.momentum = 0.99
  c.loss.update(dict(name="nt_xent", temperature=0.2))
  c.augment = default.image_augment(crop_scale=(0.2, 1.0))
  c.optimizer.update(
    dict(name="sgd", base_lr=0.06, scale_by_batch=True, weight_decay=5e-4, momentum=0.9, warmup_steps=20)
  )
  c.evals = default.probe_evals()

  if "mochi" in args:
    c.loss.update(dict(name="mochi", num_hard=512, num_mixed=128, num_query_mixed=64, query_mix_max=0.5))
  if "cifar10" in args:
    c.moco.queue_size = 8192
  if "tiny" in args:
    c.moco.update(dict(queue_size=48, momentum=0.9))
    if "mochi" in args:
      c.loss.update(dict(num_hard=16, num_mixed=8, num_query_mixed=4))
  common.resnet_arguments(c, args)
  return c
