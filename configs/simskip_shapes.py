"""SimSkip: refine fixed embeddings with a skip-connected MLP trained contrastively; reports the same probe on the
input and on the refined embeddings.

    python main.py --config=configs/simskip_shapes.py --workdir=workdirs/simskip        # shapes, pooled-pixel inputs
    python main.py --config=configs/simskip_shapes.py:encoder --workdir=workdirs/simskip_simclr \
        --config.simskip.encoder_checkpoint=workdirs/simclr           # features of a pretrained SimCLR encoder
    python main.py --config=configs/simskip_shapes.py:sts --workdir=workdirs/simskip_sts # STS-B MiniLM embeddings
    python main.py --config=configs/simskip_shapes.py:tiny --workdir=/tmp/w              # seconds, for tests

Arguments (comma separated): tiny, sts (../shared/data/sts/stsb-{train,dev}.minilm.npy, STS Spearman on dev),
encoder (inputs = pooled features of a frozen pretrained image encoder; simskip.encoder must match that run's model).
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = set((arg or "").split(",")) - {""}
  unknown = args - {"tiny", "sts", "encoder"}
  if unknown:
    raise ValueError(f"Unknown config arguments {sorted(unknown)}; use tiny, sts, encoder.")
  c = ml_collections.ConfigDict()
  c.method = "simskip"
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name="shapes", image_size=32, num_classes=10, train_size=20000, test_size=2000, seed=0, tokenizer="",
      mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), path=""))

  # out = x + MLP(x): out_dim None keeps the input width (the skip connection needs it).
  c.model = ml_collections.ConfigDict(dict(name="mlp_encoder", hidden_dim=512, num_layers=2, use_bn=False))
  c.head = ml_collections.ConfigDict(dict(hidden_dim=256, out_dim=64, num_layers=2, use_bn=False))
  c.simskip = ml_collections.ConfigDict(dict(
      pixel_pool=8, dropout=0.1, noise=0.1, encoder_checkpoint="", encoder_checkpoint_key="backbone",
      encoder=dict(name="resnet", stage_sizes=(1, 1, 1, 1), width=16, stem="cifar")))
  c.loss = ml_collections.ConfigDict(dict(name="nt_xent", temperature=0.2))

  c.batch_size = 256
  c.total_steps = 1000
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", base_lr=3e-4, weight_decay=1e-4, warmup_steps=50, schedule="cosine", grad_clip_norm=1.0))
  c.nonfinite = "stop"

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 2

  c.eval = ml_collections.ConfigDict(dict(
      batch_size=512, knn_k=200, knn_temperature=0.1, train_examples=10000, sts_path="", sts_embeddings=""))
  c.export = ml_collections.ConfigDict(dict(enabled=False))  # input embeddings, not images

  if "encoder" in args:  # configs/simclr_shapes.py's encoder
    c.simskip.encoder_checkpoint = "workdirs/simclr"
  if "sts" in args:
    c.data.update(dict(name="embeddings", path="../shared/data/sts/stsb-{split}.minilm.npy"))
    c.eval.update(dict(sts_path="../shared/data/sts/stsb-dev.tsv",
                       sts_embeddings="../shared/data/sts/stsb-dev.minilm.npy"))
    c.batch_size = 128
    c.total_steps = 500
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    c.data.update(dict(image_size=16, train_size=64, test_size=64))
    c.simskip.update(dict(pixel_pool=4, encoder=dict(name="resnet", stage_sizes=(1,), width=8, stem="cifar")))
    c.model.hidden_dim = 16
    c.head.update(dict(hidden_dim=16, out_dim=16))
    c.batch_size = 16
    c.total_steps = 20
    c.optimizer.update(dict(base_lr=3e-3, warmup_steps=1, weight_decay=0.0))
    c.log_every = 1
    c.checkpoint_every = 10
    c.eval.update(dict(batch_size=32, knn_k=10, train_examples=64))
  return c
