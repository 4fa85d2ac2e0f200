"""One setup for training, evaluation, export and the tests: mesh, data, method, optimizer, state and evaluations.

run = setup.build(config)                  # fresh state, born in its shardings
run = setup.build(config, abstract=True)   # shapes and shardings only, to restore a checkpoint into
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import optax

import evaluators
import input_pipeline
import methods
from methods import pretrained
from parallel import mesh as mesh_lib
from train import optim
from train import step as step_lib
from train.state import TrainState


@dataclasses.dataclass
class Run:
  config: Any
  mesh: jax.sharding.Mesh
  data: input_pipeline.BatchIterator
  first_batch: dict
  method: methods.Method
  tx: optax.GradientTransformation
  learning_rate: optax.Schedule
  state: TrainState  # concrete, or ShapeDtypeStructs with abstract=True
  shardings: Any
  evals: dict  # {name: evaluators.<type>.Evaluator}
  jitted_predict: dict = dataclasses.field(default_factory=dict)  # jax.jit of each predict function, made once

  def predict_fns(self, state: TrainState) -> dict:
    """The method's predict functions bound to `state` (its EMA params with config.eval_ema)."""
    state = evaluation_state(self.config, state)
    if not self.jitted_predict:
      self.jitted_predict.update({name: jit_predict(fn) for name, fn in self.method.predict_fns.items()})
    return {
      name: (lambda batch, fn=fn, **options: fn(state.params, state.model_state, batch, **options))
      for name, fn in self.jitted_predict.items()
    }


def jit_predict(fn: Callable) -> Callable:
  """jax.jit of a predict function; its keyword-only options (e.g. decode_contrastive's top_k) are static."""
  options = [p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY]
  return jax.jit(fn, static_argnames=options)


def evaluation_state(config, state: TrainState) -> TrainState:
  """The state to evaluate and export: params replaced by their EMA when config.eval_ema and the run keeps one."""
  if config.eval_ema and state.ema_params is not None:
    return state.replace(params=state.ema_params)
  return state


def build(config, *, devices=None, abstract: bool = False, shuffle: bool = True) -> Run:
  """Everything a run needs, in dependency order; fails at start-up on a bad batch size, data path or config.

  A whole pretrained model (config.pretrained.kind clip_hf / siglip_hf) first sets config.model and the data settings
  of `config` from its checkpoint, in place (methods/pretrained.py fill_config)."""
  pretrained.fill_config(config)
  mesh = mesh_lib.build_mesh(config.mesh, devices)
  mesh_lib.check_batch_size(config.batch_size, mesh, config.grad_accum_steps)
  # Data: global batches sharded over the batch axes of the mesh; the first one also gives the input shapes.
  data = input_pipeline.build(
    config.data,
    split="train",
    global_batch_size=config.batch_size,
    sharding=mesh_lib.batch_sharding(mesh),
    seed=config.seed,
    shuffle=shuffle,
  )
  first_batch = next(data)
  method = methods.get(config.method)(config, mesh)
  tx, lr = optim.make_optimizer(config.optimizer, config.total_steps, config.batch_size)
  if abstract:
    state, shardings = step_lib.abstract_train_state(config, method, tx, mesh, first_batch)
  else:
    state, shardings = step_lib.create_train_state(config, method, tx, mesh, first_batch)
  evals = evaluators.build(config, mesh)
  return Run(config, mesh, data, first_batch, method, tx, lr, state, shardings, evals)
