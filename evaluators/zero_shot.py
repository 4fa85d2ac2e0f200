"""Zero-shot classification with class embeddings built from text prompts (CLIP, Radford et al. 2021)."""
from typing import Callable, Sequence

import numpy as np

from evaluators.health import l2_normalize


def class_embeddings(embed_text_fn: Callable[[list[str]], np.ndarray], class_names: Sequence[str],
                     templates: Sequence[str]) -> np.ndarray:
    """[C, D] class embeddings: per class, the mean of its L2-normalised prompt embeddings, renormalised.

    Args:
      embed_text_fn: list of T strings -> [T, D] text embeddings.
      class_names: C names, each put into every template.
      templates: format strings with one "{}", e.g. "a photo of a {}.".
    """
    rows = []
    for name in class_names:
        prompts = np.asarray(l2_normalize(embed_text_fn([t.format(name) for t in templates])))
        rows.append(prompts.mean(axis=0))
    return np.asarray(l2_normalize(np.stack(rows)))


def zero_shot_accuracy(image_emb: np.ndarray, labels: np.ndarray, class_text_emb: np.ndarray) -> float:
    """Top-1 accuracy of predicting argmax_c cos(image, class_text_emb[c]).

    Args:
      image_emb: [N, D]; labels: [N] ints in [0, C); class_text_emb: [C, D], e.g. from `class_embeddings`.
    """
    logits = np.asarray(l2_normalize(image_emb)) @ np.asarray(l2_normalize(class_text_emb)).T
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels)))
