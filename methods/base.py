"""What every method provides to the trainer, and the pieces methods share."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from train import mesh as mesh_lib

# (rng, sample_batch) -> (params, model_state, extra)
InitFn = Callable[[jax.Array, dict], tuple[Any, Any, Any]]
# (params, model_state, extra, batch, rng) -> (loss, (new_model_state, new_extra, metrics))
LossFn = Callable[..., tuple[jax.Array, tuple[Any, Any, dict]]]
# (params, model_state, batch) -> [B, D] features used by the evaluators and the exported encoder
EmbedFn = Callable[[Any, Any, dict], jax.Array]


@dataclasses.dataclass(frozen=True)
class Method:
  init: InitFn
  loss_fn: LossFn
  embed_fn: EmbedFn
  # Called after each optimizer update, e.g. for EMA encoders: (params, extra, step) -> extra.
  after_update: Callable[[Any, Any, jax.Array], Any] = lambda params, extra, step: extra
  # Method-specific evaluation (zero-shot, retrieval, STS, ...): (config, state, mesh) -> metrics dict. When None the
  # trainer runs kNN + linear probe on `embed_fn` features of the image test split.
  evaluate: Callable[[Any, Any, Any], dict] | None = None


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
