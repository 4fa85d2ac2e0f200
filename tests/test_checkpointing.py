"""Checkpoint integrity: a damaged newest checkpoint is skipped with one warning and the run ends bit-identical to an
uninterrupted one; no readable checkpoint stops with one clear error naming the workdir; a full disk during a save
stops the run with a clear message and the previous checkpoint intact. All start from a copy of the finished tiny
SimCLR run (conftest.tiny_simclr_run: checkpoints at steps 2 and 4)."""

import glob
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import checkpointing as ckpt_lib
from test_faults import REPO, _env, _finished_steps
from train import trainer


@pytest.fixture
def run_copy(tiny_simclr_run, tmp_path):
  """(config, the finished run's workdir, a copy of it to damage)."""
  config, workdir, _ = tiny_simclr_run
  shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)
  return config.copy_and_resolve_references(), workdir, tmp_path


def _truncate_largest_array_file(workdir, step: int) -> None:
  """What a preempted copy or a bad disk leaves: the step's biggest TensorStore data file cut in half."""
  path = max(glob.glob(f"{workdir}/checkpoints/{step}/state/ocdbt.process_*/d/*"), key=os.path.getsize)
  os.truncate(path, os.path.getsize(path) // 2)


def _saved(workdir, step: int) -> tuple[dict, dict]:
  """(state arrays, data positions) of a step, restored without a target."""
  checkpointer = ckpt_lib.Checkpointer(str(workdir), async_save=False)
  state = checkpointer.manager.restore(step)["state"]
  data = checkpointer.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
  checkpointer.close()
  return state, data


def _assert_same_checkpoint(expected_workdir, workdir, step: int) -> None:
  (expected, expected_data), (actual, actual_data) = _saved(expected_workdir, step), _saved(workdir, step)
  assert jax.tree.structure(expected) == jax.tree.structure(actual) and expected_data == actual_data
  jax.tree.map(np.testing.assert_array_equal, expected, actual)  # bit for bit


def _unreadable_warnings(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "is unreadable" in r.getMessage()]


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one_and_ends_bit_identical(run_copy, caplog):
  config, original, workdir = run_copy
  _truncate_largest_array_file(workdir, 4)
  # Keeping 1 checkpoint, saving every step: orbax would count the damaged step 4 as the newest of the kept 1 and
  # delete every readable one; it is moved aside instead.
  config.keep_checkpoints, config.checkpoint_every, config.log_every = 1, 1, 1
  with caplog.at_level(logging.INFO):
    assert trainer.train_and_evaluate(config, str(workdir), progress=False, stop_at=4) == {"stopped_at_step": 4}
  (warning,) = _unreadable_warnings(caplog)
  assert f"{workdir}/checkpoints/4 is unreadable (" in warning and "\n" not in warning
  assert "Resumed from step 2" in caplog.text
  assert _finished_steps(workdir) == [4] and os.listdir(workdir / "checkpoints_unreadable") == ["4"]
  _assert_same_checkpoint(original, workdir, 4)


def test_no_readable_checkpoint_stops_with_one_clear_error_naming_the_workdir(run_copy, caplog):
  config, _, workdir = run_copy
  _truncate_largest_array_file(workdir, 4)
  with open(workdir / "checkpoints" / "2" / "data" / "metadata", "w") as f:
    f.write("{not json")  # bad metadata
  with caplog.at_level(logging.WARNING), pytest.raises(ckpt_lib.CheckpointError) as error:
    trainer.restore(config, str(workdir))
  message = str(error.value)
  assert message.startswith(f"No readable checkpoint in the workdir {workdir}: steps 4, 2 of ") and "\n" not in message
  assert "step 2: JSONDecodeError" in message
  assert len(_unreadable_warnings(caplog)) == 2
  assert _finished_steps(workdir) == [2, 4]  # nothing is moved when nothing could be restored


def test_a_full_disk_during_a_save_stops_the_run_and_keeps_the_previous_checkpoint(run_copy):
  config, original, workdir = run_copy
  shutil.rmtree(workdir / "checkpoints" / "4")
  # A file size limit makes every write past 100 kB fail as a full disk would (EFBIG instead of ENOSPC): the state's
  # array file (~0.5 MB) no longer fits, the logs and metadata still do. Python ignores SIGXFSZ.
  limited_main = (
    "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY)); "
    "sys.argv = sys.argv[1:]; runpy.run_path('main.py', run_name='__main__')"
  )
  overrides = ["--config.checkpoint_every=1", "--config.keep_checkpoints=1"]  # keep-last-1 must not delete step 2
  proc = subprocess.run(
    [sys.executable, "-c", limited_main, "main.py", "--config=configs/simclr_shapes.py:tiny", f"--workdir={workdir}"]
    + overrides,
    cwd=REPO,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode != 0
  assert "Saving the checkpoint of step 3 to " in proc.stderr and "File too large" in proc.stderr, proc.stderr[-3000:]
  assert "the checkpoint of step 2 is untouched" in proc.stderr
  assert proc.stderr.count("Event loop is closed") == 0  # the failed save's leftover writes stay quiet
  assert _finished_steps(workdir) == [2]
  _assert_same_checkpoint(original, workdir, 2)
  checkpointer = ckpt_lib.Checkpointer(str(workdir), async_save=False)
  state, data, step = checkpointer.restore_latest(_saved(original, 2)[0])
  checkpointer.close()
  assert step == 2 and int(state["step"]) == 2 and data["step"] == 2


def test_a_resume_with_more_processes_than_wrote_the_checkpoint_stops_with_a_clear_message():
  data = {"processes": [{"epoch": 0, "process_block": [0, 2]}, {"epoch": 0, "process_block": [1, 2]}]}
  assert ckpt_lib.process_position(data, 1, 2, 40) == data["processes"][1]
  assert ckpt_lib.process_position({"epoch": 3}, 0, 1, 40) == {"epoch": 3}  # an older one-position checkpoint
  with pytest.raises(ValueError, match="written by 2 process\\(es\\); this run has 3. Resume with the same number"):
    ckpt_lib.process_position(data, 2, 3, 40)
