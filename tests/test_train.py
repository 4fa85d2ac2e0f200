"""The trainer: sharded step equals single-device step, exact resume, clear errors, export, no TF in the core."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import checkpointing as ckpt_lib
from configs import simclr_shapes
from train import setup
from train import step as step_lib
from train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  c = simclr_shapes.get_config("tiny")
  for k, v in overrides.items():
    c[k] = v
  return c


def one_step(config, devices):
  run = setup.build(config, devices=devices)
  step = step_lib.make_train_step(run.method, run.tx, run.shardings, run.learning_rate)
  state, metrics = step(run.state, run.first_batch)
  run.data.close()
  return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.parametrize("conv_impl", ["xla", "winograd"])
def test_train_step_on_8_devices_equals_1_device(conv_impl):
  config = tiny_config()
  config.model.conv_impl = conv_impl  # winograd: the 64-channel stage's 3x3 stride-1 convolution (4x4 maps)
  assert len(jax.devices()) == 8
  state8, m8 = one_step(config, jax.devices())
  state1, m1 = one_step(config, jax.devices()[:1])
  # float32 (the model casts to it): the two differ in the order of sums over at most 2 x 32 rows (BatchNorm, loss),
  # whose rounding is bounded by n * eps = 64 * 1.2e-7 relative to the magnitudes summed; twice that.
  tol = 2 * 64 * np.finfo(np.float32).eps
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=tol)
  for a, b in ((state8.params, state1.params), (state8.model_state, state1.model_state)):
    scale = max(float(np.abs(x).max()) for x in jax.tree.leaves(b))
    jax.tree.map(lambda x, y, s=scale: np.testing.assert_allclose(x, y, rtol=tol, atol=tol * s), a, b)


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
  assert 0.0 <= results["knn/knn_top1"] <= 1.0 and 0.0 <= results["linear_probe/linear_probe_top1"] <= 1.0
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert any("train/loss" in l for l in lines) and any("eval/knn/knn_top1" in l for l in lines)
  assert json.load(open(os.path.join(workdir, "results.json")))["knn/knn_top1"] == results["knn/knn_top1"]
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


def test_misspelled_config_key_is_one_line_naming_the_nearest_key(tmp_path):
  r = _main("--config=configs/simclr_shapes.py:tiny", f"--workdir={tmp_path}", "--config.optimizer.base_rl=3")
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [
    "error: Unknown config key --config.optimizer.base_rl. Did you mean optimizer.base_lr?"
  ]


def test_wrong_config_type_is_a_clear_error(tmp_path):
  r = _main("--config=configs/simclr_shapes.py:tiny", f"--workdir={tmp_path}", "--config.batch_size=abc")
  assert r.returncode != 0
  assert "batch_size" in r.stderr and "Traceback" not in r.stderr


def test_winograd_convolutions_train_from_the_command_line(tmp_path):
  r = _main(
    "--config=configs/simclr_shapes.py:tiny",
    f"--workdir={tmp_path}",
    "--config.model.conv_impl=winograd",
    "--config.total_steps=2",
    "--config.export.enabled=False",
  )
  assert r.returncode == 0, r.stderr
  results = json.load(open(tmp_path / "results.json"))
  assert 0.0 <= results["knn/knn_top1"] <= 1.0


def test_the_tiny_resnet_runs_a_winograd_convolution():
  config = tiny_config()
  config.model.conv_impl = "winograd"
  run = setup.build(config, devices=jax.devices()[:1])
  embed = lambda params: run.method.predict_fns["embed_image"](params, run.state.model_state, run.first_batch)
  program = str(jax.make_jaxpr(embed)(run.state.params))
  run.data.close()
  assert "conv_winograd" in program and "conv_blocked" in program  # 64 channels: Winograd; narrower: blocked


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


SHARED_CIFAR = os.path.join(REPO, "..", "shared", "data", "cifar10.npz")


@pytest.mark.skipif(not os.path.exists(SHARED_CIFAR), reason="../shared/data/cifar10.npz not present")
def test_clip_reports_zero_shot_on_cifar10_from_a_named_eval_added_on_the_command_line(tmp_path):
  r = _main(
    "--config=configs/clip_shapes.py:tiny",
    f"--workdir={tmp_path}",
    "--config.total_steps=2",
    "--config.export.enabled=False",
    "--config.evals.cifar10.type=zero_shot",
    "--config.evals.cifar10.data.name=cifar10_npz",
    "--config.evals.cifar10.examples=64",
  )
  assert r.returncode == 0, r.stderr
  results = json.load(open(tmp_path / "results.json"))
  assert 0.0 <= results["cifar10/zero_shot_top1"] <= 1.0 and results["cifar10/chance"] == 0.1
  assert "zero_shot/zero_shot_top1" in results  # the recipe's own evaluation on its own data


@pytest.mark.skipif(not os.path.exists(SHARED_CIFAR), reason="../shared/data/cifar10.npz not present")
def test_eval_mode_reads_the_saved_config_and_evaluates_simclr_on_other_data(tiny_simclr_run):
  from configs import overrides, saved

  _, workdir, _ = tiny_simclr_run
  config = overrides.apply(
    saved.load(workdir),
    [
      ("evals.cifar_knn.type", "knn"),
      ("evals.cifar_knn.data.name", "cifar10_npz"),
      ("evals.cifar_knn.train_examples", "256"),
      ("evals.cifar_knn.examples", "128"),
      ("evals.cifar_probe.type", "linear_probe"),
      ("evals.cifar_probe.data.name", "cifar10_npz"),
      ("evals.cifar_probe.train_examples", "256"),
      ("evals.cifar_probe.examples", "128"),
      ("evals.cifar_probe.epochs", "5"),
    ],
  )
  results = trainer.evaluate_checkpoint(config, workdir)
  assert results["step"] == config.total_steps
  for key in ("cifar_knn/knn_top1", "cifar_probe/linear_probe_top1", "knn/knn_top1", "linear_probe/linear_probe_top1"):
    assert 0.0 <= results[key] <= 1.0, (key, results)


def test_freed_memory_goes_back_to_the_kernel_under_tcmalloc_too():
  """train.perf.release_freed_host_memory, which the trainer calls after compiling, hands back what a preloaded
  tcmalloc keeps (its MallocExtension_ReleaseFreeMemory), not only glibc's free lists (malloc_trim)."""
  from benchmarks import run_peers

  lib = next((path for path in run_peers.ALLOCATORS["tcmalloc"] if os.path.exists(path)), None)
  if lib is None:
    pytest.skip("tcmalloc is not installed (Debian: libtcmalloc-minimal4)")
  code = """
import json, numpy as np
from train import perf
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
block = np.ones(400 << 17)  # 400 MiB through malloc, then freed
del block
before = rss()
done = perf.release_freed_host_memory()
print(json.dumps({"released": done, "before_mb": before, "after_mb": rss()}))
"""
  env = {**os.environ, "LD_PRELOAD": lib, "JAX_PLATFORMS": "cpu"}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
  record = json.loads(out.stdout.strip().splitlines()[-1])
  assert record["released"]
  assert record["before_mb"] - record["after_mb"] > 300, record
