"""The train state and the jitted update: init in the target shardings, gradient accumulation, the donated step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import methods
from methods.base import stage_rngs
from parallel import mesh as mesh_lib
from parallel import partition
from train.state import TrainState


def _init_fn(config, method: methods.Method, tx: optax.GradientTransformation):
  with_ema = config.ema_decay > 0

  def init(rng, sample_batch):
    init_rng, state_rng = jax.random.split(rng)
    params, model_state, extra = method.init(init_rng, sample_batch)
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      model_state=model_state,
      opt_state=tx.init(params),
      rng=state_rng,
      extra=extra,
      ema_params=params if with_ema else None,
    )

  return init


def abstract_train_state(
  config, method: methods.Method, tx: optax.GradientTransformation, mesh: Mesh, sample_batch: dict
) -> tuple[TrainState, Any]:
  """Shapes and dtypes of the train state (jax.eval_shape: nothing is allocated) and its shardings.

  Shardings come from the regex rules `config.partition_rules` on the state's leaf paths (default: FSDP for arrays of
  at least config.fsdp_min_size elements, see partition.DEFAULT_RULES). `sample_batch` may hold ShapeDtypeStructs.
  """
  shapes = jax.eval_shape(_init_fn(config, method, tx), jax.random.PRNGKey(config.seed), sample_batch)
  rules = [tuple(r) for r in config.partition_rules]
  return shapes, partition.infer_shardings(shapes, mesh, rules=rules, fsdp_min_size=config.fsdp_min_size)


def create_train_state(
  config, method: methods.Method, tx: optax.GradientTransformation, mesh: Mesh, sample_batch: dict
) -> tuple[TrainState, Any]:
  """Initialises the state directly in its target shardings (shapes first, then a jitted init)."""
  _, shardings = abstract_train_state(config, method, tx, mesh, sample_batch)
  state = jax.jit(_init_fn(config, method, tx), out_shardings=shardings)(jax.random.PRNGKey(config.seed), sample_batch)
  return state, shardings


def train_step_options(config) -> dict:
  """make_train_step's keyword arguments from config: grad_accum_steps, grad_accum_mode, ema_decay."""
  return dict(accum_steps=config.grad_accum_steps, accum_mode=config.grad_accum_mode, ema_decay=config.ema_decay)


