"""Zero-shot class embeddings from prompts, and accuracy; the evaluator registry."""

import numpy as np
import pytest

import evaluators
from evaluators import class_embeddings, prompt_embeddings, zero_shot_accuracy

_VECTORS = {
  "a cat": [2.0, 0.0, 0.0],
  "photo of cat": [0.0, 1.0, 0.0],
  "a dog": [0.0, 0.0, 5.0],
  "photo of dog": [0.0, 0.0, 1.0],
}


def _embed_text(prompts):
  return np.array([_VECTORS[p] for p in prompts])


def test_class_embeddings_average_normalised_prompts_then_renormalise():
  classes = class_embeddings(_embed_text, ["cat", "dog"], ["a {}", "photo of {}"])
  np.testing.assert_allclose(classes, [[np.sqrt(0.5), np.sqrt(0.5), 0.0], [0.0, 0.0, 1.0]], atol=1e-6)


def test_zero_shot_accuracy_picks_the_most_similar_class():
  classes = class_embeddings(_embed_text, ["cat", "dog"], ["a {}", "photo of {}"])
  images = np.array([[1.0, 1.0, 0.1], [0.2, 0.0, 3.0], [0.0, 0.1, 1.0], [1.0, 0.0, 0.9]])
  # Dot products with cat (.71, .71, 0) / dog (0, 0, 1), before dividing by the image norm:
  # image 0: 1.41 / .1 -> cat; 1: .14 / 3 -> dog; 2: .07 / 1 -> dog; 3: .71 / .9 -> dog (labelled cat: the one miss).
  assert zero_shot_accuracy(images, np.array([0, 1, 1, 0]), classes) == 0.75


def test_nearest_prompt_zero_shot_scores_each_class_by_its_best_prompt():
  prompts = prompt_embeddings(_embed_text, ["cat", "dog"], ["a {}", "photo of {}"])
  assert prompts.shape == (2, 2, 3)
  # Image 3 (1, 0, .9) is nearest to "a cat" (1, 0, 0): cos .74 vs "a dog" / "photo of dog" (0, 0, 1): .67, so the
  # nearest prompt gets it right where the mean of cat's prompts (.71, .71, 0) lost to dog.
  images = np.array([[1.0, 1.0, 0.1], [0.2, 0.0, 3.0], [0.0, 0.1, 1.0], [1.0, 0.0, 0.9]])
  assert zero_shot_accuracy(images, np.array([0, 1, 1, 0]), prompts) == 1.0
  np.testing.assert_allclose(
    class_embeddings(_embed_text, ["cat", "dog"], ["a {}", "photo of {}"]),
    prompts.mean(axis=1) / np.linalg.norm(prompts.mean(axis=1), axis=-1, keepdims=True),
  )


def test_registry_builds_each_configured_evaluation_by_type_and_names_unknown_types():
  from configs import default
  from parallel import mesh as mesh_lib

  config = default.get_config()
  config.evals = {name: default.eval_config(kind) for name, kind in (("a", "knn"), ("b", "zero_shot"))}
  evals = evaluators.build(config, mesh_lib.build_mesh())
  assert {n: type(e).__module__ for n, e in evals.items()} == {"a": "evaluators.knn", "b": "evaluators.zero_shot"}
  assert evaluators.TYPES == default.EVAL_TYPES
  config.evals.a.type = "nope"
  with pytest.raises(ValueError, match="config.evals.a.type='nope' is not an evaluator; known: knn, linear_probe"):
    evaluators.build(config, mesh_lib.build_mesh())
