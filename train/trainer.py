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
from methods.base import stage_rngs
import checkpointing as ckpt_lib
from parallel import mesh as mesh_lib
from train import optim
from parallel import partition
from train import perf
from train.metrics import MetricWriter
from train.state import TrainState


class NonFiniteLossError(RuntimeError):
  """Raised when a step produced a NaN/Inf loss or gradient and `config.nonfinite == "stop"`."""


def _init_fn(config, method: methods.Method, tx: optax.GradientTransformation):
  with_ema = float(config.get("ema_decay", 0.0)) > 0

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
  rules = [tuple(r) for r in config.get("partition_rules", partition.DEFAULT_RULES)]
  return shapes, partition.infer_shardings(
    shapes, mesh, rules=rules, fsdp_min_size=int(config.get("fsdp_min_size", 2**14))
  )


def create_train_state(
  config, method: methods.Method, tx: optax.GradientTransformation, mesh: Mesh, sample_batch: dict
) -> tuple[TrainState, Any]:
  """Initialises the state directly in its target shardings (shapes first, then a jitted init)."""
  _, shardings = abstract_train_state(config, method, tx, mesh, sample_batch)
  state = jax.jit(_init_fn(config, method, tx), out_shardings=shardings)(jax.random.PRNGKey(config.seed), sample_batch)
  return state, shardings


def train_step_options(config) -> dict:
  """make_train_step's keyword arguments from config: grad_accum_steps, grad_accum_mode, ema_decay."""
  return dict(
    accum_steps=int(config.get("grad_accum_steps", 1)),
    accum_mode=config.get("grad_accum_mode", "auto"),
    ema_decay=float(config.get("ema_decay", 0.0)),
  )


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
    ema_params = None if state.ema_params is None else optim.ema_update(state.ema_params, params, ema_decay)
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


def restore_trained(config, workdir: str, *, devices=None, best: bool = False):
  """Mesh, method and the latest (or `best`) checkpointed state of a run (for --mode=eval/export).

  With config.eval_ema the state's params are its EMA params.
  """
  mesh = mesh_lib.build_mesh(config.get("mesh"), devices)
  method = methods.get(config.method)(config, mesh)
  tx, _ = optim.make_optimizer(config.optimizer, config.total_steps)
  data = input_pipeline.build(
    config.data,
    split="train",
    global_batch_size=config.batch_size,
    sharding=mesh_lib.batch_sharding(mesh),
    seed=config.seed,
    shuffle=False,
  )
  sample = next(data)
  data.close()
  shapes, shardings = abstract_train_state(config, method, tx, mesh, sample)
  checkpointer = _checkpointer(config, os.path.abspath(workdir), async_save=False)
  state, _, _ = checkpointer.restore_latest(ckpt_lib.abstract_with_shardings(shapes, shardings), best=best)
  checkpointer.close()
  return mesh, method, evaluation_state(config, state)


def evaluation_state(config, state: TrainState) -> TrainState:
  """The state to evaluate and export: params replaced by their EMA when config.eval_ema and the run keeps one."""
  if config.get("eval_ema", False) and state.ema_params is not None:
    return state.replace(params=state.ema_params)
  return state


def _checkpointer(config, workdir: str, async_save: bool = True) -> ckpt_lib.Checkpointer:
  return ckpt_lib.Checkpointer(
    workdir,
    max_to_keep=config.get("keep_checkpoints", 3),
    async_save=async_save,
    best_metric=config.get("best_metric", "") or None,
    best_mode=config.get("best_mode", "max"),
  )


def host_scalars(metrics: dict) -> dict:
  """Replicated scalar metrics -> numpy, reading each from a local device (works in multi-process runs too)."""
  return {k: np.asarray(v.addressable_data(0)) for k, v in metrics.items()}


