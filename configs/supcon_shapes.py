"""Supervised contrastive (SupCon) on the embedded "shapes" dataset; linear probe and kNN on frozen features reported.

    python main.py --config=configs/supcon_shapes.py --workdir=workdirs/supcon
    python main.py --config=configs/supcon_shapes.py:cifar10 --workdir=workdirs/supcon_cifar   # ../shared/data CIFAR-10
    python main.py --config=configs/supcon_shapes.py:soft --workdir=workdirs/supcon_soft        # multi-hot labels
    python main.py --config=configs/supcon_shapes.py:tiny --workdir=/tmp/w                     # seconds, for tests

Arguments (comma separated): tiny, cifar10, soft (soft labels: class + superclass, multi-hot).
"""

import ml_collections

from configs import common, default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "cifar10", "soft"))
  c = common.resnet_with_head("supcon", batch_size=256)
  c.loss.update(dict(name="supcon", temperature=0.1))
  c.supcon = default.supcon()
  c.augment = default.image_augment(crop_scale=(0.2, 1.0))
  c.optimizer.update(
    dict(name="lars", base_lr=1.0, scale_by_batch=True, weight_decay=1e-6, momentum=0.9, warmup_steps=50)
  )
  c.evals = default.probe_evals()

  if "soft" in args:
    if "cifar10" in args:
      raise ValueError("supcon_shapes: 'soft' groups the shapes classes; CIFAR-10 has no superclasses.")
    # Shapes grouped by outline: curved (circle, ring, heart), convex polygons (square, triangle, hexagon, diamond),
    # concave polygons (star, cross, arrow); class ids as in input_pipeline.shapes.CLASS_NAMES.
    c.supcon.superclasses = ((0, 6, 9), (1, 2, 5, 7), (3, 4, 8))
  if "cifar10" in args:
    c.data.update(common.cifar10_npz())
    c.model.stage_sizes = (2, 2, 2, 2)
    c.total_steps = 5000
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    common.tiny(c, adamw=True)
    c.model.update(common.resnet((1,), width=8))
    c.head.update(dict(hidden_dim=16, out_dim=16))
  return c
