"""SimCLR on the embedded procedural "shapes" dataset: the default of `make run` (a few CPU minutes), and the objectives
that train on SimCLR's views (methods/simclr.py).

python main.py --config=configs/simclr_shapes.py --workdir=workdirs/simclr
python main.py --config=configs/simclr_shapes.py:tiny --workdir=/tmp/w     # seconds, for tests
python main.py --config=configs/simclr_shapes.py:cifar10,resnet18 --workdir=w  # real CIFAR-10 (../shared/data), ResNet-18
python main.py --config=configs/simclr_shapes.py --config.batch_size=512 --config.total_steps=1000 ...
python main.py --config=configs/simclr_shapes.py:multiview --workdir=w      # MV-InfoNCE, 4 views (--config.simclr.num_views)
python main.py --config=configs/simclr_shapes.py:isogclr --workdir=w        # per-example learned temperatures
python main.py --config=configs/simclr_shapes.py:dclw --workdir=w           # DCLW (= --config.loss.name=dclw)
python main.py --config=configs/simclr_shapes.py:barlow_twins --workdir=w   # Barlow Twins (its projector, LARS)
python main.py --config=configs/simclr_shapes.py:vicreg --workdir=w         # VICReg (its projector, LARS)

Arguments (comma separated): tiny, cifar10, resnet18, and at most one objective: multiview, isogclr, dclw,
barlow_twins, vicreg. `tiny` of plain SimCLR is the 4-step run tests/conftest.py and tests/test_train.py are built on;
with an objective it is the 20-step run of the other recipes (common.tiny). DCL / DCLW take NT-Xent's temperature
(`--config.loss.name=dcl` works on any variant); Barlow Twins and VICReg take other loss keys, so they are arguments
(the loss block is replaced as a whole; `--config.loss.name=barlow_twins` alone stops on config.loss.temperature).
"""

import ml_collections

from configs import common, default

OBJECTIVES = ("multiview", "isogclr", "dclw", "barlow_twins", "vicreg")


def _objective(c: ml_collections.ConfigDict, objective: str) -> None:
  """The loss, views and (for redundancy reduction) projector and optimizer of an objective on SimCLR's views."""
  if objective == "multiview":  # Koromilas et al. 2025: all view pairs of a sample in one InfoNCE term
    c.simclr.num_views = 4
    c.loss = ml_collections.ConfigDict(dict(name="mv_info_nce", temperature=c.loss.temperature))
  elif objective == "dclw":  # Yeh et al. 2022: no positive in the denominator, vMF-weighted positives
    c.loss = ml_collections.ConfigDict(dict(name="dclw", temperature=c.loss.temperature, sigma=0.5))
  elif objective == "isogclr":  # Qiu et al. 2023; LibAUC's unimodal defaults (rho 0.3, gamma 0.9)
    tau0 = c.loss.temperature
    c.loss = ml_collections.ConfigDict(dict(name="isogclr", gamma=0.9, rho=0.3))
    c.isogclr = default.isogclr()
    c.isogclr.tau_init = tau0  # every example starts at the recipe's fixed temperature: only learning them differs
    c.data.with_index = True
    if c.optimizer.name == "sgd":  # the robust loss's encoder gradient is tau x NT-Xent's; SGD is not scale-free
      c.optimizer.base_lr /= tau0
  else:
    # The papers' projectors (3 layers of 8192, BN + ReLU) at the width of this encoder's features, and their
    # optimizer: LARS at 0.2 x B / 256 with 10 warm-up epochs (here 10% of the steps); decay 1.5e-6 / 1e-6.
    c.head.update(dict(hidden_dim=1024, out_dim=1024, num_layers=3))
    c.optimizer.update(
      dict(name="lars", base_lr=0.2, scale_by_batch=True, momentum=0.9, warmup_steps=c.total_steps // 10)
    )
    if objective == "barlow_twins":  # Zbontar et al. 2021: lambda = 0.0051
      c.loss = ml_collections.ConfigDict(dict(name="barlow_twins", lambda_param=0.0051))
      c.optimizer.weight_decay = 1.5e-6
    else:  # Bardes et al. 2022: lambda = mu = 25, nu = 1
      c.loss = ml_collections.ConfigDict(dict(name="vicreg", lambda_param=25.0, mu_param=25.0, nu_param=1.0))
      c.optimizer.weight_decay = 1e-6


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "cifar10", "resnet18") + OBJECTIVES)
  objectives = [a for a in OBJECTIVES if a in args]
  if len(objectives) > 1:
    raise ValueError(f"simclr_shapes takes one objective, got {objectives}.")
  c = common.resnet_with_head("simclr", batch_size=128)
  c.simclr = default.simclr()
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
    # The npz holds each split sorted by class: probe against the whole train split, not its first rows.
    c.evals.knn.train_examples = c.evals.linear_probe.train_examples = 0
  if "resnet18" in args:  # the peers' backbone and head (ResNet-18 CIFAR stem, 512-2048-128)
    # "auto": cache-blocked and Winograd convolutions on CPU (ResNet-18 steps: blocked ~2x XLA's, Winograd 1.4x the
    # blocked ones; benchmarks/README.md), XLA's elsewhere.
    c.model = ml_collections.ConfigDict(dict(name="resnet18_cifar", conv_impl="auto", dtype="float32", remat=False))
    c.head.update(hidden_dim=2048, out_dim=128)
  for objective in objectives:
    _objective(c, objective)
  if "tiny" in args and objectives:  # seconds on CPU: the 20-step run of tests/test_recipes.py
    common.tiny(c, adamw=True)
    c.model.update(common.resnet((1,), width=8))
    # Redundancy reduction decorrelates the projector's features: with 16 of them there is little to reduce.
    width = 64 if {"barlow_twins", "vicreg"} & args else 16
    c.head.update(dict(hidden_dim=width, out_dim=width))
    if "multiview" in args:
      c.simclr.num_views = 3
  elif "tiny" in args:  # Not common.tiny: the 4-step run that tests/conftest.py and tests/test_train.py are built on.
    c.data.update(train_size=256, test_size=128)
    c.model.update(width=8, conv_impl="xla")  # XLA's convolutions compile faster
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
