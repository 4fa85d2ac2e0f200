"""SimCLR on the embedded procedural "shapes" dataset: the default of `make run` (a few CPU minutes).

python main.py --config=configs/simclr_shapes.py --workdir=workdirs/simclr
python main.py --config=configs/simclr_shapes.py:tiny --workdir=/tmp/w     # seconds, for tests
python main.py --config=configs/simclr_shapes.py:cifar10,resnet18 --workdir=w  # real CIFAR-10 (../shared/data), ResNet-18
python main.py --config=configs/simclr_shapes.py --config.batch_size=512 --config.total_steps=1000 ...
"""

import ml_collections

from configs import common, default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "cifar10", "resnet18"))
  c = common.base("simclr", batch_size=128, total_steps=600, log_every=20, checkpoint_every=200, keep_checkpoints=3)

  c.model.update(common.resnet())
  c.head.update(dict(hidden_dim=256, out_dim=64, num_layers=2))
  c.loss.update(dict(name="nt_xent", temperature=0.2))
  # Flat-coloured shapes: a full hue turn so colour cannot identify an image.
  c.augment = default.image_augment(crop_scale=(0.5, 1.0), hue_range=0.5)
  c.optimizer.update(dict(name="adamw", base_lr=5e-3, weight_decay=1e-4, warmup_steps=50, schedule="cosine"))
  c.evals = default.probe_evals()

  if "cifar10" in args:  # ../shared/data/cifar10.npz by default; set --config.data.path for another copy
    c.data.update(name="cifar10_npz", mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.243, 0.261))
    c.augment.crop_scale = (0.08, 1.0)
    c.augment.hue_range = None  # torchvision default: 0.2 x strength
    # The torch peer's recipe (../shared/peers/simclr_cifar10_quality_torch.py): SGD 0.06 x B/256, NT-Xent t=0.5.
    c.batch_size = 256
    c.loss.temperature = 0.5
    c.optimizer.update(dict(name="sgd", base_lr=0.06, scale_by_batch=True, weight_decay=5e-4, warmup_steps=0))
  if "resnet18" in args:  # the peers' backbone and head (ResNet-18 CIFAR stem, 512-2048-128)
    # "auto": cache-blocked convolutions on CPU (ResNet-18 steps ~2x faster, benchmarks/README.md), XLA's elsewhere.
    c.model = ml_collections.ConfigDict(dict(name="resnet18_cifar", conv_impl="auto", dtype="float32", remat=False))
    c.head.update(hidden_dim=2048, out_dim=128)
  # Not common.tiny: the 4-step run that tests/conftest.py and tests/test_train.py are built on.
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    c.data.update(train_size=256, test_size=128)
    c.model.width = 8
    c.head.update(hidden_dim=32, out_dim=16)
    c.batch_size = 32
    c.total_steps = 4
    # SGD: Adam turns float rounding noise of an exactly-zero gradient into full +-lr steps, which would make the
    # tests' sharded-vs-single-device and resume comparisons flaky.
    c.optimizer.update(dict(name="sgd", base_lr=0.1, warmup_steps=1))
    c.log_every = 2
    c.checkpoint_every = 2
    for entry in c.evals.values():
      entry.batch_size = 64
    c.evals.knn.update(k=20, train_examples=256)
    c.evals.linear_probe.train_examples = 256
  return c
