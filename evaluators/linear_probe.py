"""Linear probe: multinomial logistic regression on frozen, standardised embeddings."""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from evaluators import common
import optax


def _loss(params, x, y, weight_decay):
  logits = x @ params["w"] + params["b"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean() + 0.5 * weight_decay * jnp.sum(
    params["w"] ** 2
  )


def fit_linear(x, y, lr, weight_decay, key, num_classes, epochs, batch_size, loss=_loss):
  """A linear map {"w": [D, C], "b": [C]} of the last axis of x [N, ..., D] minimising loss(params, x, y, wd) over
  rows of x, y: Adam with a cosine-decayed learning rate; every epoch is one lax.scan over a fresh shuffle in full
  batches."""
  n, d = x.shape[0], x.shape[-1]
  steps_per_epoch = n // batch_size
  optimizer = optax.adam(optax.cosine_decay_schedule(lr, epochs * steps_per_epoch))
  params = {"w": jnp.zeros((d, num_classes), x.dtype), "b": jnp.zeros((num_classes,), x.dtype)}
  grad_fn = jax.grad(loss)

  def step(carry, idx):
    params, opt_state = carry
    updates, opt_state = optimizer.update(grad_fn(params, x[idx], y[idx], weight_decay), opt_state)
    return (optax.apply_updates(params, updates), opt_state), None

  def epoch(carry, epoch_key):
    order = jax.random.permutation(epoch_key, n)[: steps_per_epoch * batch_size]
    return jax.lax.scan(step, carry, order.reshape(steps_per_epoch, batch_size))

  (params, _), _ = jax.lax.scan(epoch, (params, optimizer.init(params)), jax.random.split(key, epochs))
  return params


@functools.partial(jax.jit, static_argnames=("num_classes", "epochs", "batch_size"))
def _fit(x, y, lrs, weight_decay, key, *, num_classes, epochs, batch_size):
  """[N, D], [N], [L] learning rates -> params with a leading [L]: the whole sweep is one compiled program."""
  return jax.vmap(lambda lr: fit_linear(x, y, lr, weight_decay, key, num_classes, epochs, batch_size))(lrs)


@jax.jit
def _accuracy(params, x, y):
  """Params with [L] leading -> [L] accuracies."""
  logits = jnp.einsum("nd,ldc->lnc", x, params["w"]) + params["b"][:, None]
  return jnp.mean(jnp.argmax(logits, axis=-1) == y, axis=-1)


def sweep_and_refit(
  fit: Callable,
  score: Callable,
  x: np.ndarray,
  y: np.ndarray,
  lrs: tuple[float, ...],
  order: np.ndarray,
  *,
  val_fraction: float,
  batch_size: int,
  weight_decay: float,
  keys: tuple,
  skip_single_lr: bool = False,
) -> tuple[Any, float, dict[float, float]]:
  """(probe fitted on all of x, y at the best lr, best lr, per_lr={lr: held-out score}) of a learning-rate sweep.

  The first `val_fraction` of the rows in `order` (a permutation of x's rows, at least one) are held out: every lr
  is fitted on the others and scored on them (`score(params, x, y)` -> [L], higher is better, the first best wins);
  the best is refitted on all rows. `fit(x, y, lrs [L], weight_decay, key, *,
  batch_size)` -> params with [L] leading (batch capped at the rows it gets); keys = (sweep key, refit key).
  `skip_single_lr`: one lr needs no choosing, so no held-out fit and per_lr is empty.
  """
  num_val = max(1, int(round(val_fraction * len(x))))
  val_idx, fit_idx = order[:num_val], order[num_val:]
  per_lr = {}
  if len(lrs) > 1 or not skip_single_lr:
    sweep = fit(
      x[fit_idx],
      y[fit_idx],
      jnp.asarray(lrs, jnp.float32),
      weight_decay,
      keys[0],
      batch_size=min(batch_size, len(fit_idx)),
    )
    per_lr = {float(lr): float(s) for lr, s in zip(lrs, np.asarray(score(sweep, x[val_idx], y[val_idx])))}
  best_lr = max(per_lr, key=per_lr.get) if per_lr else float(lrs[0])
  final = fit(x, y, jnp.asarray([best_lr], jnp.float32), weight_decay, keys[1], batch_size=min(batch_size, len(x)))
  return final, best_lr, per_lr


def linear_probe(
  train_emb: np.ndarray,
  train_labels: np.ndarray,
  test_emb: np.ndarray,
  test_labels: np.ndarray,
  *,
  num_classes: int,
  lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
  epochs: int = 30,
  batch_size: int = 256,
  weight_decay: float = 1e-4,
  val_fraction: float = 0.1,
  seed: int = 0,
) -> dict:
  """Test accuracy of logistic regression on frozen features, its learning rate chosen on held-out train rows.

  Features are standardised with the train set's mean and std. Every lr in `lrs` is fitted on the train set minus a
  random `val_fraction` slice and scored on that slice; the best (first on ties) is refitted on the whole train set.
  Loss: softmax cross-entropy + weight_decay / 2 * ||W||^2. The test set is used once, for the reported accuracy.

  Args:
    train_emb: [N, D]; train_labels: [N] ints in [0, num_classes); test_emb: [M, D]; test_labels: [M].

  Returns:
    dict(accuracy=test accuracy, best_lr=the chosen lr, per_lr={lr: held-out accuracy}).
  """
  train_emb, test_emb = np.asarray(train_emb, np.float32), np.asarray(test_emb, np.float32)
  train_labels, test_labels = np.asarray(train_labels, np.int32), np.asarray(test_labels, np.int32)
  mean, std = train_emb.mean(axis=0), train_emb.std(axis=0) + 1e-6
  x_train, x_test = (train_emb - mean) / std, (test_emb - mean) / std
  fit_key, final_key, split_key = jax.random.split(jax.random.key(seed), 3)

  order = np.asarray(jax.random.permutation(split_key, len(x_train)))
  final, best_lr, per_lr = sweep_and_refit(
    functools.partial(_fit, num_classes=num_classes, epochs=epochs),
    _accuracy,
    x_train,
    train_labels,
    lrs,
    order,
    val_fraction=val_fraction,
    batch_size=batch_size,
    weight_decay=weight_decay,
    keys=(fit_key, final_key),
  )
  accuracy = float(_accuracy(final, x_test, test_labels)[0])
  return dict(accuracy=accuracy, best_lr=best_lr, per_lr=per_lr)


class Evaluator(common.Base):
  """`linear_probe_top1` of `split` after fitting on `train_split` features (lr chosen on a held-out train slice)."""

  def run(self, predict_fns, plot_dir=None) -> dict[str, float]:
    train, test = common.labelled_features(self, predict_fns)
    probe = linear_probe(
      *train,
      *test,
      num_classes=self.data.num_classes,
      lrs=tuple(self.cfg.lrs),
      epochs=self.cfg.epochs,
      weight_decay=self.cfg.weight_decay,
      seed=self.context.seed,
    )
    return {"linear_probe_top1": float(probe["accuracy"]), "best_lr": float(probe["best_lr"])}
