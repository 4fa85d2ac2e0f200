"""SwAV on the embedded "shapes" dataset: multi-crop, Sinkhorn codes over prototypes; kNN and linear probe reported.

    python main.py --config=configs/swav_shapes.py --workdir=workdirs/swav
    python main.py --config=configs/swav_shapes.py:queue --workdir=workdirs/swav_queue     # + queue of embeddings
    python main.py --config=configs/swav_shapes.py:cifar10 --workdir=workdirs/swav_cifar   # ../shared/data CIFAR-10
    python main.py --config=configs/swav_shapes.py:tiny --workdir=/tmp/w                   # seconds, for tests

Arguments (comma separated): tiny, queue, cifar10.
"""

import ml_collections

from configs import common, default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "queue", "cifar10"))
  c = common.base("swav", batch_size=256, total_steps=600, log_every=20, checkpoint_every=200, keep_checkpoints=3)

  c.model.update(common.resnet())
  c.head.update(dict(hidden_dim=256, out_dim=64, num_layers=2))
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
    c.data.update(common.cifar10_npz())
    c.model.stage_sizes = (2, 2, 2, 2)
    c.swav.num_prototypes = 300
    c.total_steps = 5000
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    common.tiny(c, adamw=True)
    c.model.update(common.resnet((1,), width=8))
    c.head.update(dict(hidden_dim=16, out_dim=16))
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
  return c
