"""sts_spearman equals scipy's Spearman (ties included) and reproduces MiniLM's STS-B dev score."""

import os

import numpy as np
import pytest
import scipy.stats

from evaluators import load_sts_tsv, sts_spearman

STS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "sts")


def test_equals_scipy_spearman_with_ties():
  rng = np.random.default_rng(0)
  emb1, emb2 = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
  emb1[100:150], emb2[100:150] = emb1[0], emb2[0]  # 51 tied cosines
  scores = np.round(rng.uniform(0, 5, size=300) * 2) / 2  # 11 distinct values
  cos = np.sum(emb1 * emb2, 1) / np.linalg.norm(emb1, axis=1) / np.linalg.norm(emb2, axis=1)
  expected = 100 * scipy.stats.spearmanr(cos, scores).statistic
  assert sts_spearman(emb1, emb2, scores) == pytest.approx(expected, abs=1e-9)


def test_load_sts_tsv(tmp_path):
  path = tmp_path / "pairs.tsv"
  path.write_text("5.000\ta man is dancing .\ta man dances .\n0.250\tit rains .\tcats sleep .\n\n")
  scores, first, second = load_sts_tsv(str(path))
  np.testing.assert_array_equal(scores, np.array([5.0, 0.25], np.float32))
  assert first == ["a man is dancing .", "it rains ."] and second == ["a man dances .", "cats sleep ."]


@pytest.mark.skipif(not os.path.exists(os.path.join(STS_DIR, "stsb-dev.minilm.npy")), reason="shared STS data absent")
def test_minilm_stsb_dev_spearman_is_86_72():
  scores, first, _ = load_sts_tsv(os.path.join(STS_DIR, "stsb-dev.tsv"))
  emb = np.load(os.path.join(STS_DIR, "stsb-dev.minilm.npy")).astype(np.float32)
  assert emb.shape == (len(first), 2, 384)
  assert sts_spearman(emb[:, 0], emb[:, 1], scores) == pytest.approx(86.72, abs=0.01)
