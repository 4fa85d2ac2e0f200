"""Faults: a run killed with SIGKILL after a checkpoint resumes to the uninterrupted result; SIGTERM checkpoints and
exits 0; an injected NaN stops with a clear message and the last checkpoint loads; half-written checkpoints are
ignored."""

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import methods
from test_scale import vit_config
import checkpointing as ckpt_lib
from train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 6


def fault_config():
  """Tiny SimCLR (ViT), 6 steps, a checkpoint every 2, an EMA of the params (restored on resume like the rest)."""
  c = vit_config()
  c.total_steps, c.checkpoint_every, c.log_every, c.ema_decay = TOTAL_STEPS, 2, 2, 0.5
  return c


def _env() -> dict:
  """The test process's 8 CPU devices and compilation cache, for subprocesses."""
  return dict(
    os.environ,
    PYTHONPATH=REPO,
    JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
  )


def _finished_steps(workdir) -> list[int]:
  directory = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(directory) else []


def _wait_for_checkpoint(workdir, proc, timeout: float = 120.0) -> None:
  deadline = time.time() + timeout
  while not _finished_steps(workdir):
    if proc.poll() is not None:
      raise AssertionError(
        f"the run ended (rc={proc.returncode}) before its first checkpoint:\n{proc.communicate()[0][-3000:]}"
      )
    if time.time() > deadline:
      proc.kill()
      raise AssertionError("no checkpoint within the timeout")
    time.sleep(0.05)


def _saved_state(workdir, step: int):
  checkpointer = ckpt_lib.Checkpointer(str(workdir), async_save=False)
  state = checkpointer.manager.restore(step)["state"]
  checkpointer.close()
  return state


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  assert trainer.train_and_evaluate(fault_config(), str(workdir), progress=False, stop_at=TOTAL_STEPS) == {
    "stopped_at_step": TOTAL_STEPS
  }
  return workdir


def test_sigkill_after_a_checkpoint_then_restart_reaches_the_uninterrupted_state(tmp_path, uninterrupted, caplog):
  proc = subprocess.Popen(
    [sys.executable, __file__, str(tmp_path), "0.5"],
    cwd=REPO,
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  _wait_for_checkpoint(tmp_path, proc)
  proc.kill()  # SIGKILL: no handler runs, an async save may be half-written
  proc.communicate(timeout=30)
  assert proc.returncode == -signal.SIGKILL
  killed_at = _finished_steps(tmp_path)
  assert killed_at and killed_at[-1] < TOTAL_STEPS

  with caplog.at_level(logging.INFO):
    assert trainer.train_and_evaluate(fault_config(), str(tmp_path), progress=False, stop_at=TOTAL_STEPS) == {
      "stopped_at_step": TOTAL_STEPS
    }
  assert f"Resumed from step {killed_at[-1]}" in caplog.text
  expected, resumed = _saved_state(uninterrupted, TOTAL_STEPS), _saved_state(tmp_path, TOTAL_STEPS)
  assert jax.tree.structure(expected) == jax.tree.structure(resumed)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), expected, resumed)


def test_sigterm_saves_a_checkpoint_and_exits_0(tmp_path):
  proc = subprocess.Popen(
    [
      sys.executable,
      "main.py",
      "--config=configs/simclr_shapes.py:tiny",
      f"--workdir={tmp_path}",
      "--config.total_steps=100000",
      "--config.checkpoint_every=5",
      "--config.log_every=5",
    ],
    cwd=REPO,
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  _wait_for_checkpoint(tmp_path, proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  stopped = json.loads(out)["stopped_at_step"]
  assert "Stop requested" in err and _finished_steps(tmp_path)[-1] == stopped


def _nan_at_call(build, call: int):
  """Wraps a method builder so that its loss is NaN from its `call`-th evaluation on (a call counter in extra)."""

  def build_with_nan(config, mesh):
    method = build(config, mesh)

    def init(rng, batch):
      params, model_state, extra = method.init(rng, batch)
      return params, model_state, {"inner": extra, "calls": jnp.zeros((), jnp.int32)}

    def loss_fn(params, model_state, extra, batch, rng):
      value, (model_state, inner, metrics) = method.loss_fn(params, model_state, extra["inner"], batch, rng)
      value = jnp.where(extra["calls"] + 1 >= call, jnp.nan, value)
      return value, (model_state, {"inner": inner, "calls": extra["calls"] + 1}, metrics)

    return dataclasses.replace(
      method, init=init, loss_fn=loss_fn, prepare_fn=None, encode_fn=None, embedding_loss_fn=None
    )

  return build_with_nan


def test_injected_nan_stops_with_a_clear_message_and_the_last_checkpoint_loads(tmp_path, monkeypatch):
  build = methods.get("simclr")
  monkeypatch.setattr(methods, "get", lambda name: _nan_at_call(build, call=3))
  config = fault_config()
  with pytest.raises(trainer.NonFiniteLossError, match=r"Non-finite loss or gradient at step 3 \(loss=nan"):
    trainer.train_and_evaluate(config, str(tmp_path), progress=False)
  assert _finished_steps(tmp_path) == [2]
  _, state = trainer.restore(config, str(tmp_path))
  assert int(state.step) == 2
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def test_a_half_written_checkpoint_is_never_picked_up(tmp_path, uninterrupted):
  shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
  checkpoints = tmp_path / "checkpoints"
  # What a save killed midway leaves: orbax's temporary directory, renamed to "<step>" only once complete.
  partial = checkpoints / f"{TOTAL_STEPS + 2}.orbax-checkpoint-tmp"
  shutil.copytree(checkpoints / str(TOTAL_STEPS), partial)
  shutil.rmtree(partial / "state")
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  assert checkpointer.latest_step() == TOTAL_STEPS
  checkpointer.close()
  _, state = trainer.restore(fault_config(), str(tmp_path))
  assert int(state.step) == TOTAL_STEPS


def _worker(workdir: str, step_delay_s: float) -> None:
  """A training run of fault_config() in which each batch takes `step_delay_s` more, so a test can kill it mid-run."""
  from input_pipeline.iterator import BatchIterator

  next_batch = BatchIterator.__next__

  def slow_next(self):
    time.sleep(step_delay_s)
    return next_batch(self)

  BatchIterator.__next__ = slow_next
  trainer.train_and_evaluate(fault_config(), workdir, progress=False, stop_at=TOTAL_STEPS)


if __name__ == "__main__":
  _worker(sys.argv[1], float(sys.argv[2]))
