"""Zero-shot classification with class embeddings built from text prompts (CLIP, Radford et al. 2021)."""

from collections.abc import Callable, Sequence

import numpy as np

from evaluators.health import l2_normalize


def prompt_embeddings(
  embed_text_fn: Callable[[list[str]], np.ndarray], class_names: Sequence[str], templates: Sequence[str]
) -> np.ndarray:
  """[C, T, D] L2-normalised embeddings of every class name put into every template.

  Args:
    embed_text_fn: list of T strings -> [T, D] text embeddings.
    class_names: C names, each put into every template.
    templates: format strings with one "{}", e.g. "a photo of a {}.".
  """
  return np.stack(
    [np.asarray(l2_normalize(embed_text_fn([t.format(name) for t in templates]))) for name in class_names]
  )


def class_embeddings(
  embed_text_fn: Callable[[list[str]], np.ndarray], class_names: Sequence[str], templates: Sequence[str]
) -> np.ndarray:
  """[C, D] class embeddings: per class, the mean of its L2-normalised prompt embeddings, renormalised (CLIP's
  prompt ensembling). Arguments as `prompt_embeddings`."""
  return np.asarray(l2_normalize(prompt_embeddings(embed_text_fn, class_names, templates).mean(axis=1)))


def zero_shot_accuracy(image_emb: np.ndarray, labels: np.ndarray, class_text_emb: np.ndarray) -> float:
  """Top-1 accuracy of predicting the class whose text is most similar to the image (cosine).

  Args:
    image_emb: [N, D]; labels: [N] ints in [0, C).
    class_text_emb: [C, D], one embedding per class (e.g. `class_embeddings`), or [C, T, D], T prompts per class
      (`prompt_embeddings`): then a class scores its nearest prompt, max_t cos(image, prompt[c, t]), so prompts that
      name other attributes of the scene (colours, sizes) are matched, not averaged away.
  """
  text = np.asarray(l2_normalize(class_text_emb))
  logits = np.einsum("nd,c...d->nc...", np.asarray(l2_normalize(image_emb)), text)
  if logits.ndim == 3:
    logits = logits.max(axis=-1)
  return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels)))
