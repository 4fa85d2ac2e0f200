"""SimCLR on the embedded procedural "shapes" dataset: the default of `make run` (a few CPU minutes).

python main.py --config=configs/simclr_shapes.py --workdir=workdirs/simclr
python main.py --config=configs/simclr_shapes.py:tiny --workdir=/tmp/w     # seconds, for tests
python main.py --config=configs/simclr_shapes.py:cifar10,resnet18 --workdir=w  # real CIFAR-10 (../shared/data), ResNet-18
python main.py --config=configs/simclr_shapes.py --config.batch_size=512 --config.total_steps=1000 ...
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "cifar10", "resnet18"))
  c = common.base("simclr", batch_size=128, total_steps=600, log_every=20, checkpoint_every=200, keep_checkpoints=3)
  c.data = common.shapes_data(path="")

  c.model = ml_collections.ConfigDict(common.resnet())
  c.head = ml_collections.ConfigDict(dict(hidden_dim=256, out_dim=64, num_layers=2))
  c.loss = ml_collections.ConfigDict(dict(name="nt_xent", temperature=0.2))
  c.augment = ml_collections.ConfigDict(
    dict(crop_scale=(0.5, 1.0), flip_prob=0.5, jitter_strength=0.5, jitter_prob=0.8, grayscale_prob=0.2, hue_range=0.5)
  )  # flat-coloured shapes: a full hue turn so colour cannot identify an image
  c.optimizer = ml_collections.ConfigDict(
    dict(
      name="adamw",
      base_lr=5e-3,
      scale_by_batch=False,
      batch_size=c.get_ref("batch_size"),
      weight_decay=1e-4,
      momentum=0.9,
      warmup_steps=50,
      schedule="cosine",
      grad_clip_norm=0.0,
    )
  )

  c.eval = common.probe_eval()
  c.export = ml_collections.ConfigDict(dict(enabled=True, saved_model=True))

  if "cifar10" in args:  # ../shared/data/cifar10.npz by default; set --config.data.path for another copy
    c.data.name = "cifar10_npz"
    c.data.mean, c.data.std = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
    c.augment.crop_scale = (0.08, 1.0)
    c.augment.hue_range = None  # torchvision default: 0.2 x strength
    # The torch peer's recipe (../shared/peers/simclr_cifar10_quality_torch.py): SGD 0.06 x B/256, NT-Xent t=0.5.
    c.batch_size = 256
    c.loss.temperature = 0.5
    c.optimizer.update(dict(name="sgd", base_lr=0.06, scale_by_batch=True, weight_decay=5e-4, warmup_steps=0))
  if "resnet18" in args:  # the peers' backbone and head (ResNet-18 CIFAR stem, 512-2048-128)
    # "auto": cache-blocked convolutions on CPU (ResNet-18 steps ~2x faster, benchmarks/README.md), XLA's elsewhere;
    # the tiny default ResNet gains nothing from them (0.38-0.44 vs 0.36-0.37 s per 128-image step here).
    c.model = ml_collections.ConfigDict(dict(name="resnet18_cifar", conv_impl="auto"))
    c.head.hidden_dim, c.head.out_dim = 2048, 128
  # Not common.tiny: the 4-step run that tests/conftest.py and tests/test_train.py are built on.
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    c.data.train_size, c.data.test_size = 256, 128
    c.model.width = 8
    c.head.hidden_dim, c.head.out_dim = 32, 16
    c.batch_size = 32
    c.total_steps = 4
    # SGD: Adam turns float rounding noise of an exactly-zero gradient into full +-lr steps, which would make the
    # tests' sharded-vs-single-device and resume comparisons flaky.
    c.optimizer.update(dict(name="sgd", base_lr=0.1, warmup_steps=1))
    c.log_every = 2
    c.checkpoint_every = 2
    c.eval.batch_size = 64
    c.eval.knn_k = 20
    c.eval.train_examples = 256
  return c
