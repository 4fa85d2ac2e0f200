"""What every method provides to the trainer, and the pieces methods share."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from parallel import mesh as mesh_lib

# (rng, sample_batch) -> (params, model_state, extra)
InitFn = Callable[[jax.Array, dict], tuple[Any, Any, Any]]
# (params, model_state, extra, batch, rng) -> (loss, (new_model_state, new_extra, metrics))
LossFn = Callable[..., tuple[jax.Array, tuple[Any, Any, dict]]]
# (params, model_state, batch) -> [B, D] features used by the evaluators and the exported encoder
EmbedFn = Callable[[Any, Any, dict], jax.Array]

# A method may also split its loss in three stages, so the trainer can accumulate gradients over micro-batches while
# the loss still sees the whole batch of negatives (cached-embedding accumulation, GradCache: Gao et al. 2021):
# (batch, rng) -> inputs: pytree of per-example arrays with leading dim B (e.g. augmented views); no parameters.
PrepareFn = Callable[[dict, jax.Array], Any]
# (params, model_state, inputs, rng) -> (embeddings: pytree with leading dim b, new model_state). Row i of the
# embeddings depends only on row i of the inputs (no dropout, and BatchNorm only when train-mode statistics of a
# micro-batch are acceptable), so encoding micro-batches gives the rows of the full batch's embeddings.
EncodeFn = Callable[[Any, Any, Any, jax.Array], tuple[Any, Any]]
# (params, extra, embeddings, rng) -> (loss, (new_extra, metrics)) on the whole batch's embeddings.
EmbeddingLossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, tuple[Any, dict]]]


@dataclasses.dataclass(frozen=True)
class Method:
  init: InitFn
  loss_fn: LossFn
  embed_fn: EmbedFn
  # Called after each optimizer update, e.g. for EMA encoders: (params, extra, step) -> extra.
  after_update: Callable[[Any, Any, jax.Array], Any] = lambda params, extra, step: extra
  # Maps the params after each optimizer update, e.g. SwAV's prototypes back onto the unit sphere: (params, step) ->
  # params of the same structure.
  project_params: Callable[[Any, jax.Array], Any] = lambda params, step: params
  # Method-specific evaluation (zero-shot, retrieval, STS, ...): (config, state, mesh) -> metrics dict. When None the
  # trainer runs kNN + linear probe on `embed_fn` features of the image test split.
  evaluate: Callable[[Any, Any, Any], dict] | None = None
  # The three stages of `loss_fn` (see PrepareFn): all set, with loss_fn = compose_loss(...) of them, or all None.
  prepare_fn: PrepareFn | None = None
  encode_fn: EncodeFn | None = None
  embedding_loss_fn: EmbeddingLossFn | None = None
  # The text tower, for export: (params, model_state, {"caption": int32 [B, L]}) -> [B, D]; sentence encoders pass
  # their embed_fn (they have no image tower), methods without a text tower None.
  embed_text_fn: EmbedFn | None = None

  @property
  def splits_loss(self) -> bool:
    """Whether the method supports cached-embedding gradient accumulation."""
    return None not in (self.prepare_fn, self.encode_fn, self.embedding_loss_fn)


def stage_rngs(rng: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Independent keys of the prepare, encode and embedding-loss stages of one step."""
  prepare_rng, encode_rng, loss_rng = jax.random.split(rng, 3)
  return prepare_rng, encode_rng, loss_rng


def compose_loss(prepare_fn: PrepareFn, encode_fn: EncodeFn, embedding_loss_fn: EmbeddingLossFn) -> LossFn:
  """The LossFn of a method split in stages: prepare the batch, encode it whole, loss on the embeddings."""

  def loss_fn(params, model_state, extra, batch, rng):
    prepare_rng, encode_rng, loss_rng = stage_rngs(rng)
    embeddings, new_state = encode_fn(params, model_state, prepare_fn(batch, prepare_rng), encode_rng)
    value, (new_extra, metrics) = embedding_loss_fn(params, extra, embeddings, loss_rng)
    return value, (new_state, new_extra, metrics)

  return loss_fn


def on_mesh(loss: Callable[..., jax.Array], mesh: Mesh, num_inputs: int, **hyper) -> Callable[..., jax.Array]:
  """Runs a loss on each device's local shard of its `num_inputs` batch-sharded arguments.

  The loss gets `axis_name` = the batch mesh axes, so it gathers negatives itself and returns the global value on every
  device (out_specs=P()); its gradient w.r.t. the global inputs is the single-device gradient.
  """
  spec = mesh_lib.batch_spec(mesh)
  fn = functools.partial(loss, axis_name=mesh_lib.batch_axis_name(mesh), **hyper)
  return jax.shard_map(fn, mesh=mesh, in_specs=(spec,) * num_inputs, out_specs=P(), check_vma=True)


def normalize_images(images: jax.Array, mean, std) -> jax.Array:
  """uint8 [.., H, W, 3] or float in [0, 1] -> float32 standardised per channel."""
  x = images.astype(jnp.float32)
  if images.dtype == jnp.uint8:
    x = x / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
