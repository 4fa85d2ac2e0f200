"""The captioning evaluation's repetition measure (the one place it is defined) and its decoding options."""

import jax.numpy as jnp
import pytest

from configs import coca_shapes, default
from evaluators import captioning
from evaluators.common import Context
from parallel import mesh as mesh_lib


def test_repeated_ngram_rate_counts_repeats_of_earlier_ngrams_over_all_captions():
  captions = ["a red a red", "one blue square", "circle", ""]
  # Bigrams: (a red), (red a), (a red) -> 1 repeat of 3; (one blue), (blue square) -> 0 of 2; none in the rest.
  assert captioning.repeated_ngram_rate(captions) == pytest.approx(1 / 5)
  assert captioning.repeated_ngram_rate(captions, n=1) == pytest.approx((2 + 0 + 0) / (4 + 3 + 1))
  assert captioning.repeated_ngram_rate(["circle", ""]) == 0.0


def test_contrastive_decoding_gets_the_evaluations_top_k_and_alpha():
  config = coca_shapes.get_config("tiny")
  cfg = default.eval_config("captioning", decode="contrastive", top_k=3, alpha=0.25, examples=8, batch_size=8)
  seen = []

  def decode_contrastive(batch, *, top_k, alpha):
    seen.append((top_k, alpha))
    return jnp.zeros((batch["image"].shape[0], 4), jnp.int32)  # all padding: empty captions

  context = Context(config, mesh_lib.build_mesh(config.mesh))
  results = captioning.Evaluator("captions", cfg, context).run({"decode_contrastive": decode_contrastive})
  assert seen == [(3, 0.25)]
  assert results["caption_exact_match"] == 0.0 and results["repeated_bigram_rate"] == 0.0
