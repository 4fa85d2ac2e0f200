"""Evaluators of frozen embeddings, each a small pure numpy/jax function, looked up by name with `get`."""

from collections.abc import Callable

from evaluators.embed import embed_arrays
from evaluators.health import alignment, effective_rank, l2_normalize, positive_negative_similarities, uniformity
from evaluators.knn import knn_accuracy
from evaluators.linear_probe import linear_probe
from evaluators.retrieval import retrieval_recall
from evaluators.sts import load_sts_tsv, sts_spearman
from evaluators.zero_shot import class_embeddings, prompt_embeddings, zero_shot_accuracy

__all__ = [
  "alignment",
  "class_embeddings",
  "effective_rank",
  "embed_arrays",
  "get",
  "knn_accuracy",
  "l2_normalize",
  "linear_probe",
  "load_sts_tsv",
  "positive_negative_similarities",
  "prompt_embeddings",
  "retrieval_recall",
  "sts_spearman",
  "uniformity",
  "zero_shot_accuracy",
]

_REGISTRY: dict[str, Callable] = {
  "knn": knn_accuracy,
  "linear_probe": linear_probe,
  "zero_shot": zero_shot_accuracy,
  "retrieval": retrieval_recall,
  "sts": sts_spearman,
}


def get(name: str) -> Callable:
  """The evaluator registered as `name`: one of knn, linear_probe, zero_shot, retrieval, sts."""
  if name not in _REGISTRY:
    raise KeyError(f"unknown evaluator {name!r}; known: {sorted(_REGISTRY)}")
  return _REGISTRY[name]