def _any_process(flag: bool) -> bool:
  """True when `flag` is set on any process (a collective: every process calls it at the same step)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils

  return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).any())


def train_and_evaluate(
  config, workdir: str, *, devices=None, progress: bool = True, stop_at: int | None = None, profile: bool = False
) -> dict:
  """Trains `config` in `workdir` (resuming from its latest checkpoint), evaluates, writes results.json.

  `stop_at` behaves like a preemption signal arriving at that step (checkpoint, then return): for tests and drills.
  `profile` traces steps config.profile_steps (first, last), by default the 3rd to 5th step of this run, into
  <workdir>/profile; config.profile_steps alone also does.
  """
  workdir = prepare_workdir(workdir)
  mesh = mesh_lib.build_mesh(config.get("mesh"), devices)
  step_options = train_step_options(config)
  mesh_lib.check_batch_size(config.batch_size, mesh, step_options["accum_steps"])
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  # Data: global batches sharded over the batch axes of the mesh.
  data = input_pipeline.build(
    config.data,
    split="train",
    global_batch_size=config.batch_size,
    sharding=mesh_lib.batch_sharding(mesh),
    seed=config.seed,
  )
  first_batch = next(data)

  # Method, optimizer, state born in its shardings.
  method = methods.get(config.method)(config, mesh)
  tx, lr = optim.make_optimizer(config.optimizer, config.total_steps)
  state, shardings = create_train_state(config, method, tx, mesh, first_batch)
  train_step = make_train_step(method, tx, shardings, lr, **step_options)

  # Resume from the latest finished checkpoint (state + data position), else start from the batch already read.
  checkpointer = _checkpointer(config, workdir)
  pending = [first_batch]
  if checkpointer.latest_step() is not None:
    state, data_state, _ = checkpointer.restore_latest(ckpt_lib.abstract_with_shardings(state, shardings))
    data.set_state(data_state)
    pending = []
    logging.info("Resumed from step %d", int(state.step))

  # Compile once, ahead of the loop: the executable reports its FLOPs and memory per device.
  writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
  start = int(state.step)
  if start == 0 and config.eval.get("at_start", False):  # a baseline to compare the final evaluation with
    evaluate(config, method, state, mesh, writer=writer, step=0)
  compiled_step = train_step.lower(state, first_batch).compile()
  step_cost = perf.compiled_stats(compiled_step)
  writer.write(start, {f"compiled/{k}": v for k, v in step_cost.items()})
  peak_flops = perf.peak_flops_per_device(config.get("peak_tflops", 0.0))
  profile_steps = tuple(config.get("profile_steps", ()) or ()) or ((start + 3, start + 5) if profile else ())
  profiler = perf.ProfileWindow(profile_steps, os.path.join(workdir, "profile"))
  sync_every = max(1, int(config.log_every))

  bar = _progress(start, config.total_steps, progress)
  pending_metrics, t_last, steps_since = None, time.perf_counter(), 0
  try:
    with _StopRequest() as stop:
      for step in range(start + 1, config.total_steps + 1):
        batch = pending.pop() if pending else next(data)
        profiler.before_step(step)
        state, metrics = compiled_step(state, batch)
        profiler.after_step(step, metrics)
        # Check the previous step's flag while this one runs: no extra host-device sync per step.
        if pending_metrics is not None:
          _check_finite(pending_metrics, config, step - 1)
        pending_metrics = metrics
        steps_since += 1
        if step % config.log_every == 0 or step == config.total_steps:
          host = host_scalars(metrics)
          elapsed = time.perf_counter() - t_last
          host.update(step_time_s=elapsed / steps_since, examples_per_s=steps_since * config.batch_size / elapsed)
          utilisation = perf.mfu(step_cost.get("flops_per_device"), host["step_time_s"], peak_flops)
          if utilisation is not None:
            host["mfu"] = utilisation
          host.update({f"memory/{k}": v for k, v in perf.device_memory().items()})
          writer.write(step, {f"train/{k}": v for k, v in host.items()})
          bar.set_postfix(loss=f"{host['loss']:.4f}")
          t_last, steps_since = time.perf_counter(), 0
        bar.update(1)
        # Every process must stop at the same step: a signal seen by one is shared at the next sync point.
        signalled = stop.signal is not None
        if jax.process_count() > 1:
          signalled = _any_process(signalled) if step % sync_every == 0 else False
        stopping = signalled or (stop_at is not None and step >= stop_at)
        if step % config.checkpoint_every == 0 or step == config.total_steps or stopping:
          _check_finite(metrics, config, step)
          checkpointer.save(step, state, data.get_state())
        every = config.eval.get("every_steps", 0)
        if every and step % every == 0 and step != config.total_steps and not stopping:
          results = evaluate(config, method, state, mesh, writer=writer, step=step)
          checkpointer.save_best(step, state, data.get_state(), results)
        if stopping:
          logging.warning("Stop requested (%s): checkpoint saved at step %d, exiting.", stop.signal or "stop_at", step)
          return {"stopped_at_step": int(state.step)}

    plot_dir = os.path.join(workdir, "plots")
    results = evaluate(config, method, state, mesh, writer=writer, step=int(state.step), plot_dir=plot_dir)
    checkpointer.save_best(int(state.step), state, data.get_state(), results)
  finally:
    # Also on errors: pending async saves finish, so the last good checkpoint is complete.
    profiler.stop()
    bar.close()
    data.close()
    checkpointer.close()
    writer.close()

  if jax.process_index() == 0:
    from evaluators import plots

    plots.plot_curves(writer.jsonl_path, plot_dir)
    results["plots"] = sorted(os.path.join(plot_dir, f) for f in os.listdir(plot_dir) if f.endswith(".png"))
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
  return results


def _check_finite(metrics: dict, config, step: int) -> None:
  host = host_scalars({k: metrics[k] for k in ("nonfinite", "loss", "grad_norm")})
  if float(host["nonfinite"]) and config.get("nonfinite", "stop") == "stop":
    raise NonFiniteLossError(
      f"Non-finite loss or gradient at step {step} (loss={float(host['loss'])}, "
      f"grad_norm={float(host['grad_norm'])}); the update was not applied and the last checkpoint is intact. "
      "Lower the learning rate, or set config.nonfinite='skip' to skip such steps."
    )


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
  return evaluators.embed_arrays(
    lambda b: embed(state.params, state.model_state, b),
    {"image": images},
    batch_size=config.eval.batch_size,
    sharding=mesh_lib.batch_sharding(mesh),
  )


def _class_names(config) -> list[str] | None:
  source = input_pipeline.sources.get_source(config.data, "test")
  names = getattr(source, "class_names", None)
  return list(names)[: config.data.num_classes] if names is not None else None


def evaluate(
  config,
  method: methods.Method,
  state: TrainState,
  mesh: Mesh,
  *,
  writer: MetricWriter | None = None,
  step: int = 0,
  plot_dir: str | None = None,
) -> dict:
  """The method's own evaluation, else kNN, linear probe and representation health on frozen test features.

  With `plot_dir`, also writes a 2-D PCA of the test features and a histogram of positive vs negative similarities.
  """
  state = evaluation_state(config, state)
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
  results["knn_accuracy"] = float(
    evaluators.knn_accuracy(
      train_x,
      train_y,
      test_x,
      test_y,
      k=config.eval.knn_k,
      temperature=config.eval.knn_temperature,
      num_classes=num_classes,
    )
  )
  if config.eval.linear_probe:
    probe = evaluators.linear_probe(train_x, train_y, test_x, test_y, num_classes=num_classes, seed=config.seed)
    results["linear_probe_accuracy"] = float(probe["accuracy"])
    results["linear_probe_best_lr"] = float(probe["best_lr"])
  # Health of the representation: positives are two augmentations of one test image.
  images = test["image"][: config.eval.get("health_examples", 1024)]
  views = [
    np.asarray(
      jax.jit(functools.partial(augment_jax.simclr_augment, **config.augment.to_dict()))(
        jax.random.PRNGKey(config.seed + v), images
      )
    )
    for v in range(2)
  ]
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
