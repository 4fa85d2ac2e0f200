"""The training loop, top to bottom: setup, data, model, optimizer, state, step, loop, evaluation."""
from __future__ import annotations

import functools
import json
import logging
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import input_pipeline
import methods
from train import checkpoint as ckpt_lib
from train import mesh as mesh_lib
from train import optim
from train import partition
from train.metrics import MetricWriter
from train.state import TrainState


class NonFiniteLossError(RuntimeError):
  """Raised when a step produced a NaN/Inf loss or gradient and `config.nonfinite == "stop"`."""


def create_train_state(config, method: methods.Method, tx: optax.GradientTransformation, mesh: Mesh,
                       sample_batch: dict) -> tuple[TrainState, Any]:
  """Initialises the state directly in its target shardings (shapes first, then a jitted init)."""

  def init(rng):
    init_rng, state_rng = jax.random.split(rng)
    params, model_state, extra = method.init(init_rng, sample_batch)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                      opt_state=tx.init(params), rng=state_rng, extra=extra)

  rng = jax.random.PRNGKey(config.seed)
  shapes = jax.eval_shape(init, rng)
  shardings = partition.infer_shardings(shapes, mesh, rules=[tuple(r) for r in config.get("partition_rules",
                                                                                           [(".*", "replicate")])])
  state = jax.jit(init, out_shardings=shardings)(rng)
  return state, shardings


def make_train_step(method: methods.Method, tx: optax.GradientTransformation, state_shardings: Any,
                    learning_rate: optax.Schedule):
  """The jitted update: donated state in, state + scalar metrics out. Non-finite updates are never applied."""

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step)
    grad_fn = jax.value_and_grad(method.loss_fn, has_aux=True)
    (loss, (model_state, extra, metrics)), grads = grad_fn(state.params, state.model_state, state.extra, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    extra = method.after_update(params, extra, state.step)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    candidate = state.replace(step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state,
                              extra=extra)
    # A non-finite step keeps the previous state (the step counter still advances, so data order is unchanged).
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), candidate, state.replace(step=state.step + 1))
    metrics = {**metrics, "loss": loss, "grad_norm": grad_norm, "param_norm": optax.global_norm(params),
               "update_norm": optax.global_norm(updates), "learning_rate": learning_rate(state.step),
               "nonfinite": 1.0 - finite.astype(jnp.float32)}
    return new_state, metrics

  return jax.jit(train_step, donate_argnums=(0,), out_shardings=(state_shardings, None))


def prepare_workdir(workdir: str) -> str:
  """Creates the workdir; its parent must exist (a typo in the path should fail, not create a tree)."""
  workdir = os.path.abspath(workdir)
  parent = os.path.dirname(workdir)
  if not os.path.isdir(parent):
    raise FileNotFoundError(f"The parent directory of --workdir does not exist: {parent}")
  os.makedirs(workdir, exist_ok=True)
  return workdir


class _StopRequest:
  """Turns SIGTERM/SIGINT into a flag the loop checks, so it can checkpoint and exit cleanly."""

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: no handlers
        pass
    return self

  def _handle(self, signum, _frame):
    self.signal = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def restore_trained(config, workdir: str, *, devices=None):
  """Mesh, method and the latest checkpointed state of a run (for --mode=eval/export)."""
  mesh = mesh_lib.build_mesh(config.get("mesh"), devices)
  method = methods.get(config.method)(config, mesh)
  tx, _ = optim.make_optimizer(config.optimizer, config.total_steps)
  sample = next(input_pipeline.build(config.data, split="train", global_batch_size=config.batch_size,
                                     sharding=mesh_lib.batch_sharding(mesh), seed=config.seed, shuffle=False))
  state, shardings = create_train_state(config, method, tx, mesh, sample)
  checkpointer = ckpt_lib.Checkpointer(os.path.abspath(workdir), async_save=False)
  state, _ = checkpointer.restore(ckpt_lib.abstract_with_shardings(state, shardings))
  checkpointer.close()
  return mesh, method, state


