"""Zero-shot class embeddings from prompts, and accuracy; the evaluator registry."""
import numpy as np
import pytest

import evaluators
from evaluators import class_embeddings, zero_shot_accuracy

_VECTORS = {"a cat": [2.0, 0.0, 0.0], "photo of cat": [0.0, 1.0, 0.0],
            "a dog": [0.0, 0.0, 5.0], "photo of dog": [0.0, 0.0, 1.0]}


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


def test_registry_returns_evaluators_by_name():
    assert evaluators.get("knn") is evaluators.knn_accuracy
    assert evaluators.get("sts") is evaluators.sts_spearman
    with pytest.raises(KeyError, match="linear_probe"):
        evaluators.get("nope")
