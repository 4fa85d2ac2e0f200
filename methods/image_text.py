"""Evaluation shared by image-text methods (CLIP, SigLIP, LiT, CoCa): zero-shot accuracy and retrieval R@K.

Zero-shot classifies each test image by its most similar class embedding (the mean of its prompts' embeddings,
CLIP's prompt ensembling); retrieval scores each test image against all test captions and vice versa.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from parallel import mesh as mesh_lib

# Prompts for class names; the shapes captions read "a small red circle on a blue background".
DEFAULT_TEMPLATES = ("a {}.", "a {} on a background.", "a photo of a {}.", "a drawing of a {}.")


def class_names(config) -> list[str]:
  """config.eval.class_names, else the embedded dataset's shape names, else a source's `class_names`."""
  import input_pipeline
  from input_pipeline import shapes

  names = list(config.eval.get("class_names", ()) or ())
  if not names and config.data.name == "shapes":
    names = list(shapes.CLASS_NAMES)
  if not names:
    names = list(getattr(input_pipeline.sources.get_source(config.data, "test"), "class_names", []) or [])
  if not names:
    raise ValueError(f"Zero-shot needs class names: set config.eval.class_names for data {config.data.name!r}.")
  return names[: config.data.num_classes]


def prompt_templates(config) -> tuple[str, ...]:
  """config.eval.templates, else the embedded dataset's caption-form prompts, else DEFAULT_TEMPLATES."""
  from input_pipeline import shapes

  templates = tuple(config.eval.get("templates", ()) or ())
  if not templates and config.data.name == "shapes":
    templates = shapes.prompt_templates()
  return templates or DEFAULT_TEMPLATES


def tokenize(config, texts) -> np.ndarray:
  """list[str] -> int32 [T, data.max_text_len] with the training tokenizer."""
  import tokenization as tokenizers

  tokenizer = tokenizers.get(config.data.tokenizer, config.data.get("tokenizer_path", ""))
  return tokenizer.encode(list(texts), config.data.get("max_text_len", 64))


def zero_shot_and_retrieval(
  config, mesh, embed_image: Callable[[dict], jax.Array], embed_text: Callable[[dict], jax.Array]
) -> dict:
  """Zero-shot top-1 accuracy (with `chance`) and image<->text R@1/R@5 on the test split.

  embed_image: {"image": uint8 [b, S, S, 3]} -> [b, D]; embed_text: {"caption": int32 [b, L]} -> [b, D]; both jitted
  once by the caller. config.eval: batch_size, optional test_examples, templates, class_names.
  """
  import evaluators
  import input_pipeline

  test = input_pipeline.load_split(config.data, "test")
  limit = config.eval.get("test_examples", 0)
  if limit:
    test = {k: v[:limit] for k, v in test.items()}
  sharding = mesh_lib.batch_sharding(mesh)

  def embed(fn, arrays):
    return evaluators.embed_arrays(fn, arrays, batch_size=config.eval.batch_size, sharding=sharding)

  image_emb = embed(embed_image, {"image": test["image"]})
  results = {}
  if "label" in test:
    names = class_names(config)
    templates = prompt_templates(config)
    prompts = evaluators.prompt_embeddings(
      lambda texts: embed(embed_text, {"caption": tokenize(config, texts)}), names, templates
    )
    # CLIP's prompt ensembling (the mean of a class's prompts), and the nearest prompt of each class.
    results["zero_shot_accuracy"] = evaluators.zero_shot_accuracy(image_emb, test["label"], prompts.mean(axis=1))
    results["zero_shot_nearest_prompt_accuracy"] = evaluators.zero_shot_accuracy(image_emb, test["label"], prompts)
    results["chance"] = 1.0 / len(names)
  if "caption" in test:
    text_emb = embed(embed_text, {"caption": tokenize(config, test["caption"])})
    results.update(evaluators.retrieval_recall(image_emb, text_emb, ks=(1, 5)))
  return results
