"""knn_accuracy and linear_probe: separable -> ~1, random -> ~chance; kNN equal to the torch peer's formula."""

import numpy as np

from evaluators import knn_accuracy, linear_probe


def separable_embeddings(num_classes=10, per_class=100, dim=32, noise=0.1, seed=0):
  """Gaussian clusters around random unit class centres: linearly separable with a wide margin."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_classes, dim))
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  labels = np.repeat(np.arange(num_classes), per_class)
  emb = centres[labels] + noise * rng.normal(size=(len(labels), dim))
  order = rng.permutation(len(labels))
  return emb[order].astype(np.float32), labels[order]


def _peer_knn(train_emb, train_labels, test_emb, test_labels, k, t, num_classes):
  """simclr_cifar10_quality_torch.py's loop, in numpy float64."""
  train = train_emb / np.linalg.norm(train_emb, axis=1, keepdims=True)
  test = test_emb / np.linalg.norm(test_emb, axis=1, keepdims=True)
  sims = test.astype(np.float64) @ train.T.astype(np.float64)
  idx = np.argsort(-sims, axis=1)[:, :k]
  votes = np.zeros((len(test), num_classes))
  np.add.at(votes, (np.arange(len(test))[:, None], train_labels[idx]), np.exp(np.take_along_axis(sims, idx, 1) / t))
  return np.mean(votes.argmax(1) == test_labels)


def test_knn_classifies_separable_clusters_perfectly():
  emb, labels = separable_embeddings()
  assert knn_accuracy(emb[:800], labels[:800], emb[800:], labels[800:], num_classes=10, k=20) == 1.0


def test_knn_scores_chance_on_random_embeddings():
  rng = np.random.default_rng(1)
  emb, labels = rng.normal(size=(3000, 32)), rng.integers(0, 10, size=3000)
  accuracy = knn_accuracy(emb[:2000], labels[:2000], emb[2000:], labels[2000:], num_classes=10)
  assert abs(accuracy - 0.1) < 0.05


def test_knn_matches_peer_formula_with_ragged_chunks():
  emb, labels = separable_embeddings(num_classes=5, per_class=60, noise=1.0, seed=2)
  expected = _peer_knn(emb[:200], labels[:200], emb[200:], labels[200:], k=50, t=0.1, num_classes=5)
  got = knn_accuracy(emb[:200], labels[:200], emb[200:], labels[200:], num_classes=5, k=50, batch_size=32)
  assert 0.3 < got < 1.0
  assert got == expected


def test_knn_clamps_k_to_train_size():
  emb, labels = separable_embeddings(num_classes=3, per_class=10)
  assert knn_accuracy(emb[:20], labels[:20], emb[20:], labels[20:], num_classes=3, k=200) == _peer_knn(
    emb[:20], labels[:20], emb[20:], labels[20:], k=20, t=0.1, num_classes=3
  )


def test_linear_probe_classifies_separable_clusters_perfectly():
  emb, labels = separable_embeddings()
  result = linear_probe(emb[:800], labels[:800], emb[800:], labels[800:], num_classes=10, epochs=20, batch_size=64)
  assert result["accuracy"] == 1.0
  assert result["best_lr"] in result["per_lr"] and len(result["per_lr"]) == 5


def test_linear_probe_scores_chance_on_random_embeddings():
  rng = np.random.default_rng(1)
  emb, labels = rng.normal(size=(3000, 32)).astype(np.float32), rng.integers(0, 10, size=3000)
  result = linear_probe(emb[:2000], labels[:2000], emb[2000:], labels[2000:], num_classes=10, epochs=10)
  assert abs(result["accuracy"] - 0.1) < 0.05


def test_linear_probe_chooses_lr_without_test_labels():
  emb, labels = separable_embeddings(noise=1.0, seed=3)
  kwargs = dict(num_classes=10, lrs=(1e-4, 1e-2), epochs=5, batch_size=64)
  a = linear_probe(emb[:800], labels[:800], emb[800:], labels[800:], **kwargs)
  b = linear_probe(emb[:800], labels[:800], emb[800:], np.zeros_like(labels[800:]), **kwargs)
  assert a["best_lr"] == b["best_lr"] and a["per_lr"] == b["per_lr"]


def test_knn_and_linear_probe_of_one_evaluation_pass_embed_the_splits_once():
  """evaluators.run embeds the train and test rows that kNN and the linear probe share once; an evaluation with other
  row limits embeds its own; every result equals the evaluation run alone."""
  import jax.numpy as jnp

  import evaluators
  from configs import default
  from parallel import mesh as mesh_lib

  config = default.get_config()
  config.data.update(dict(name="shapes", image_size=8, train_size=96, test_size=64))
  options = dict(train_examples=64, examples=32, batch_size=32)
  config.evals = dict(
    knn=default.eval_config("knn", k=5, **options),
    linear_probe=default.eval_config("linear_probe", epochs=2, lrs=(0.1,), **options),
    knn_more=default.eval_config("knn", k=5, train_examples=96, examples=64, batch_size=32),
  )
  evals = evaluators.build(config, mesh_lib.build_mesh())
  calls = []

  def embed_image(batch):
    calls.append(len(batch["image"]))
    return jnp.mean(jnp.asarray(batch["image"], jnp.float32), axis=(1, 2))  # mean colour: [b, 3]

  together = evaluators.run(evals, {"embed_image": embed_image})
  assert len(calls) == (64 + 32) // 32 + (96 + 64) // 32  # knn + linear_probe once, knn_more once
  for name in evals:
    alone = evaluators.run(evals, {"embed_image": embed_image}, names=[name])
    assert alone == {k: v for k, v in together.items() if k.startswith(name + "/")}
