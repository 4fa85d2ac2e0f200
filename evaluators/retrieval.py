"""Image <-> text retrieval recall@K (the CLIP / COCO / Flickr30k protocol)."""

from collections.abc import Sequence

import numpy as np

from evaluators import common

from evaluators.health import l2_normalize


def retrieval_recall(
  image_emb: np.ndarray,
  text_emb: np.ndarray,
  ks: Sequence[int] = (1, 5, 10),
  *,
  text_to_image: np.ndarray | None = None,
  chunk_size: int = 1024,
) -> dict[str, float]:
  """Fraction of queries whose match is among the K most cosine-similar candidates, both directions.

  image -> text: a hit when any caption of the image is in the top K texts.
  text -> image: a hit when the caption's image is in the top K images.
  The rank of a match is the number of candidates scored strictly higher, so ties count in the query's favour.

  Args:
    image_emb: [N, D]; text_emb: [T, D].
    ks: the K values.
    text_to_image: [T] image index of each caption; None means T == N and caption i belongs to image i.
    chunk_size: query rows scored at a time; memory is O(chunk_size x max(N, T)).

  Returns:
    {"i2t_r@K": ..., "t2i_r@K": ...} for each K, fractions in [0, 1].
  """
  images, texts = np.asarray(l2_normalize(image_emb)), np.asarray(l2_normalize(text_emb))
  if text_to_image is None:
    if len(images) != len(texts):
      raise ValueError(f"{len(images)} images and {len(texts)} texts: pass text_to_image to pair them")
    text_to_image = np.arange(len(texts))
  text_to_image = np.asarray(text_to_image)
  if len(text_to_image) != len(texts) or not np.array_equal(np.unique(text_to_image), np.arange(len(images))):
    raise ValueError("text_to_image must give one image index per text, and every image needs a caption")

  i2t_rank = np.empty(len(images), np.int64)
  for start in range(0, len(images), chunk_size):
    sims = images[start : start + chunk_size] @ texts.T
    own = text_to_image[None, :] == np.arange(start, start + len(sims))[:, None]
    best_own = np.where(own, sims, -np.inf).max(axis=1)
    i2t_rank[start : start + len(sims)] = (sims > best_own[:, None]).sum(axis=1)

  t2i_rank = np.empty(len(texts), np.int64)
  for start in range(0, len(texts), chunk_size):
    sims = texts[start : start + chunk_size] @ images.T
    match = sims[np.arange(len(sims)), text_to_image[start : start + len(sims)]]
    t2i_rank[start : start + len(sims)] = (sims > match[:, None]).sum(axis=1)

  recalls = {}
  for direction, ranks in (("i2t", i2t_rank), ("t2i", t2i_rank)):
    for k in ks:
      recalls[f"{direction}_r@{k}"] = float(np.mean(ranks < k))
  return recalls


class Evaluator(common.Base):
  """Image <-> text recall@K (`i2t_r@K`, `t2i_r@K`) over the image-caption pairs of `split`."""

  def run(self, predict_fns, plot_dir=None) -> dict[str, float]:
    kw = dict(examples=self.cfg.examples, keep=())
    images, _ = common.embed_split(self, predict_fns, self.cfg.split, predict="embed_image", **kw)
    texts, _ = common.embed_split(self, predict_fns, self.cfg.split, predict="embed_text", **kw)
    return retrieval_recall(images, texts, ks=tuple(self.cfg.ks))
