"""GraphCL on a TU graph set (MUTAG from the grakel wheel by default): random node / subgraph / edge / feature
augmentations, a GIN encoder, NT-Xent; kNN and linear probe of the frozen encoder on a held-out 20% of the graphs
(`data.seed` picks it), the randomly initialised encoder first (`at_start`) as the baseline.

    python main.py --config=configs/graph_tu.py --workdir=workdirs/graphcl_mutag
    python main.py --config=configs/graph_tu.py --config.data.path=/data/TU/PROTEINS --workdir=...   # TU files
    python main.py --config=configs/graph_tu.py --config.augment.augmentations="('drop_nodes',)" --workdir=...
    python main.py --config=configs/graph_tu.py:tiny --workdir=/tmp/w                               # seconds, for tests

Arguments (comma separated): tiny. Needs the grakel wheel (`pip install --no-deps grakel==0.1.11`) or TU files.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny",))
  c = common.base("graphcl", batch_size=64, total_steps=600, log_every=20, checkpoint_every=200)
  c.data.update(dict(name="tu", path="MUTAG", num_classes=2))

  # GraphCL's unsupervised TU setting: GIN of 3 layers, 32 wide; NT-Xent at 0.2; augmentation ratio 0.2.
  c.model.update(dict(name="gin", width=32, depth=3))
  c.head.update(dict(hidden_dim=96, out_dim=96, num_layers=2, use_bn=False))
  c.loss.update(dict(name="nt_xent", temperature=0.2))
  c.augment = ml_collections.ConfigDict(
    dict(augmentations=("drop_nodes", "subgraph", "drop_edges", "mask_features"), strength=0.2)
  )
  c.optimizer.update(dict(name="adamw", base_lr=1e-3, weight_decay=0.0, warmup_steps=20))
  common.embedding_recipe(c, args, knn_k=10, tiny_model=dict(width=16, depth=2))
  return c