def train_and_evaluate(config, workdir: str, *, devices=None, progress: bool = True, stop_at: int | None = None) -> dict:
  """Trains `config` in `workdir` (resuming from its latest checkpoint), evaluates, writes results.json.

  `stop_at` behaves like a preemption signal arriving at that step (checkpoint, then return): for tests and drills.
  """
  workdir = prepare_workdir(workdir)
  mesh = mesh_lib.build_mesh(config.get("mesh"), devices)
  mesh_lib.check_batch_size(config.batch_size, mesh)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))

  # Data: global batches sharded over the batch axes of the mesh.
  data = input_pipeline.build(config.data, split="train", global_batch_size=config.batch_size,
                              sharding=mesh_lib.batch_sharding(mesh), seed=config.seed)
  first_batch = next(data)

  # Method, optimizer, state born in its shardings.
  method = methods.get(config.method)(config, mesh)
  tx, lr = optim.make_optimizer(config.optimizer, config.total_steps)
  state, shardings = create_train_state(config, method, tx, mesh, first_batch)
  train_step = make_train_step(method, tx, shardings, lr)

  # Resume from the latest finished checkpoint (state + data position), else start from the batch already read.
  checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=config.get("keep_checkpoints", 3))
  pending = [first_batch]
  if checkpointer.latest_step() is not None:
    state, data_state = checkpointer.restore(ckpt_lib.abstract_with_shardings(state, shardings))
    data.set_state(data_state)
    pending = []
    logging.info("Resumed from step %d", int(state.step))

  writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
  start = int(state.step)
  bar = _progress(start, config.total_steps, progress)
  pending_metrics, t_last, steps_since = None, time.perf_counter(), 0
  with _StopRequest() as stop:
    for step in range(start + 1, config.total_steps + 1):
      batch = pending.pop() if pending else next(data)
      state, metrics = train_step(state, batch)
      # Check the previous step's flag while this one runs: no extra host-device sync per step.
      if pending_metrics is not None:
        _check_finite(pending_metrics, config, step - 1)
      pending_metrics = metrics
      steps_since += 1
      if step % config.log_every == 0 or step == config.total_steps:
        host = jax.device_get(metrics)
        elapsed = time.perf_counter() - t_last
        host.update(step_time_s=elapsed / steps_since, examples_per_s=steps_since * config.batch_size / elapsed)
        writer.write(step, {f"train/{k}": v for k, v in host.items()})
        bar.set_postfix(loss=f"{host['loss']:.4f}")
        t_last, steps_since = time.perf_counter(), 0
      bar.update(1)
      if stop_at is not None and step >= stop_at:
        stop.signal = "stop_at"
      if step % config.checkpoint_every == 0 or step == config.total_steps or stop.signal is not None:
        _check_finite(metrics, config, step)
        checkpointer.save(step, state, data.get_state())
      every = config.eval.get("every_steps", 0)
      if every and step % every == 0 and step != config.total_steps:
        evaluate(config, method, state, mesh, writer=writer, step=step)
      if stop.signal is not None:
        logging.warning("Stop requested (%s): checkpoint saved at step %d, exiting.", stop.signal, step)
        break
  bar.close()
  checkpointer.close()
  writer.flush()
  if stop.signal is not None:
    return {"stopped_at_step": int(state.step)}

  plot_dir = os.path.join(workdir, "plots")
  results = evaluate(config, method, state, mesh, writer=writer, step=int(state.step), plot_dir=plot_dir)
  writer.close()
  if jax.process_index() == 0:
    from evaluators import plots
    plots.plot_curves(writer.jsonl_path, plot_dir)
    results["plots"] = sorted(os.path.join(plot_dir, f) for f in os.listdir(plot_dir) if f.endswith(".png"))
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  return results


def _check_finite(metrics: dict, config, step: int) -> None:
  if float(metrics["nonfinite"]) and config.get("nonfinite", "stop") == "stop":
    raise NonFiniteLossError(
        f"Non-finite loss or gradient at step {step} (loss={float(metrics['loss'])}, "
        f"grad_norm={float(metrics['grad_norm'])}); the update was not applied and the last checkpoint is intact. "
        "Lower the learning rate, or set config.nonfinite='skip' to skip such steps.")


