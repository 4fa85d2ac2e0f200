"""Captions decoded from images by a captioning head (CoCa-style hybrids): agreement with the data's captions."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

import input_pipeline
from evaluators import common


def repeated_ngram_rate(captions: Sequence[str], n: int = 2) -> float:
  """Fraction of word n-grams that repeat an earlier n-gram of the same caption (0 = no repetition)."""
  repeated = total = 0
  for caption in captions:
    words = caption.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    repeated += len(grams) - len(set(grams))
    total += len(grams)
  return repeated / total if total else 0.0


# The evaluation options each decoding strategy's predict function takes (keyword-only, static).
DECODE_OPTIONS = {"greedy": (), "contrastive": ("top_k", "alpha")}


class Evaluator(common.Base):
  """Captions of `examples` images of `split` decoded by the method's `decode_<decode>` predict function (with the
  strategy's DECODE_OPTIONS, e.g. contrastive search's top_k and alpha): `caption_exact_match` with the data's
  caption, `caption_names_class` (the class name appears in it) and `repeated_bigram_rate`."""

  def run(self, predict_fns, plot_dir=None) -> dict[str, float]:
    predict = self.cfg.predict or f"decode_{self.cfg.decode}"
    options = {key: self.cfg[key] for key in DECODE_OPTIONS.get(self.cfg.decode, ())}
    decode = functools.partial(common.get_predict(predict_fns, predict, self.name), **options)
    keep = ("label", "caption")
    tokens, kept = common.embed_split(
      self, {predict: decode}, self.cfg.split, examples=self.cfg.examples, keep=keep, predict=predict
    )
    captions = common.tokenizer(self.data).decode(tokens.astype(np.int32))
    results = {"repeated_bigram_rate": repeated_ngram_rate(captions)}
    if "caption" in kept:
      results["caption_exact_match"] = float(np.mean([c == t for c, t in zip(captions, kept["caption"])]))
    names = input_pipeline.class_names(self.data, self.cfg.split)
    if "label" in kept and names:
      hits = [f" {names[y]} " in f" {c} " for c, y in zip(captions, kept["label"])]
      results["caption_names_class"] = float(np.mean(hits))
    return results
