"""Faults: a run stopped by SIGTERM (checkpoint, exit 0) and then killed by SIGKILL, restarted each time, ends
bit-identical to the uninterrupted run (a small benchmarks/fault_storm.py); an injected NaN stops with a clear message
and the last checkpoint loads; half-written checkpoints are ignored."""

import dataclasses
import json
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import methods
from benchmarks import fault_storm
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


def test_a_sigterm_then_a_sigkill_with_restarts_end_bit_identical_to_the_uninterrupted_run(tiny_simclr_run, tmp_path):
  config, reference, _ = tiny_simclr_run
  overrides = dict(total_steps=config.total_steps, checkpoint_every=1, log_every=1)
  # Each signal 0-0.05 s after the run's first new checkpoint (a step takes ~0.1 s): mid-step or mid-save, early
  # enough that the SIGTERM leaves steps for the run killed next.
  result = fault_storm.storm(
    str(tmp_path),
    overrides,
    [signal.SIGTERM, signal.SIGKILL],
    seed=0,
    max_delay_s=0.05,
    env=_env(),
    after_checkpoint=True,
    until_final_checkpoint=True,
    timeout_s=120,
  )
  terminated, killed, _ = result["runs"]
  assert terminated["returncode"] == 0, terminated["stderr"][-3000:]  # SIGTERM: checkpoint, then exit 0
  assert "Stop requested" in terminated["stderr"] and json.loads(terminated["stdout"])["stopped_at_step"] > 0
  assert killed["returncode"] == -signal.SIGKILL and result["kills"] == 2
  assert fault_storm.differences(reference, str(tmp_path), config.total_steps) == []


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


def test_a_half_written_checkpoint_is_never_picked_up(tmp_path, tiny_simclr_run):
  config, workdir, _ = tiny_simclr_run
  shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)
  checkpoints = tmp_path / "checkpoints"
  # What a save killed midway leaves: orbax's temporary directory, renamed to "<step>" only once complete.
  partial = checkpoints / f"{config.total_steps + 2}.orbax-checkpoint-tmp"
  shutil.copytree(checkpoints / str(config.total_steps), partial)
  shutil.rmtree(partial / "state")
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  assert checkpointer.latest_step() == config.total_steps
  checkpointer.close()
  _, state = trainer.restore(config, str(tmp_path))
  assert int(state.step) == config.total_steps
