"""Zero-shot classification with class embeddings built from text prompts (CLIP, Radford et al. 2021)."""

import functools
import json
import os
from collections.abc import Callable, Sequence

import numpy as np

import input_pipeline
from evaluators import common

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


_PROMPT_SETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompt_sets.json")
# Sources whose classes are those of a built-in prompt set.
_DATA_PROMPT_SETS = {"cifar10_npz": "cifar10", "tfds:cifar10": "cifar10", "tfds:cifar100": "cifar100"}


@functools.cache
def prompt_sets() -> dict:
  """{"class_names": {cifar10, cifar100, imagenet}, "templates": {clip80}}: CLIP's published class names and its 80
  ImageNet prompt templates (evaluators/prompt_sets.json)."""
  with open(_PROMPT_SETS) as f:
    return json.load(f)


class Evaluator(common.Base):
  """`zero_shot_top1` with CLIP's prompt ensemble (a class is the mean of its prompt embeddings) and
  `zero_shot_nearest_prompt_top1` (a class scores its nearest prompt), on the labelled `split`.

  Class names: the `class_names` option, else the built-in `prompt_set`, else the source's; templates: the `templates`
  option, else the source's (e.g. the shapes captions' forms), else CLIP's 80.
  """

  def class_names(self) -> list[str]:
    names = list(self.cfg.class_names)
    prompt_set = self.cfg.prompt_set or _DATA_PROMPT_SETS.get(self.data.name, "")
    if not names and prompt_set:
      names = list(prompt_sets()["class_names"][prompt_set])
    names = names or list(input_pipeline.class_names(self.data, self.cfg.split) or [])
    if not names:
      raise ValueError(
        f"Zero-shot {self.name!r} needs class names: set --config.evals.{self.name}.class_names or prompt_set."
      )
    return names[: self.data.num_classes]

  def templates(self) -> list[str]:
    templates = list(self.cfg.templates) or list(input_pipeline.prompt_templates(self.data) or [])
    return templates or list(prompt_sets()["templates"]["clip80"])

  def run(self, predict_fns, plot_dir=None) -> dict[str, float]:
    names, templates = self.class_names(), self.templates()
    images, kept = common.embed_split(
      self, predict_fns, self.cfg.split, examples=self.cfg.examples, predict="embed_image"
    )
    embed_text = common.text_embedder(self, predict_fns)
    prompts = prompt_embeddings(embed_text, names, templates)
    return {
      "zero_shot_top1": zero_shot_accuracy(images, kept["label"], prompts.mean(axis=1)),
      "zero_shot_nearest_prompt_top1": zero_shot_accuracy(images, kept["label"], prompts),
      "chance": 1.0 / len(names),
    }
