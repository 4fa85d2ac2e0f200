"""The training loop, top to bottom: setup, resume, compiled step, loop (log, checkpoint, evaluate), final evaluation.

results = trainer.train_and_evaluate(config, workdir)   # resumes from the workdir's newest readable checkpoint
results = trainer.evaluate_checkpoint(config, workdir)  # --mode=eval (an imported model needs no checkpoint)
trainer.export(config, workdir)                         # --mode=export (likewise)
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable

import jax
import numpy as np

import checkpointing as ckpt_lib
import evaluators
from configs import saved
from methods import pretrained
from train import perf
from train import setup as setup_lib
from train import step as step_lib
from train.errors import NonFiniteLossError
from train.metrics import MetricWriter

__all__ = ["NonFiniteLossError", "evaluate", "evaluate_checkpoint", "export", "train_and_evaluate"]


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

  def requested(self, step: int, sync_every: int) -> bool:
    """Whether to stop after `step`. Every process must stop at the same step: a signal seen by one is shared at the
    next sync point (every `sync_every` steps)."""
    if jax.process_count() == 1:
      return self.signal is not None
    return step % max(1, sync_every) == 0 and _any_process(self.signal is not None)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def train_and_evaluate(
  config, workdir: str, *, devices=None, progress: bool = True, stop_at: int | None = None, profile: bool = False
) -> dict:
  """Trains `config` in `workdir` (resuming from its latest checkpoint), evaluates, writes results.json.

  `stop_at` behaves like a preemption signal arriving at that step (checkpoint, then return): for tests and drills.
  `profile` traces steps config.profile_steps (first, last), by default the 3rd to 5th step of this run, into
  <workdir>/profile.
  """
  workdir = prepare_workdir(workdir)
  run = setup_lib.build(config, devices=devices)
  if jax.process_index() == 0:
    saved.save(config, workdir)
  train_step = step_lib.make_train_step(
    run.method, run.tx, run.shardings, run.learning_rate, **step_lib.train_step_options(config)
  )

  # Resume from the newest readable checkpoint (state + data position), else start from the batch already read.
  checkpointer = _checkpointer(config, workdir)
  state, pending = run.state, [run.first_batch]
  if checkpointer.latest_step() is not None:
    state, data_state, _ = checkpointer.restore_latest(ckpt_lib.abstract_with_shardings(state, run.shardings))
    run.data.set_state(data_state)
    pending = []
    logging.info("Resumed from step %d", int(state.step))

  writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
  start = int(state.step)
  if start == 0:  # baselines (evals with at_start) to compare the final evaluation with
    evaluate(run, state, 0, writer, names=evaluators.due(run.evals, 0, start=True))
  # Compile once, ahead of the loop: the executable reports its FLOPs and memory per device.
  compiled_step = train_step.lower(state, run.first_batch).compile()
  perf.release_freed_host_memory()  # what compiling freed, before the step's buffers come on top
  logger = _StepLogger(
    config, writer, perf.compiled_stats(compiled_step), start, lambda: run.data.get_state()["skipped"]
  )
  first, last = config.profile_steps
  profiler = perf.ProfileWindow(
    (first, last) if last else ((start + 3, start + 5) if profile else ()), os.path.join(workdir, "profile")
  )
  bar = _progress(start, config.total_steps, progress)
  try:
    with _StopRequest() as stop:
      pending_metrics = None
      for step in range(start + 1, config.total_steps + 1):
        batch = pending.pop() if pending else next(run.data)
        profiler.before_step(step)
        state, metrics = compiled_step(state, batch)
        profiler.after_step(step, metrics)
        # Check the previous step's flag while this one runs: no extra host-device sync per step.
        if pending_metrics is not None:
          _check_finite(pending_metrics, config, step - 1)
        pending_metrics = metrics
        logger.step(step, metrics, bar)
        stopping = stop.requested(step, config.log_every) or (stop_at is not None and step >= stop_at)
        if step % config.checkpoint_every == 0 or step == config.total_steps or stopping:
          _check_finite(metrics, config, step)
          checkpointer.save(step, state, run.data.get_state())
        if stopping:
          logging.warning("Stop requested (%s): checkpoint saved at step %d, exiting.", stop.signal or "stop_at", step)
          return {"stopped_at_step": int(state.step)}
        due = evaluators.due(run.evals, step) if step != config.total_steps else []
        if due:
          checkpointer.save_best(step, state, run.data.get_state(), evaluate(run, state, step, writer, names=due))

    plot_dir = os.path.join(workdir, "plots")
    results = evaluate(run, state, int(state.step), writer, plot_dir=plot_dir)
    checkpointer.save_best(int(state.step), state, run.data.get_state(), results)
  finally:
    # Also on errors: pending async saves finish, so the last good checkpoint is complete.
    profiler.stop()
    bar.close()
    run.data.close()
    checkpointer.close()
    writer.close()
  return _write_results(workdir, writer, results, plot_dir)


def _write_results(workdir: str, writer: MetricWriter, results: dict, plot_dir: str) -> dict:
  """Curves as PNG next to the evaluation plots, and results.json (process 0)."""
  if jax.process_index() == 0:
    from evaluators import plots

    plots.plot_curves(writer.jsonl_path, plot_dir)
    results["plots"] = sorted(os.path.join(plot_dir, f) for f in os.listdir(plot_dir) if f.endswith(".png"))
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
  return results


class _StepLogger:
  """Every log_every steps: the step's scalars, step time, throughput, MFU, device memory and the unreadable rows
  skipped so far by this process's reader (`data/skipped`), to the metric writer (flushed) and the progress bar."""

  def __init__(self, config, writer: MetricWriter, step_cost: dict, start: int, skipped: Callable[[], int]):
    self.config, self.writer, self.step_cost, self.skipped = config, writer, step_cost, skipped
    self.peak_flops = perf.peak_flops_per_device(config.peak_tflops)
    self.t_last, self.steps_since = time.perf_counter(), 0
    writer.write(start, {f"compiled/{k}": v for k, v in step_cost.items()})

  def step(self, step: int, metrics: dict, bar) -> None:
    self.steps_since += 1
    bar.update(1)
    if step % self.config.log_every and step != self.config.total_steps:
      return
    host = host_scalars(metrics)
    elapsed = time.perf_counter() - self.t_last
    host.update(
      step_time_s=elapsed / self.steps_since, examples_per_s=self.steps_since * self.config.batch_size / elapsed
    )
    utilisation = perf.mfu(self.step_cost.get("flops_per_device"), host["step_time_s"], self.peak_flops)
    if utilisation is not None:
      host["mfu"] = utilisation
    host.update({f"memory/{k}": v for k, v in perf.device_memory().items()})
    self.writer.write(step, {**{f"train/{k}": v for k, v in host.items()}, "data/skipped": self.skipped()})
    self.writer.flush()
    bar.set_postfix(loss=f"{host['loss']:.4f}")
    self.t_last, self.steps_since = time.perf_counter(), 0


