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

from configs import common, default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, ("tiny", "align_uniform"))
  c = common.base("multitask", batch_size=256, total_steps=1000)
  common.shapes_data(c, max_text_len=64)

  c.model = default.multitask_model(
    common.resnet(),
    projection=dict(hidden_dim=256, out_dim=64, num_layers=2),
    text=common.text_transformer(64, causal=True),
    num_classes=10,
  )
  c.augment = default.image_augment(crop_scale=(0.2, 1.0))
  # Each term: losses.combine(name, weight, inputs = names of model outputs, kwargs = loss hyper-parameters).
  c.loss.terms = dict(
    simclr=dict(name="nt_xent", weight=1.0, inputs=("z1", "z2"), kwargs=dict(temperature=0.2)),
    clip=dict(
      name="clip_softmax_loss", weight=1.0, inputs=("image_emb", "text_emb", "logit_scale"), kwargs=dict(mode="dense")
    ),
    classify=dict(
      name="token_cross_entropy",
      weight=0.5,
      inputs=("class_logits", "class_targets"),
      kwargs=dict(label_smoothing=0.0),
    ),
  )
  c.optimizer.update(
    dict(name="adamw", base_lr=1e-3, b1=0.9, b2=0.98, weight_decay=0.05, warmup_steps=50, grad_clip_norm=1.0)
  )
  c.evals = common.image_text_evals()
  c.evals.classifier = default.eval_config("classifier")

  if "align_uniform" in args:
    c.model.text = None
    c.model.num_classes = 0
    c.data.tokenizer = ""
    c.loss.terms = dict(
      simclr=dict(name="nt_xent", weight=1.0, inputs=("z1", "z2"), kwargs=dict(temperature=0.2)),
      alignment=dict(name="alignment", weight=0.5, inputs=("z1", "z2"), kwargs=dict(alpha=2.0)),
      uniformity=dict(name="uniformity", weight=0.5, inputs=("z1",), kwargs=dict(t=2.0)),
    )
    # Evaluated like SimCLR: kNN, linear probe and health of the encoder features.
    c.evals = default.probe_evals()
  if "tiny" in args:  # seconds on CPU: tests and smoke runs
    common.tiny(c)
    c.model.image = common.resnet((1,), width=8)
    c.model.projection = dict(hidden_dim=16, out_dim=16, num_layers=2)
    if c.model.text is not None:
      c.model.text.update(common.tiny_text())
    c.model.embed_dim = 16
  return c
