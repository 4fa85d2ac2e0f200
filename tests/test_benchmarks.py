"""benchmarks/: each script's workload builds and runs one tiny step (no timing assertions)."""

import json
import os
import subprocess
import sys

import numpy as np

from benchmarks import clip_step, run_peers, simclr_cifar10_quality, simclr_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_simclr_step_workload_runs_a_step():
  # nn.Conv here: the tests' 8-device mesh would put collectives inside the blocked convolution's loops (see
  # models/conv.py), which are measured and tested on one device.
  config = simclr_step.simclr_config(16, conv="xla", tiny=True)
  views = np.random.default_rng(0).standard_normal((16, 2, 8, 8, 3), dtype=np.float32)
  step, state, batch = simclr_step.build_step(config, views)
  state, metrics = step(state, batch)
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))


def test_clip_step_workload_runs_a_step():
  step, state, batch = clip_step.build_step(clip_step.clip_config(8, tiny=True))
  state, metrics = step(state, batch)
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))


def test_quality_training_stops_at_the_budget_and_knn_scores_the_features():
  config = simclr_cifar10_quality.quality_config(8, "", tiny=True)
  images = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
  labels = np.arange(32) % 10
  method, state, stats = simclr_cifar10_quality.train_for(config, images, budget_s=0.0)
  assert stats["steps"] == 0 and stats["compile_s"] > 0
  top1 = simclr_cifar10_quality.knn_top1(
    method, state, (images[:24], labels[:24]), (images[24:], labels[24:]), batch_size=8
  )
  assert 0.0 <= top1 <= 1.0


def test_quality_script_skips_cleanly_without_the_data():
  env = {**os.environ, "DATA": "/nonexistent/cifar10.npz"}
  out = subprocess.run(
    [sys.executable, os.path.join(ROOT, "benchmarks", "simclr_cifar10_quality.py")],
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    check=True,
  ).stdout
  assert "skipped" in json.loads(out.strip().splitlines()[-1])


def test_runner_reads_the_last_json_line_and_records_the_load():
  record = run_peers.run_json(
    [sys.executable, "-c", "print('log line'); print('{\"images_per_s\": 2.5}')"], dict(os.environ), ROOT, timeout=60
  )
  assert record["images_per_s"] == 2.5 and "load_avg_1m_before" in record
