"""One short run of the training loop with every observability and checkpoint option on: step time, throughput, MFU
and compiled memory in the metrics, a profiler trace, the last K checkpoints plus the best one, EMA evaluation."""

import glob
import json
import os

import numpy as np
import pytest

from test_scale import vit_config
import checkpointing as ckpt_lib
from train import setup, trainer
from train.state import TrainState


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Tiny SimCLR (ViT) as in test_faults: 6 steps, a checkpoint every step (keep 2), evaluation at steps 3 and 6 (best
  by kNN accuracy), a profile of step 4, an EMA evaluated in place of the params, a nominal 1 TFLOP/s peak so that
  CPU reports an MFU."""
  c = vit_config()
  c.total_steps, c.log_every, c.checkpoint_every, c.keep_checkpoints = 6, 1, 1, 2
  del c.evals["linear_probe"]
  c.evals.knn.every_steps = 3
  c.best_metric, c.best_mode = "knn/knn_top1", "max"
  c.ema_decay, c.eval_ema = 0.5, True
  c.profile_steps = (4, 4)
  c.peak_tflops = 1.0
  workdir = str(tmp_path_factory.mktemp("scale_run"))
  results = trainer.train_and_evaluate(c, workdir, progress=False)
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return c, workdir, results, lines


def test_metrics_report_step_time_throughput_mfu_and_device_memory(run):
  _, _, _, lines = run
  compiled = next(l for l in lines if "compiled/flops_per_device" in l)
  assert compiled["compiled/flops_per_device"] > 0
  assert compiled["compiled/argument_bytes"] > 0 and compiled["compiled/total_bytes"] >= compiled["compiled/temp_bytes"]
  train = [l for l in lines if "train/loss" in l]
  assert [l["step"] for l in train] == [1, 2, 3, 4, 5, 6]
  for l in train:
    assert l["train/step_time_s"] > 0 and l["train/examples_per_s"] > 0
    expected = compiled["compiled/flops_per_device"] / l["train/step_time_s"] / 1e12
    np.testing.assert_allclose(l["train/mfu"], expected, rtol=1e-5)


def test_profile_steps_write_a_trace(run):
  _, workdir, _, _ = run
  assert glob.glob(os.path.join(workdir, "profile", "**", "*.xplane.pb"), recursive=True)


def test_keeps_the_last_k_checkpoints(run):
  _, workdir, _, _ = run
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["5", "6"]


def test_best_checkpoint_is_the_best_evaluated_step(run):
  config, workdir, _, lines = run
  evals = {l["step"]: l["eval/knn/knn_top1"] for l in lines if "eval/knn/knn_top1" in l}
  assert sorted(evals) == [3, 6]
  checkpointer = ckpt_lib.Checkpointer(workdir, best_metric="knn/knn_top1", async_save=False)
  best = checkpointer.best_step()
  checkpointer.close()
  assert evals[best] == max(evals.values())
  _, state = trainer.restore(config, workdir, best=True)
  assert int(state.step) == best


def test_evaluation_uses_the_ema_params_when_asked(run):
  config, _, _, _ = run
  state = TrainState(step=0, params={"w": 1.0}, model_state={}, opt_state={}, rng=0, extra={}, ema_params={"w": 2.0})
  assert setup.evaluation_state(config, state).params == {"w": 2.0}
  config = config.copy_and_resolve_references()
  config.eval_ema = False
  assert setup.evaluation_state(config, state).params == {"w": 1.0}
