"""SimCLR quality at equal wall-clock: trains on CIFAR-10 for BUDGET_S seconds on the host CPU, then reports the weighted
kNN top-1 (k=200, temperature 0.1, cosine) of the backbone features on the test set; prints one JSON line.

    BUDGET_S=900 .venv/bin/python benchmarks/simclr_cifar10_quality.py

The peer is ../shared/peers/simclr_cifar10_quality_torch.py with the same BUDGET_S: ResNet-18 CIFAR, projection MLP
512-2048-128, NT-Xent at 0.5, SGD (lr 0.06 * BATCH / 256, momentum 0.9, weight decay 5e-4, no schedule), SimCLR
augmentations (crop scale 0.08-1, flip, colour jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale 0.2), batches of BATCH
images drawn with replacement. Ours: the SimCLR method (`methods.simclr`, augmentation on device inside the step) and
the trainer's step; the budget includes compilation. kNN memory bank: the KNN_TRAIN (default all 50,000) first training
images, scored on the KNN_TEST (default all 10,000) first test images.

Environment: BUDGET_S (900), BATCH (256), CONV ("winograd"), THREADS, DEVICES, MALLOC, SCHEDULER (as in
simclr_step.py), DATA (the npz, default ../shared/data/cifar10.npz; absent -> prints a JSON line saying it skipped,
exit 0).
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.simclr_step import configure_host_from_env, env_int, simclr_config  # noqa: E402

DEFAULT_DATA = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "cifar10.npz"
)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


def quality_config(batch: int, data_path: str, *, conv: str = "winograd", tiny: bool = False):
  """The speed benchmark's SimCLR config plus the peer's CIFAR-10 data, normalisation and augmentations."""
  c = simclr_config(batch, conv=conv, tiny=tiny)
  c.data.update(dict(name="cifar10_npz", path=data_path, image_size=32, num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD))
  c.augment = dict(crop_scale=(0.08, 1.0), flip_prob=0.5, jitter_strength=0.5, jitter_prob=0.8, grayscale_prob=0.2)
  c.optimizer.base_lr = 0.06 * batch / 256
  return c


def train_for(config, images, budget_s: float, *, seed: int = 0):
  """Trains SimCLR on uint8 `images` [N, 32, 32, 3] until `budget_s` seconds have passed (compilation included).

  Returns (method, state, stats): stats has steps, epochs, train_s, compile_s and final_loss.
  """
  import jax
  import numpy as np

  import methods
  from parallel import mesh as mesh_lib
  from train import optim
  from train import step as step_lib

  start = time.perf_counter()
  mesh = mesh_lib.build_mesh(config.mesh)
  sharding = mesh_lib.batch_sharding(mesh)
  rng = np.random.default_rng(seed)
  draw = lambda: jax.device_put({"image": images[rng.integers(0, len(images), config.batch_size)]}, sharding)
  method = methods.get("simclr")(config, mesh)
  tx, lr = optim.make_optimizer(config.optimizer, 1_000_000, config.batch_size)
  batch = draw()
  state, shardings = step_lib.create_train_state(config, method, tx, mesh, batch)
  step = step_lib.make_train_step(method, tx, shardings, lr).lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  steps, metrics = 0, None
  while time.perf_counter() - start < budget_s:
    state, metrics = step(state, batch)
    batch = draw()  # the next batch is drawn while the step runs
    steps += 1
    jax.block_until_ready(metrics["loss"])
  return (
    method,
    state,
    dict(
      steps=steps,
      epochs=steps * config.batch_size / len(images),
      train_s=time.perf_counter() - start,
      compile_s=compile_s,
      final_loss=float(metrics["loss"]) if metrics is not None else None,
    ),
  )


def knn_top1(method, state, train, test, *, batch_size: int = 500) -> float:
  """Weighted kNN top-1 (k=200, t=0.1) of the backbone features: `train`/`test` are (images uint8, labels)."""
  import jax

  import evaluators
  from evaluators.common import Embedder
  from parallel import mesh as mesh_lib

  embed = jax.jit(method.predict_fns["embed_image"])
  embedder = Embedder(mesh_lib.build_mesh(), batch_size)
  features = lambda x: embedder.chunks(lambda b: embed(state.params, state.model_state, b), {"image": x})
  return evaluators.knn_accuracy(
    features(train[0]), train[1], features(test[0]), test[1], num_classes=10, k=200, temperature=0.1
  )


def main() -> None:
  budget, batch = float(os.environ.get("BUDGET_S", 900)), env_int("BATCH", 256)
  data_path = os.environ.get("DATA", DEFAULT_DATA)
  if not os.path.exists(data_path):
    print(json.dumps(dict(workload="simclr_cifar10_quality", skipped=f"no CIFAR-10 npz at {data_path}")))
    return
  host = configure_host_from_env()
  import jax

  import input_pipeline

  conv = os.environ.get("CONV", "winograd")
  config = quality_config(batch, data_path, conv=conv)
  train, test = (input_pipeline.load_split(config.data, split) for split in ("train", "test"))
  method, state, stats = train_for(config, train["image"], budget)
  eval_start = time.perf_counter()
  n_train, n_test = env_int("KNN_TRAIN", len(train["image"])), env_int("KNN_TEST", len(test["image"]))
  top1 = knn_top1(
    method,
    state,
    (train["image"][:n_train], train["label"][:n_train]),
    (test["image"][:n_test], test["label"][:n_test]),
  )
  print(
    json.dumps(
      dict(
        workload="simclr_cifar10_quality",
        framework=f"jax {jax.__version__}",
        budget_s=budget,
        batch=batch,
        conv=conv,
        knn_top1=top1,
        knn_train=n_train,
        knn_test=n_test,
        eval_s=time.perf_counter() - eval_start,
        **stats,
        **host,
      )
    )
  )


if __name__ == "__main__":
  main()
