"""Representation health metrics: alignment, uniformity, effective rank, positive/negative similarities.

All take embeddings as [N, D] arrays, L2-normalise rows where the definition asks for unit vectors, and are pure jnp,
so they can run inside a jitted train step as well as on host arrays.
"""

import functools

import jax
import jax.numpy as jnp

from evaluators import common
from losses import l2_normalize


def alignment(z1: jax.Array, z2: jax.Array, alpha: float = 2) -> jax.Array:
  """E ||f(x) - f(y)||^alpha over positive pairs (row i of z1, row i of z2); Wang & Isola 2020. Lower is better."""
  return jnp.mean(jnp.linalg.norm(l2_normalize(z1) - l2_normalize(z2), axis=-1) ** alpha)


def uniformity(z: jax.Array, t: float = 2) -> jax.Array:
  """log E_{i<j} exp(-t ||f(x_i) - f(x_j)||^2); Wang & Isola 2020. Lower (more negative) is more uniform.

  [N, D] -> scalar; forms the N x N Gram matrix, so keep N to a batch or a few thousand rows.
  """
  z = l2_normalize(z)
  n = z.shape[0]
  sq_dists = jnp.maximum(2.0 - 2.0 * jnp.matmul(z, z.T, precision="highest"), 0.0)
  upper = jnp.arange(n)[:, None] < jnp.arange(n)[None, :]
  return jax.nn.logsumexp(jnp.where(upper, -t * sq_dists, -jnp.inf)) - jnp.log(n * (n - 1) / 2)


def effective_rank(z: jax.Array) -> jax.Array:
  """exp(H(p)) with p the singular values of z divided by their sum; Roy & Vetterli 2007 (RankMe uses it too).

  [N, D] -> scalar in [1, min(N, D)]; equals the rank when the non-zero singular values are equal.
  """
  s = jnp.linalg.svd(jnp.asarray(z, jnp.float32), compute_uv=False)
  p = s / jnp.sum(s)
  return jnp.exp(jnp.sum(jax.scipy.special.entr(p)))


def positive_negative_similarities(z1: jax.Array, z2: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Cosine similarities of positive pairs (z1[i], z2[i]) -> [N] and of all other pairs (z1[i], z2[j]) -> [N(N-1)]."""
  sims = jnp.matmul(l2_normalize(z1), l2_normalize(z2).T, precision="highest")
  n = sims.shape[0]
  # Dropping the first element of the flattened matrix puts each diagonal entry at the end of a row of n + 1.
  off_diagonal = sims.reshape(-1)[1:].reshape(n - 1, n + 1)[:, :-1].reshape(-1)
  return jnp.diagonal(sims), off_diagonal


class Evaluator(common.Base):
  """`effective_rank` of the features of `examples` rows of `split`; for image data also `alignment` and
  `uniformity` of two augmented views of each image (the run's augment settings, else SimCLR's); with a plot_dir
  (the final evaluation) a 2-D PCA of the features by class and a histogram of positive vs negative similarities."""

  def run(self, predict_fns, plot_dir=None) -> dict[str, float]:
    import numpy as np

    from input_pipeline import augment_jax

    keep = ("label", "image")
    features, kept = common.embed_split(self, predict_fns, self.cfg.split, examples=self.cfg.examples, keep=keep)
    results = {"effective_rank": float(effective_rank(features))}
    views = None
    if "image" in kept:
      augment = jax.jit(functools.partial(augment_jax.simclr_augment, **self.context.config.augment.to_dict()))
      fn = common.get_predict(predict_fns, "embed_image", self.name)
      embedder = common.Embedder(self.context.mesh, self.cfg.batch_size)
      views = [
        np.asarray(
          l2_normalize(embedder.chunks(fn, {"image": np.asarray(augment(jax.random.key(seed), kept["image"]))}))
        )
        for seed in (self.context.seed, self.context.seed + 1)
      ]
      results.update(alignment=float(alignment(*views)), uniformity=float(uniformity(views[0])))
    if plot_dir and self.cfg.plots:
      import os

      import input_pipeline
      from evaluators import plots

      os.makedirs(plot_dir, exist_ok=True)
      names = input_pipeline.class_names(self.data, self.cfg.split)
      if "label" in kept:
        plots.plot_embeddings_2d(features, kept["label"], names, os.path.join(plot_dir, "embeddings_2d.png"))
      if views is not None:
        plots.plot_similarity_histogram(*views, os.path.join(plot_dir, "similarities.png"))
    return results