def evaluate(
  run: setup_lib.Run,
  state,
  step: int,
  writer: MetricWriter | None = None,
  *,
  names: list[str] | None = None,
  plot_dir: str | None = None,
) -> dict:
  """Runs the named evaluations (all by default) on `state`: {"step", "<eval>/<metric>": ...}, also to the writer."""
  if names is not None and not names:
    return {"step": step}
  results = {"step": step, **evaluators.run(run.evals, run.predict_fns(state), names=names, plot_dir=plot_dir)}
  if writer is not None:
    writer.write(step, {f"eval/{k}": v for k, v in results.items() if k != "step" and np.isscalar(v)})
    writer.flush()
  return results


def restore(config, workdir: str, *, devices=None, best: bool = False) -> tuple[setup_lib.Run, object]:
  """(run, its newest readable or `best` checkpointed state), for --mode=eval / export.

  A workdir without checkpoints, for a config that starts from a whole pretrained model (config.pretrained.kind
  clip_hf / siglip_hf), gives the imported model itself (the initial state): zero-shot evaluation and export of
  released weights need no training step."""
  checkpointer = _checkpointer(config, os.path.abspath(workdir), async_save=False)
  try:
    imported = checkpointer.latest_step() is None and pretrained.gives_whole_model(config)
    run = setup_lib.build(config, devices=devices, abstract=not imported, shuffle=False)
    run.data.close()
    if imported:
      logging.warning("No checkpoint in %s: using the imported model %s as it is.", workdir, config.pretrained.path)
      return run, run.state
    state, _, _ = checkpointer.restore_latest(ckpt_lib.abstract_with_shardings(run.state, run.shardings), best=best)
  finally:
    checkpointer.close()
  return run, state


def evaluate_checkpoint(config, workdir: str) -> dict:
  """--mode=eval: every configured evaluation of the run's newest checkpoint."""
  run, state = restore(config, workdir)
  return evaluate(run, state, int(state.step))


def export(config, workdir: str) -> str:
  """--mode=export (and the end of training): every tower the method predicts (embed_image, embed_text) in each of
  config.export.formats, to <workdir>/export, with one model card."""
  from export import writers

  run, state = restore(config, workdir)
  state = setup_lib.evaluation_state(config, state)
  return writers.export_all(config, run.method.predict_fns, state.params, state.model_state, workdir)


def _checkpointer(config, workdir: str, async_save: bool = True) -> ckpt_lib.Checkpointer:
  return ckpt_lib.Checkpointer(
    workdir,
    max_to_keep=config.keep_checkpoints,
    async_save=async_save,
    best_metric=config.best_metric or None,
    best_mode=config.best_mode,
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


def _check_finite(metrics: dict, config, step: int) -> None:
  host = host_scalars({k: metrics[k] for k in ("nonfinite", "loss", "grad_norm")})
  if float(host["nonfinite"]) and config.nonfinite == "stop":
    raise NonFiniteLossError(
      f"Non-finite loss or gradient at step {step} (loss={float(host['loss'])}, "
      f"grad_norm={float(host['grad_norm'])}); the update was not applied and the last checkpoint is intact. "
      "Lower the learning rate, or set config.nonfinite='skip' to skip such steps."
    )


def _progress(start: int, total: int, enabled: bool):
  from tqdm import tqdm

  return tqdm(total=total, initial=start, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)
