"""Semantic textual similarity: Spearman correlation of cosine similarities with gold scores (SentEval, SimCSE)."""

import numpy as np

from evaluators import common


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks, ties given the mean of the ranks they span (scipy.stats.rankdata's 'average')."""
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  ends = np.cumsum(counts)
  return (ends - (counts - 1) / 2.0)[inverse]


def sts_spearman(emb1: np.ndarray, emb2: np.ndarray, scores: np.ndarray) -> float:
  """100 x Spearman's rho between cos(emb1[i], emb2[i]) and scores[i] (ties averaged, as scipy.stats.spearmanr).

  Args:
    emb1, emb2: [N, D] embeddings of the first and second sentence of each pair; scores: [N] gold similarities.
  """
  emb1, emb2 = np.asarray(emb1, np.float64), np.asarray(emb2, np.float64)
  cos = np.sum(emb1 * emb2, axis=-1) / (np.linalg.norm(emb1, axis=-1) * np.linalg.norm(emb2, axis=-1))
  return float(100.0 * np.corrcoef(_average_ranks(cos), _average_ranks(np.asarray(scores, np.float64)))[0, 1])


def load_sts_tsv(path: str) -> tuple[np.ndarray, list[str], list[str]]:
  """Reads `score<TAB>sentence1<TAB>sentence2` lines -> ([N] float32 scores, first sentences, second sentences)."""
  scores, first, second = [], [], []
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, 1):
      if not line.strip():
        continue
      fields = line.rstrip("\n").split("\t")
      if len(fields) != 3:
        raise ValueError(f"{path}:{line_number}: expected score<TAB>sentence1<TAB>sentence2, got {len(fields)} fields")
      scores.append(float(fields[0]))
      first.append(fields[1])
      second.append(fields[2])
  return np.asarray(scores, np.float32), first, second


class Evaluator(common.Base):
  """`spearman`: 100 x Spearman of cosine similarity vs the gold scores of the scored-pair TSV `path`
  (score<TAB>s1<TAB>s2), its sentences through embed_text, or, with `embeddings` (an .npy [N, 2, D] of the pairs'
  precomputed embeddings), those through embed_embedding (or the `predict` option)."""

  def run(self, predict_fns, plot_dir=None) -> dict[str, float]:
    if not self.cfg.path:
      raise ValueError(f"STS evaluation {self.name!r} needs --config.evals.{self.name}.path=<scored-pair TSV>.")
    scores, first, second = load_sts_tsv(self.cfg.path)
    if self.cfg.embeddings:
      pairs = np.load(self.cfg.embeddings).astype(np.float32)
      if len(pairs) != len(scores):
        raise ValueError(f"{self.cfg.embeddings} has {len(pairs)} pairs, {self.cfg.path} {len(scores)}.")
      fn = common.get_predict(predict_fns, self.cfg.predict or "embed_embedding", self.name)
      embedder = common.Embedder(self.context.mesh, self.cfg.batch_size)
      a, b = (embedder.chunks(fn, {"embedding": pairs[:, i]}) for i in range(2))
    else:
      embed = common.text_embedder(self, predict_fns, self.cfg.predict or "embed_text")
      a, b = embed(first), embed(second)
    return {"spearman": sts_spearman(a, b, scores)}