def split_micro_batches(tree: Any, num: int, mesh: Mesh) -> Any:
  """Leaves [B, ...] -> [num, B / num, ...]; micro-batch i holds rows i, i + num, i + 2 num, ... so that every device
  keeps its own rows (no communication) and each micro-batch is split over the batch axes like the batch."""
  sharding = NamedSharding(mesh, P(None, *mesh_lib.batch_spec(mesh)))

  def split(x):
    x = x.reshape((x.shape[0] // num, num) + x.shape[1:]).swapaxes(0, 1)
    return jax.lax.with_sharding_constraint(x, sharding)

  return jax.tree.map(split, tree)


def merge_micro_batches(tree: Any, mesh: Mesh) -> Any:
  """Inverse of split_micro_batches: leaves [num, b, ...] -> [num * b, ...] in the original row order."""
  sharding = mesh_lib.batch_sharding(mesh)
  return jax.tree.map(
    lambda x: jax.lax.with_sharding_constraint(x.swapaxes(0, 1).reshape((-1,) + x.shape[2:]), sharding), tree
  )


def resolve_accum_mode(method: methods.Method, accum_mode: str) -> str:
  """ "auto" -> "cached" when the method splits its loss into stages (see methods.base.PrepareFn), else "micro"."""
  if accum_mode not in ("auto", "cached", "micro"):
    raise ValueError(f"grad_accum_mode must be 'auto', 'cached' or 'micro', got {accum_mode!r}.")
  if accum_mode == "auto":
    return "cached" if method.splits_loss else "micro"
  if accum_mode == "cached" and not method.splits_loss:
    raise ValueError(
      "grad_accum_mode='cached' needs a method that provides prepare_fn, encode_fn and "
      "embedding_loss_fn; use 'micro' (each micro-batch's loss sees only its own negatives)."
    )
  return accum_mode


def loss_and_grads(
  method: methods.Method,
  params,
  model_state,
  extra,
  batch: dict,
  rng: jax.Array,
  *,
  mesh: Mesh,
  accum_steps: int = 1,
  accum_mode: str = "auto",
):
  """((loss, (model_state, extra, metrics)), grads) of `method.loss_fn` on `batch`, optionally in micro-batches.

  With accum_steps = k > 1 the batch runs as k micro-batches one after the other (lax.scan), so activations are held
  for one micro-batch at a time:
  - "micro": the mean over micro-batches of each one's loss and gradient: exact for losses that are means over
    examples; a contrastive loss then sees only its micro-batch's negatives.
  - "cached" (GradCache, Gao et al. 2021): encode every micro-batch without gradient, take the loss and its gradient
    w.r.t. the embeddings once on the whole batch, then re-encode each micro-batch and back-propagate its rows of that
    gradient (vjp): the full-batch gradient, with all negatives, for one extra forward pass.
  """
  if accum_steps == 1:
    return jax.value_and_grad(method.loss_fn, has_aux=True)(params, model_state, extra, batch, rng)
  steps = jnp.arange(accum_steps)
  add = lambda a, b: jax.tree.map(jnp.add, a, b)
  if resolve_accum_mode(method, accum_mode) == "micro":
    grad_fn = jax.value_and_grad(method.loss_fn, has_aux=True)

    def micro_step(carry, xs):
      grads, model_state, extra = carry
      micro, i = xs
      (loss, (model_state, extra, metrics)), g = grad_fn(params, model_state, extra, micro, jax.random.fold_in(rng, i))
      return (add(grads, g), model_state, extra), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, params)
    (grads, model_state, extra), (losses, metrics) = jax.lax.scan(
      micro_step, (zeros, model_state, extra), (split_micro_batches(batch, accum_steps, mesh), steps)
    )
    mean = lambda x: jnp.mean(x, axis=0)
    grads = jax.tree.map(lambda g: g / accum_steps, grads)
    return (mean(losses), (model_state, extra, jax.tree.map(mean, metrics))), grads

  prepare_rng, encode_rng, loss_rng = stage_rngs(rng)
  inputs = split_micro_batches(method.prepare_fn(batch, prepare_rng), accum_steps, mesh)

  def encode(p, state, micro, i):
    return method.encode_fn(p, state, micro, jax.random.fold_in(encode_rng, i))

  def forward(state, xs):
    micro, i = xs
    embeddings, state = encode(params, state, micro, i)
    return state, jax.lax.stop_gradient(embeddings)

  new_model_state, embeddings = jax.lax.scan(forward, model_state, (inputs, steps))
  loss_grad = jax.value_and_grad(method.embedding_loss_fn, argnums=(0, 2), has_aux=True)
  (loss, (extra, metrics)), (grads, embedding_grads) = loss_grad(
    params, extra, merge_micro_batches(embeddings, mesh), loss_rng
  )

  def backward(grads, xs):
    micro, g, i = xs
    # Re-encode from the step's starting model_state: train-mode outputs do not depend on running statistics.
    _, vjp = jax.vjp(lambda p: encode(p, model_state, micro, i)[0], params)
    return add(grads, vjp(g)[0]), None

  grads, _ = jax.lax.scan(backward, grads, (inputs, split_micro_batches(embedding_grads, accum_steps, mesh), steps))
  return (loss, (new_model_state, extra, metrics)), grads


def make_train_step(
  method: methods.Method,
  tx: optax.GradientTransformation,
  state_shardings: Any,
  learning_rate: optax.Schedule,
  *,
  accum_steps: int = 1,
  accum_mode: str = "auto",
  ema_decay: float = 0.0,
):
  """The jitted update: donated state in, state + scalar metrics out. Non-finite updates are never applied.

  accum_steps/accum_mode: gradient accumulation (see loss_and_grads); ema_decay > 0 updates state.ema_params (the
  state must have been created with config.ema_decay > 0).
  """
  mesh = jax.tree.leaves(state_shardings)[0].mesh
  resolve_accum_mode(method, accum_mode)  # fail before tracing

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    if (state.ema_params is not None) != (ema_decay > 0):
      raise ValueError(
        f"ema_decay={ema_decay} but the state {'has' if state.ema_params is not None else 'has no'} "
        "ema_params: create the state and the step from the same config.ema_decay."
      )
    rng = jax.random.fold_in(state.rng, state.step)
    (loss, (model_state, extra, metrics)), grads = loss_and_grads(
      method,
      state.params,
      state.model_state,
      state.extra,
      batch,
      rng,
      mesh=mesh,
      accum_steps=accum_steps,
      accum_mode=accum_mode,
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = method.project_params(optax.apply_updates(state.params, updates), state.step)
    extra = method.after_update(params, extra, state.step)
    ema_params = (
      None if state.ema_params is None else optax.incremental_update(params, state.ema_params, 1.0 - ema_decay)
    )
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    candidate = state.replace(
      step=state.step + 1,
      params=params,
      model_state=model_state,
      opt_state=opt_state,
      extra=extra,
      ema_params=ema_params,
    )
    # A non-finite step keeps the previous state (the step counter still advances, so data order is unchanged).
    new_state = jax.tree.map(
      lambda new, old: jnp.where(finite, new, old), candidate, state.replace(step=state.step + 1)
    )
    metrics = {
      **metrics,
      "loss": loss,
      "grad_norm": grad_norm,
      "param_norm": optax.global_norm(params),
      "update_norm": optax.global_norm(updates),
      "learning_rate": learning_rate(state.step),
      "nonfinite": 1.0 - finite.astype(jnp.float32),
    }
    return new_state, metrics

  return jax.jit(train_step, donate_argnums=(0,), out_shardings=(state_shardings, None))
