"""Dense probe: per-pixel linear segmentation on frozen feature maps, the dense counterpart of the linear probe.

A linear classifier of each feature-map pixel (the method's `embed_pixels`, [B, h, w, F]) whose logits are upsampled
bilinearly to the image (the same as classifying bilinearly upsampled features: both maps are linear), trained with
per-pixel softmax cross entropy against the shapes' masks (0 = background, 1 + class where the shape covers the
pixel; `input_pipeline.shapes.render_masks`). Features are standardised per channel with the train statistics; the
learning rate is chosen by mean IoU on held-out train images, then refitted on all of them; the test split is used
once. Metrics: pixel accuracy and mean IoU over the num_classes + 1 labels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from evaluators import common
from evaluators.linear_probe import fit_linear, sweep_and_refit
from input_pipeline import shapes

_CHUNK = 128  # images per scoring step: memory O(chunk x S^2 x K)


def _bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
  """[size_out, size_in] weights of bilinear upsampling with half-pixel centres, clamped at the edges (torch's
  align_corners=False)."""
  centres = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
  low = np.floor(centres).astype(int)
  high = np.minimum(low + 1, size_in - 1)
  frac = centres - low
  m = np.zeros((size_out, size_in), np.float32)
  np.add.at(m, (np.arange(size_out), low), 1 - frac)
  np.add.at(m, (np.arange(size_out), high), frac)
  return m


def _upsampled_logits(params, f, size: int):
  """[b, h, w, F] -> logits [b, size, size, K], bilinearly upsampled (two small matmuls)."""
  logits = f @ params["w"] + params["b"]
  rows, cols = _bilinear_matrix(f.shape[1], size), _bilinear_matrix(f.shape[2], size)
  return jnp.einsum("yh,bhwk,xw->byxk", rows, logits, cols)


def _pixel_loss(params, f, masks, weight_decay):
  logits = _upsampled_logits(params, f, masks.shape[1])
  # One-hot targets: the integer-label form's gather transposes to a scatter that XLA spends seconds constant-folding.
  ce = optax.softmax_cross_entropy(logits, jax.nn.one_hot(masks, logits.shape[-1])).mean()
  return ce + 0.5 * weight_decay * jnp.sum(params["w"] ** 2)


@functools.partial(jax.jit, static_argnames=("num_classes", "epochs", "batch_size"))
def _fit(f, masks, lrs, weight_decay, seed, *, num_classes, epochs, batch_size):
  """One probe per learning rate of lrs [L]: params with a leading [L]."""
  fit = functools.partial(fit_linear, loss=_pixel_loss)
  key = jax.random.key(seed)
  return jax.vmap(lambda lr: fit(f, masks, lr, weight_decay, key, num_classes, epochs, batch_size))(lrs)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _confusion(params, f, masks, valid, *, num_classes):
  """Params with [L] leading, a chunk of images -> [L, K, K] pixel counts (true, predicted); padded images not
  counted."""

  def one(p):
    predicted = jnp.argmax(_upsampled_logits(p, f, masks.shape[1]), axis=-1)
    weight = jnp.broadcast_to(valid[:, None, None], masks.shape).astype(jnp.float32)
    return jnp.zeros((num_classes, num_classes)).at[masks.astype(jnp.int32), predicted].add(weight)

  return jax.vmap(one)(params)


def _scores(params, f, masks, num_classes) -> tuple[np.ndarray, np.ndarray]:
  """(pixel accuracy [L], mean IoU [L]) of each probe, in chunks of _CHUNK images (padded: one compilation)."""
  confusion = 0.0
  for start in range(0, len(f), _CHUNK):
    fc, mc = f[start : start + _CHUNK], masks[start : start + _CHUNK]
    pad = _CHUNK - len(fc)
    valid = np.arange(_CHUNK) < len(fc)
    fc, mc = (np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) for a in (fc, mc))
    confusion = confusion + np.asarray(_confusion(params, fc, mc, valid, num_classes=num_classes), np.float64)
  true_positive = np.diagonal(confusion, axis1=1, axis2=2)
  union = confusion.sum(2) + confusion.sum(1) - true_positive
  present = union > 0  # classes absent from both labels and predictions do not count
  miou = np.sum(np.where(present, true_positive / np.maximum(union, 1), 0), 1) / np.maximum(present.sum(1), 1)
  return true_positive.sum(1) / confusion.sum((1, 2)), miou


def dense_linear_probe(
  train_features: np.ndarray,
  train_masks: np.ndarray,
  test_features: np.ndarray,
  test_masks: np.ndarray,
  *,
  num_classes: int,
  lrs: tuple[float, ...] = (1e-3, 1e-2, 1e-1),
  epochs: int = 20,
  batch_size: int = 64,
  weight_decay: float = 1e-4,
  val_fraction: float = 0.1,
  seed: int = 0,
) -> dict:
  """Per-pixel linear probe of feature maps [N, h, w, F] against masks int [N, S, S] in [0, num_classes).

  Returns dict(pixel_accuracy, miou (test), best_lr (by held-out mean IoU), per_lr={lr: held-out mean IoU}; empty
  for a single lr).
  """
  train_features, test_features = np.asarray(train_features, np.float32), np.asarray(test_features, np.float32)
  mean = train_features.mean(axis=(0, 1, 2))
  std = train_features.std(axis=(0, 1, 2)) + 1e-6
  x_train, x_test = (train_features - mean) / std, (test_features - mean) / std
  # Host-side randomness (NumPy): eager jax.random calls would each compile.
  order = np.random.default_rng(seed).permutation(len(x_train))
  final, best_lr, per_lr = sweep_and_refit(
    functools.partial(_fit, num_classes=num_classes, epochs=epochs),
    lambda params, f, masks: _scores(params, f, masks, num_classes)[1],  # chosen by held-out mean IoU
    x_train,
    train_masks,
    lrs,
    order,
    val_fraction=val_fraction,
    batch_size=batch_size,
    weight_decay=weight_decay,
    keys=(seed, seed + 1),
    skip_single_lr=True,
  )
  accuracy, miou = _scores(final, x_test, test_masks, num_classes)
  return dict(
    pixel_accuracy=float(accuracy[0]),
    miou=float(miou[0]),
    best_lr=best_lr,
    per_lr=per_lr,
  )


class Evaluator(common.Base):
  """`dense_probe_pixel_acc`, `dense_probe_miou`: per-pixel linear segmentation of `split` images after fitting on
  `train_split` images (at most train_examples), from the method's `embed_pixels` feature maps (or `predict`)."""

  def run(self, predict_fns, plot_dir=None) -> dict[str, float]:
    if self.data.name != "shapes":
      raise ValueError(
        f"Evaluation {self.name!r} (dense_probe) needs per-pixel labels, which the shapes source renders; "
        f"data.name is {self.data.name!r}."
      )
    train = self._features(predict_fns, self.cfg.train_split, self.cfg.train_examples)
    test = self._features(predict_fns, self.cfg.split, self.cfg.examples)
    probe = dense_linear_probe(
      *train,
      *test,
      num_classes=self.data.num_classes + 1,
      lrs=tuple(self.cfg.lrs),
      epochs=self.cfg.epochs,
      weight_decay=self.cfg.weight_decay,
      seed=self.context.seed,
    )
    return {
      "dense_probe_pixel_acc": probe["pixel_accuracy"],
      "dense_probe_miou": probe["miou"],
      "best_lr": probe["best_lr"],
    }

  def _features(self, predict_fns, split: str, examples: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature maps [N, h, w, F] of a split's first rows and their masks [N, S, S] (shapes never skips a row, so
    row k of the split is example k)."""
    fn = common.get_predict(predict_fns, self.cfg.predict or "embed_pixels", self.name)
    embedder = common.Embedder(self.context.mesh, self.cfg.batch_size)
    data, features, masks = self.data, [], []
    stream = common.batches(data, split, batch_size=embedder.batch_size, examples=examples)
    for batch in tqdm.tqdm(stream, desc=f"{self.name} {split}", unit="batch", leave=False, disable=None):
      start = sum(len(m) for m in masks)
      rows = np.arange(start, start + len(batch["image"]))
      features.append(embedder(fn, {"image": batch["image"]}).astype(np.float32))
      masks.append(shapes.render_masks(data.seed, split, rows, data.image_size, data.num_classes))
    return np.concatenate(features), np.concatenate(masks)
