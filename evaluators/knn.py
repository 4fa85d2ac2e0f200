"""Weighted k-nearest-neighbour classification accuracy of frozen embeddings."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from evaluators import common

from evaluators.health import l2_normalize


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_predict(train_emb, train_labels, test_emb, temperature, *, k: int, num_classes: int):
  """[N, D] unit train rows, [N] labels, [b, D] test rows -> [b] predicted classes."""
  sims = jnp.matmul(l2_normalize(test_emb), train_emb.T, precision=jax.lax.Precision.HIGHEST)
  top_sims, top_idx = jax.lax.top_k(sims, k)
  rows = jnp.arange(test_emb.shape[0])[:, None]
  votes = jnp.zeros((test_emb.shape[0], num_classes), jnp.float32)
  votes = votes.at[rows, train_labels[top_idx]].add(jnp.exp(top_sims / temperature))
  return jnp.argmax(votes, axis=-1)


def knn_accuracy(
  train_emb: np.ndarray,
  train_labels: np.ndarray,
  test_emb: np.ndarray,
  test_labels: np.ndarray,
  *,
  num_classes: int,
  k: int = 200,
  temperature: float = 0.1,
  batch_size: int = 1024,
) -> float:
  """Top-1 accuracy of the weighted kNN classifier of InstDisc (Wu et al. 2018), the usual SimCLR/MoCo monitor.

  Rows are L2-normalised; each test row takes its k most cosine-similar train rows (k clamped to N_train), each of
  which votes for its class with weight exp(sim / temperature); the class with the largest total wins.

  Args:
    train_emb: [N, D]; train_labels: [N] ints in [0, num_classes).
    test_emb: [M, D]; test_labels: [M].
    batch_size: test rows per step, so memory is O(batch_size x N); the last chunk is padded (one compilation).
  """
  train = l2_normalize(jnp.asarray(train_emb, jnp.float32))
  labels = jnp.asarray(train_labels, jnp.int32)
  test = np.asarray(test_emb, np.float32)
  k = min(k, train.shape[0])
  batch_size = min(batch_size, len(test))
  predictions = []
  for start in range(0, len(test), batch_size):
    chunk = test[start : start + batch_size]
    chunk = np.pad(chunk, ((0, batch_size - len(chunk)), (0, 0)))
    predictions.append(_knn_predict(train, labels, chunk, temperature, k=k, num_classes=num_classes))
  predictions = np.concatenate(jax.device_get(predictions))[: len(test)]
  return float(np.mean(predictions == np.asarray(test_labels)))


class Evaluator(common.Base):
  """`knn_top1`: kNN accuracy of `split` features against `train_split` features (at most train_examples rows)."""

  def run(self, predict_fns, plot_dir=None) -> dict[str, float]:
    train, test = common.labelled_features(self, predict_fns)
    accuracy = knn_accuracy(
      *train, *test, k=self.cfg.k, temperature=self.cfg.temperature, num_classes=self.data.num_classes
    )
    return {"knn_top1": accuracy, "chance": 1.0 / self.data.num_classes}
