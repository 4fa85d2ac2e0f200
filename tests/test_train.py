"""The trainer: sharded step equals single-device step, exact resume, clear errors, export, no TF in the core."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import input_pipeline
import methods
from configs import simclr_shapes
import checkpointing as ckpt_lib
from parallel import mesh as mesh_lib
from train import optim
from train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  c = simclr_shapes.get_config("tiny")
  for k, v in overrides.items():
    c[k] = v
  return c


def one_step(config, devices):
  mesh = mesh_lib.build_mesh(config.mesh, devices)
  data = input_pipeline.build(
    config.data,
    split="train",
    global_batch_size=config.batch_size,
    sharding=mesh_lib.batch_sharding(mesh),
    seed=config.seed,
  )
  batch = next(data)
  method = methods.get(config.method)(config, mesh)
  tx, lr = optim.make_optimizer(config.optimizer, config.total_steps)
  state, shardings = trainer.create_train_state(config, method, tx, mesh, batch)
  step = trainer.make_train_step(method, tx, shardings, lr)
  state, metrics = step(state, batch)
  return jax.device_get(state), jax.device_get(metrics)


def test_train_step_on_8_devices_equals_1_device():
  config = tiny_config()
  assert len(jax.devices()) == 8
  state8, m8 = one_step(config, jax.devices())
  state1, m1 = one_step(config, jax.devices()[:1])
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), state8.params, state1.params)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), state8.model_state, state1.model_state
  )


def _final_params(workdir):
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
  step = ckpt.latest_step()
  restored = ckpt.manager.restore(step)
  ckpt.close()
  return step, restored["state"]["params"]


def test_resume_after_stop_reaches_same_params_as_uninterrupted(tmp_path, tiny_simclr_run):
  config, straight, _ = tiny_simclr_run
  stopped = trainer.train_and_evaluate(config, str(tmp_path), progress=False, stop_at=2)
  assert stopped == {"stopped_at_step": 2}
  trainer.train_and_evaluate(config, str(tmp_path), progress=False)
  step_a, params_a = _final_params(straight)
  step_b, params_b = _final_params(str(tmp_path))
  assert step_a == step_b == config.total_steps
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), params_a, params_b)


def test_train_writes_metrics_checkpoint_results_and_plots(tiny_simclr_run):
  _, workdir, results = tiny_simclr_run
  assert 0.0 <= results["knn_accuracy"] <= 1.0 and 0.0 <= results["linear_probe_accuracy"] <= 1.0
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert any("train/loss" in l for l in lines) and any("eval/knn_accuracy" in l for l in lines)
  assert json.load(open(os.path.join(workdir, "results.json")))["knn_accuracy"] == results["knn_accuracy"]
  assert os.listdir(os.path.join(workdir, "checkpoints")) and os.listdir(os.path.join(workdir, "tb"))
  assert {"loss.png", "eval.png", "embeddings_2d.png", "similarities.png"} <= set(
    os.listdir(os.path.join(workdir, "plots"))
  )


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match=r"batch_size=12 is not divisible by the number of data shards \(8"):
    trainer.train_and_evaluate(tiny_config(batch_size=12), str(tmp_path), progress=False)


def test_missing_workdir_parent_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="parent directory of --workdir does not exist"):
    trainer.train_and_evaluate(tiny_config(), str(tmp_path / "no" / "such" / "dir"), progress=False)


def test_nonfinite_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path):
  config = tiny_config(total_steps=6, checkpoint_every=2)
  config.optimizer.base_lr = 1e30  # blows up within a few steps
  with pytest.raises(trainer.NonFiniteLossError, match="Non-finite loss or gradient at step"):
    trainer.train_and_evaluate(config, str(tmp_path), progress=False)
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  if ckpt.latest_step() is not None:
    params = ckpt.manager.restore(ckpt.latest_step())["state"]["params"]
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  ckpt.close()


def _main(*args, env_extra=None):
  env = dict(os.environ, **(env_extra or {}))
  return subprocess.run(
    [sys.executable, "main.py", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=300
  )


def test_unknown_config_key_is_a_clear_error(tmp_path):
  r = _main("--config=configs/simclr_shapes.py:tiny", f"--workdir={tmp_path}", "--config.no_such_key=3")
  assert r.returncode != 0
  assert "no_such_key" in r.stderr and "Traceback" not in r.stderr


def test_wrong_config_type_is_a_clear_error(tmp_path):
  r = _main("--config=configs/simclr_shapes.py:tiny", f"--workdir={tmp_path}", "--config.batch_size=abc")
  assert r.returncode != 0
  assert "batch_size" in r.stderr and "Traceback" not in r.stderr


def test_core_imports_without_tensorflow():
  code = (
    "import sys; sys.modules['tensorflow'] = None; sys.modules['tensorflow_datasets'] = None\n"
    "import models, losses, methods, train.trainer, evaluators, export.jax_export, export.embed\n"
    "import methods.simclr\n"
    "assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    "print('ok')"
  )
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip().endswith("ok")