def _progress(start: int, total: int, enabled: bool):
  from tqdm import tqdm
  return tqdm(total=total, initial=start, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)


def embed_split(config, method: methods.Method, state: TrainState, mesh: Mesh, split: str, limit: int | None = None):
  """Features [N, D] and labels [N] of a split, computed on the mesh."""
  arrays = input_pipeline.load_split(config.data, split)
  if limit:
    arrays = {k: v[:limit] for k, v in arrays.items()}
  return _embed_images(config, method, state, mesh, arrays["image"]), arrays["label"]


def _embed_images(config, method: methods.Method, state: TrainState, mesh: Mesh, images: np.ndarray) -> np.ndarray:
  import evaluators
  embed = jax.jit(method.embed_fn)
  return evaluators.embed_arrays(lambda b: embed(state.params, state.model_state, b), {"image": images},
                                 batch_size=config.eval.batch_size, sharding=mesh_lib.batch_sharding(mesh))


def _class_names(config) -> list[str] | None:
  source = input_pipeline.sources.get_source(config.data, "test")
  names = getattr(source, "class_names", None)
  return list(names)[:config.data.num_classes] if names is not None else None


def evaluate(config, method: methods.Method, state: TrainState, mesh: Mesh, *, writer: MetricWriter | None = None,
             step: int = 0, plot_dir: str | None = None) -> dict:
  """The method's own evaluation, else kNN, linear probe and representation health on frozen test features.

  With `plot_dir`, also writes a 2-D PCA of the test features and a histogram of positive vs negative similarities.
  """
  import evaluators
  if method.evaluate is not None:
    results = {"step": step, **method.evaluate(config, state, mesh)}
  else:
    results = _evaluate_image_features(config, method, state, mesh, step, plot_dir)
  if writer is not None:
    writer.write(step, {f"eval/{k}": v for k, v in results.items() if k != "step" and np.isscalar(v)})
    writer.flush()
  return results


def _evaluate_image_features(config, method, state, mesh, step: int, plot_dir: str | None) -> dict:
  import evaluators
  from input_pipeline import augment_jax
  train_x, train_y = embed_split(config, method, state, mesh, "train", config.eval.get("train_examples"))
  test = input_pipeline.load_split(config.data, "test")
  test_x, test_y = _embed_images(config, method, state, mesh, test["image"]), test["label"]
  num_classes = config.data.num_classes
  results = {"step": step, "chance": 1.0 / num_classes}
  results["knn_accuracy"] = float(evaluators.knn_accuracy(
      train_x, train_y, test_x, test_y, k=config.eval.knn_k, temperature=config.eval.knn_temperature,
      num_classes=num_classes))
  if config.eval.linear_probe:
    probe = evaluators.linear_probe(train_x, train_y, test_x, test_y, num_classes=num_classes, seed=config.seed)
    results["linear_probe_accuracy"] = float(probe["accuracy"])
    results["linear_probe_best_lr"] = float(probe["best_lr"])
  # Health of the representation: positives are two augmentations of one test image.
  images = test["image"][:config.eval.get("health_examples", 1024)]
  views = [np.asarray(jax.jit(functools.partial(augment_jax.simclr_augment, **config.augment.to_dict()))(
      jax.random.PRNGKey(config.seed + v), images)) for v in range(2)]
  z1, z2 = (np.asarray(evaluators.l2_normalize(_embed_images(config, method, state, mesh, v))) for v in views)
  results["alignment"] = float(evaluators.alignment(z1, z2))
  results["uniformity"] = float(evaluators.uniformity(z1))
  results["effective_rank"] = float(evaluators.effective_rank(test_x))
  if plot_dir:
    from evaluators import plots
    os.makedirs(plot_dir, exist_ok=True)
    plots.plot_embeddings_2d(test_x, test_y, _class_names(config), os.path.join(plot_dir, "embeddings_2d.png"))
    plots.plot_similarity_histogram(z1, z2, os.path.join(plot_dir, "similarities.png"))
  return results
