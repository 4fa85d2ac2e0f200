"""Contrastive time-series representations: SimCLR's recipe on series (two views, encoder, projection, NT-Xent over the
global batch) with the views of TS-TCC (Eldele et al. 2021) or TS2Vec (Yue et al. 2022) and TS2Vec's dilated temporal
convolutional encoder (`models.get("temporal_conv")`).

Batches hold "series" float [B, T, C]. Views (config.augment: the keyword arguments of `two_views`):
- kind="tstcc": a weak view (scaling, then jitter) and a strong one (segment permutation, then jitter);
- kind="ts2vec": two crops of crop_length timestamps sharing at least min_overlap of them, each with timestamps
  zeroed with probability mask_prob. TS2Vec contrasts the shared timestamps hierarchically; here the crops' pooled
  embeddings go through config.loss like any instance-level method.
Predict function: embed_series ({"series": [B, T, C]}) -> the encoder's pooled features [B, F] (before the head),
which the kNN and linear-probe evaluators feed from a source's "series" column (input_pipeline "ucr").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from input_pipeline import views_timeseries as vts
from methods.base import Method, check_kwargs, encoder_with_head, loss_from_config, on_mesh, two_view_method

VIEW_KINDS = ("tstcc", "ts2vec")


def two_views(
  rng: jax.Array,
  series: jax.Array,
  *,
  kind: str = "tstcc",
  jitter_sigma: float = 0.8,
  scale_sigma: float = 1.1,
  max_segments: int = 5,
  crop_length: int = 0,
  min_overlap: int = 1,
  mask_prob: float = 0.5,
) -> tuple[jax.Array, jax.Array]:
  """Two views of series [B, T, C]: TS-TCC's weak / strong pair [B, T, C] (jitter, scale, segments), or TS2Vec's
  masked overlapping crops [B, crop_length, C] (crop_length 0 = T, min_overlap, mask_prob)."""
  if kind == "tstcc":
    return vts.tstcc_views(rng, series, jitter_sigma=jitter_sigma, scale_sigma=scale_sigma, max_segments=max_segments)
  k_crop, k_mask1, k_mask2 = jax.random.split(rng, 3)
  crop1, crop2, _, _ = vts.overlapping_crops(k_crop, series, crop_length or series.shape[1], min_overlap)
  return vts.time_mask(k_mask1, crop1, mask_prob), vts.time_mask(k_mask2, crop2, mask_prob)


def build(config, mesh: Mesh) -> Method:
  model = encoder_with_head(config)
  loss_fn, loss_hyper = loss_from_config(config.loss)
  loss = on_mesh(loss_fn, mesh, num_inputs=2, **loss_hyper)
  augment = check_kwargs(two_views, config.augment.to_dict(), "config.augment", "methods.timeseries.two_views")
  if augment.get("kind", "tstcc") not in VIEW_KINDS:
    raise ValueError(f"config.augment.kind={augment['kind']!r}; choose one of {', '.join(VIEW_KINDS)}.")

  def prepare_fn(batch, rng):
    """Both views of each series: [B, 2, T', C]."""
    return jnp.stack(two_views(rng, batch["series"].astype(jnp.float32), **augment), axis=1)

  return two_view_method(model, loss, ("series",), prepare_fn, "embed_series")
