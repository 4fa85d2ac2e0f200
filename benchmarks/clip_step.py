"""Tiny CLIP training-step throughput on the host CPU, the workload of ../shared/peers/bench_openclip.py; prints one JSON
line (pairs/s and peak RSS).

    BATCH=128 STEPS=5 THREADS=2 .venv/bin/python benchmarks/clip_step.py

Workload: ViT image tower 64x64, patch 8, width 256, 6 layers, 4 heads (class-token pooling); causal text transformer,
context 32, vocab 1000, width 256, 6 layers, 4 heads; both projected to 256; open_clip's ClipLoss convention
(`losses.clip_softmax_loss`, learnable logit scale); AdamW (lr 1e-4, weight decay 0.1); batch 128 of random images
and tokens. The step is the trainer's (`train.step.make_train_step`) on the CLIP method (`methods.clip`).

Environment: BATCH (128), STEPS (5 timed steps after one warm-up), THREADS, DEVICES, MALLOC, SCHEDULER as in
simclr_step.py.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.simclr_step import (  # noqa: E402
  configure_host_from_env,
  env_int,
  lowered_flops,
  step_record,
  time_train_steps,
)


def clip_config(batch: int, *, tiny: bool = False):
  """The benchmark's CLIP config: the shapes recipe with the peer's towers, loss and optimizer (`tiny`: smoke test)."""
  from configs import clip_shapes

  c = clip_shapes.get_config()
  width, depth, heads, image_size = (16, 1, 2, 16) if tiny else (256, 6, 4, 64)
  c.batch_size = batch
  c.data.image_size = image_size
  c.model.image = dict(name="vit", patch_size=8, width=width, depth=depth, num_heads=heads, pool="cls")
  c.model.text = dict(
    name="text_transformer", vocab_size=1000, context_length=32, width=width, depth=depth, num_heads=heads, causal=True
  )
  c.model.embed_dim = width
  c.optimizer.update(
    dict(name="adamw", base_lr=1e-4, b1=0.9, b2=0.999, weight_decay=0.1, warmup_steps=0, schedule="constant")
  )
  return c


def build_step(config):
  """(step, state, batch): the trainer's jitted step on the CLIP method and a batch of random images and tokens."""
  import jax
  import numpy as np

  import methods
  from parallel import mesh as mesh_lib
  from train import optim
  from train import step as step_lib

  rng = np.random.default_rng(0)
  size, batch = config.data.image_size, config.batch_size
  data = {
    "image": rng.standard_normal((batch, size, size, 3), dtype=np.float32),
    "caption": rng.integers(0, config.model.text.vocab_size, (batch, config.model.text.context_length), dtype=np.int32),
  }
  mesh = mesh_lib.build_mesh(config.mesh)
  mesh_lib.check_batch_size(batch, mesh)
  method = methods.get("clip")(config, mesh)
  tx, lr = optim.make_optimizer(config.optimizer, 1000, config.batch_size)
  state, shardings = step_lib.create_train_state(config, method, tx, mesh, data)
  step = step_lib.make_train_step(method, tx, shardings, lr)
  return step, state, jax.device_put(data, mesh_lib.batch_sharding(mesh))


def main() -> None:
  batch, steps = env_int("BATCH", 128), env_int("STEPS", 5)
  host = configure_host_from_env()
  step, state, data = build_step(clip_config(batch))
  flops = lowered_flops(step, state, data)  # no loops in this step (one loss block): XLA's count is the whole step
  times, params = time_train_steps(step, state, data, steps)
  print(json.dumps(step_record("clip_tiny", batch, times, params, flops, host, pairs_per_s=batch / min(times))))


if __name__ == "__main__":
  main()
