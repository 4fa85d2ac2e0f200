"""Multi-task on the embedded "shapes" dataset: SimCLR on image views + CLIP on image-caption pairs + a supervised
classifier on the labels, one shared image encoder; reports zero-shot, retrieval R@1/R@5 and classifier accuracy.

    python main.py --config=configs/multitask_shapes.py --workdir=workdirs/multitask
    python main.py --config=configs/multitask_shapes.py:align_uniform --workdir=workdirs/simclr_au
    python main.py --config=configs/multitask_shapes.py:tiny --workdir=/tmp/w            # seconds, for tests
    --config.loss.terms.classify.weight=0.0 ...                                           # re-weight an objective

Arguments (comma separated): tiny; align_uniform (SimCLR's NT-Xent plus additive alignment and uniformity terms,
Wang & Isola 2020, on the projections; no text tower or classifier).
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = set((arg or "").split(",")) - {""}
  unknown = args - {"tiny", "align_uniform"}
  if unknown:
    raise ValueError(f"Unknown config arguments {sorted(unknown)}; use tiny, align_uniform.")
  c = ml_collections.ConfigDict()
  c.method = "multitask"
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name="shapes", image_size=32, num_classes=10, train_size=20000, test_size=2000, seed=0, tokenizer="bytes",
      max_text_len=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))

  c.model = ml_collections.ConfigDict(dict(
      image=dict(name="resnet", stage_sizes=(1, 1, 1, 1), width=16, stem="cifar"),
      projection=dict(hidden_dim=256, out_dim=64, num_layers=2),
      text=dict(name="text_transformer", vocab_size=259, context_length=64, width=64, depth=2, num_heads=4,
                causal=True),
      embed_dim=64, logit_scale_init=2.6593, max_logit_scale=100.0, num_classes=10))
  c.augment = ml_collections.ConfigDict(dict(
      crop_scale=(0.2, 1.0), flip_prob=0.5, jitter_strength=0.5, jitter_prob=0.8, grayscale_prob=0.2))
  # Each term: losses.combine(name, weight, inputs = names of model outputs, kwargs = loss hyper-parameters).
  c.loss = ml_collections.ConfigDict(dict(terms=dict(
      simclr=dict(name="nt_xent", weight=1.0, inputs=("z1", "z2"), kwargs=dict(temperature=0.2)),
      clip=dict(name="clip_softmax_loss", weight=1.0, inputs=("image_emb", "text_emb", "logit_scale"),
                kwargs=dict(mode="dense")),
      classify=dict(name="token_cross_entropy", weight=0.5, inputs=("class_logits", "class_targets"),
                    kwargs=dict(label_smoothing=0.0)),
  )))

  c.batch_size = 256
  c.total_steps = 1000
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", base_lr=1e-3, b1=0.9, b2=0.98, weight_decay=0.05, warmup_steps=50, schedule="cosine",
      grad_clip_norm=1.0))
  c.nonfinite = "stop"

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 2

  c.eval = ml_collections.ConfigDict(dict(batch_size=512, test_examples=0, class_names=(), templates=()))
  c.export = ml_collections.ConfigDict(dict(enabled=True))  # the shared image encoder's pooled features

  if "align_uniform" in args:
    del c.model["text"]
    c.model.num_classes = 0
    c.data.tokenizer = ""
    c.loss.terms = dict(
        simclr=dict(name="nt_xent", weight=1.0, inputs=("z1", "z2"), kwargs=dict(temperature=0.2)),
        alignment=dict(name="alignment", weight=0.5, inputs=("z1", "z2"), kwargs=dict(alpha=2.0)),
        uniformity=dict(name="uniformity", weight=0.5, inputs=("z1",), kwargs=dict(t=2.0)))
    # Evaluated like SimCLR by the trainer: kNN, linear probe and health of the encoder features.
    c.eval = ml_collections.ConfigDict(dict(
        batch_size=512, knn_k=200, knn_temperature=0.1, linear_probe=True, train_examples=10000, every_steps=0,
        health_examples=1024))
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    c.data.update(dict(image_size=16, train_size=64, test_size=64, max_text_len=48))
    c.model.image = dict(name="resnet", stage_sizes=(1,), width=8, stem="cifar")
    c.model.projection = dict(hidden_dim=16, out_dim=16, num_layers=2)
    if "text" in c.model:
      c.model.text.update(dict(context_length=48, width=16, depth=1, num_heads=2))
    c.model.embed_dim = 16
    c.augment.update(dict(crop_scale=(0.5, 1.0), jitter_prob=0.0, grayscale_prob=0.0))
    c.batch_size = 16
    c.total_steps = 20
    c.optimizer.update(dict(base_lr=3e-3, warmup_steps=1, weight_decay=0.0))
    c.log_every = 1
    c.checkpoint_every = 10
    c.eval.batch_size = 32
    if "align_uniform" in args:
      c.eval.update(dict(knn_k=10, train_examples=64, health_examples=32))
  return c
