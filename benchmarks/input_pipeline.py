"""Input pipeline throughput on CIFAR-sized images; prints one JSON line.

    .venv/bin/python benchmarks/input_pipeline.py [--batch_size 256] [--steps 20] [--views 2]

Data: ../shared/data/cifar10.npz (test split, 10k JPEGs) when present, else the embedded shapes dataset.
Figures (images per second; each image yields `views` SimCLR views):
- shapes_generate: rendering the procedural dataset on one host thread;
- tf_data: `augment_tf.views_dataset`, a tf.data map of the TF SimCLR augmentation (all host cores);
- jax_augment: `augment_jax.multi_view` under jit on the default device, input already on device;
- pipeline_jax: `input_pipeline.build` iterator (sharded global batches, prefetch) + jitted on-device views.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import input_pipeline  # noqa: E402
from configs import default
from input_pipeline import augment_jax, shapes, sources  # noqa: E402


def rate(fn, steps: int, images_per_step: int) -> float:
  fn()  # warm-up: compilation, tracing, caches
  start = time.perf_counter()
  for _ in range(steps):
    fn()
  return images_per_step * steps / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--views", type=int, default=2)
  args = parser.parse_args()
  b, steps, v = args.batch_size, args.steps, args.views

  config = default.data()
  if os.path.exists(sources.DEFAULT_CIFAR10_NPZ):
    config.name = "cifar10_npz"
  else:
    config.train_size, config.test_size = 10_000, 10_000
  start = time.perf_counter()
  images = input_pipeline.load_split(config, "test")["image"]
  load_s = time.perf_counter() - start
  out = {
    "benchmark": "input_pipeline",
    "data": config.name,
    "image_shape": list(images.shape[1:]),
    "batch_size": b,
    "views": v,
    "device": jax.devices()[0].device_kind,
    "host_cpus": os.cpu_count(),
    "load_test_split_s": round(load_s, 2),
  }

  start = time.perf_counter()
  shapes.render(0, "train", np.arange(2000))
  out["shapes_generate_images_per_s"] = round(2000 / (time.perf_counter() - start), 1)

  try:
    from input_pipeline import augment_tf

    tf_batches = iter(augment_tf.views_dataset(images, seed=0, num_views=v, batch_size=b))
    out["tf_data_images_per_s"] = round(rate(lambda: next(tf_batches), steps, b), 1)
  except ImportError as e:
    out["tf_data_images_per_s"] = None
    out["tf_data_skipped"] = f"TensorFlow not available: {e}"

  augment = jax.jit(lambda key, x: augment_jax.multi_view(key, x, v))
  on_device = jax.device_put(images[:b])
  keys = iter(jax.random.split(jax.random.key(0), steps + 1))
  out["jax_augment_images_per_s"] = round(rate(lambda: augment(next(keys), on_device).block_until_ready(), steps, b), 1)

  config.tokenizer = ""
  n = jax.device_count()
  mesh = jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  it = input_pipeline.build(
    config, split="test", global_batch_size=b - b % n, seed=0, sharding=jax.sharding.NamedSharding(mesh, jax.P("data"))
  )
  keys = iter(jax.random.split(jax.random.key(1), steps + 1))
  out["pipeline_jax_images_per_s"] = round(
    rate(lambda: augment(next(keys), next(it)["image"]).block_until_ready(), steps, b - b % n), 1
  )
  it.close()
  print(json.dumps(out))


if __name__ == "__main__":
  main()
