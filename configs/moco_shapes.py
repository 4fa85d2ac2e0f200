"""MoCo v2 on the embedded "shapes" dataset: momentum encoder + queue of negatives; kNN and linear probe reported.

    python main.py --config=configs/moco_shapes.py --workdir=workdirs/moco
    python main.py --config=configs/moco_shapes.py:mochi --workdir=workdirs/mochi        # MoCHi hard negatives
    python main.py --config=configs/moco_shapes.py:cifar10 --workdir=workdirs/moco_cifar  # ../shared/data CIFAR-10
    python main.py --config=configs/moco_shapes.py:tiny --workdir=/tmp/w                  # seconds, for tests

Arguments (comma separated): tiny, mochi, cifar10.
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = set((arg or "").split(",")) - {""}
  unknown = args - {"tiny", "mochi", "cifar10"}
  if unknown:
    raise ValueError(f"Unknown config arguments {sorted(unknown)}; use tiny, mochi, cifar10.")
  c = ml_collections.ConfigDict()
  c.method = "moco"
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name="shapes", image_size=32, num_classes=10, train_size=20000, test_size=2000, seed=0, tokenizer="",
      mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))

  c.model = ml_collections.ConfigDict(dict(name="resnet", stage_sizes=(1, 1, 1, 1), width=16, stem="cifar"))
  c.head = ml_collections.ConfigDict(dict(hidden_dim=256, out_dim=64, num_layers=2))
  c.moco = ml_collections.ConfigDict(dict(queue_size=4096, momentum=0.99))
  c.loss = ml_collections.ConfigDict(dict(name="nt_xent", temperature=0.2))
  c.augment = ml_collections.ConfigDict(dict(
      crop_scale=(0.2, 1.0), flip_prob=0.5, jitter_strength=0.5, jitter_prob=0.8, grayscale_prob=0.2))

  c.batch_size = 256
  c.total_steps = 600
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", base_lr=0.06, scale_by_batch=True, batch_size=c.get_ref("batch_size"), weight_decay=5e-4,
      momentum=0.9, warmup_steps=20, schedule="cosine", grad_clip_norm=0.0))
  c.nonfinite = "stop"

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.log_every = 20
  c.checkpoint_every = 200
  c.keep_checkpoints = 3

  c.eval = ml_collections.ConfigDict(dict(
      batch_size=512, knn_k=200, knn_temperature=0.1, linear_probe=True, train_examples=10000, every_steps=0,
      health_examples=1024))
  c.export = ml_collections.ConfigDict(dict(enabled=True))

  if "mochi" in args:
    c.loss = ml_collections.ConfigDict(dict(
        name="mochi", temperature=0.2, num_hard=512, num_mixed=128, num_query_mixed=64, query_mix_max=0.5))
  if "cifar10" in args:
    c.data.update(dict(name="cifar10_npz", path="", mean=(0.491, 0.482, 0.447), std=(0.247, 0.243, 0.262)))
    c.model.stage_sizes = (2, 2, 2, 2)
    c.moco.queue_size = 8192
    c.total_steps = 5000
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    c.data.update(dict(image_size=16, train_size=64, test_size=64))
    c.model.update(dict(stage_sizes=(1,), width=8))
    c.head.update(dict(hidden_dim=16, out_dim=16))
    c.moco.update(dict(queue_size=48, momentum=0.9))
    c.loss.update(dict(num_hard=16, num_mixed=8, num_query_mixed=4) if "mochi" in args else {})
    c.batch_size = 16
    c.total_steps = 20
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", base_lr=3e-3, weight_decay=0.0, warmup_steps=1, schedule="cosine"))
    c.augment.update(dict(crop_scale=(0.5, 1.0), jitter_prob=0.0, grayscale_prob=0.0))
    c.log_every = 1
    c.checkpoint_every = 10
    c.eval.update(dict(batch_size=32, knn_k=10, train_examples=64, health_examples=32))
  return c
