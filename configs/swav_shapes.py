"""SwAV on the embedded "shapes" dataset: multi-crop, Sinkhorn codes over prototypes; kNN and linear probe reported.

    python main.py --config=configs/swav_shapes.py --workdir=workdirs/swav
    python main.py --config=configs/swav_shapes.py:queue --workdir=workdirs/swav_queue     # + queue of embeddings

Arguments (comma separated): queue, and tiny / cifar10 as in configs/moco_shapes.py.
"""

import ml_collections

from configs import common, default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "queue", "cifar10"))
  c = common.resnet_with_head("swav", batch_size=256)
  c.swav = default.swav()
  c.loss.update(dict(name="swav", temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05))
  # Colour part of the augmentation; crop scales and sizes are in c.swav.
  c.augment.update(dict(flip_prob=0.5, jitter_strength=0.5, jitter_prob=0.8, grayscale_prob=0.2))
  c.optimizer.update(
    dict(name="lars", base_lr=0.6, scale_by_batch=True, weight_decay=1e-6, momentum=0.9, warmup_steps=50)
  )
  c.evals = default.probe_evals()

  if "queue" in args:
    c.swav.queue_size = 1024
  if "cifar10" in args:
    c.swav.num_prototypes = 300
  if "tiny" in args:
    c.swav.update(
      dict(
        num_prototypes=8,
        num_small_crops=1,
        small_size=8,
        freeze_prototypes_steps=2,
        queue_start_step=10,  # tiny,queue: 10 steps of queue-less SwAV, then 10 with the queue
        queue_size=32 if "queue" in args else 0,
      )
    )
  common.resnet_arguments(c, args)
  return c
