"""Every recipe trains end to end on 8 fake devices: its `:tiny` config runs 20 steps on the embedded data with the
trainer's own state and step functions, the loss goes down, and the whole state (params, model state, the method's
extra such as MoCo's queue and momentum encoder) comes back from a checkpoint bit for bit."""

import dataclasses
import importlib
from typing import Any

import jax
import numpy as np
import pytest

import input_pipeline
import methods
from input_pipeline import shapes
import checkpointing as ckpt_lib
from parallel import mesh as mesh_lib
from train import optim
from train import trainer

# name -> (config module, config argument, overrides). LiT and SimSkip use the encoder of the tiny MoCo run.
RECIPES = {
  "clip": ("clip_shapes", "tiny", {}),
  "siglip": ("siglip_shapes", "tiny,vit,causal", {}),  # the other image and text towers
  "lit": ("lit_shapes", "tiny", {}),
  "moco": ("moco_shapes", "tiny", {}),
  "supcon": ("supcon_shapes", "tiny", {}),
  "swav_queue": ("swav_shapes", "tiny,queue", {}),
  "simcse": ("simcse_shapes", "tiny", {}),
  # Supervised triplets (3 views) and ESimCSE's queue + momentum encoder in one run: every SimCSE code path.
  "esimcse_supervised": ("simcse_shapes", "tiny,esimcse,supervised", {}),
  "simskip": ("simskip_shapes", "tiny,encoder", {}),  # refines the features of the tiny MoCo encoder
  "coca": ("coca_shapes", "tiny", {}),
  "multitask": ("multitask_shapes", "tiny", {}),
}


@dataclasses.dataclass
class Run:
  config: Any
  workdir: str
  mesh: Any
  method: methods.Method
  state: Any  # on the host, after the last step
  shardings: Any
  losses: np.ndarray


def recipe_config(name: str, **overrides):
  module, arg, fixed = RECIPES[name]
  config = importlib.import_module(f"configs.{module}").get_config(arg)
  for key, value in {**fixed, **overrides}.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def train_steps(config, workdir: str) -> Run:
  """config.total_steps steps with the trainer's create_train_state / make_train_step, then one checkpoint."""
  mesh = mesh_lib.build_mesh(config.mesh)
  data = input_pipeline.build(
    config.data,
    split="train",
    global_batch_size=config.batch_size,
    sharding=mesh_lib.batch_sharding(mesh),
    seed=config.seed,
  )
  method = methods.get(config.method)(config, mesh)
  tx, lr = optim.make_optimizer(config.optimizer, config.total_steps)
  batch = next(data)
  state, shardings = trainer.create_train_state(config, method, tx, mesh, batch)
  step = trainer.make_train_step(method, tx, shardings, lr)
  losses = []
  for _ in range(config.total_steps):
    state, metrics = step(state, batch)
    losses.append(metrics["loss"])
    batch = next(data)
  checkpointer = ckpt_lib.Checkpointer(workdir, async_save=False)
  checkpointer.save(int(state.step), state, data.get_state())
  checkpointer.close()
  data.close()
  return Run(config, workdir, mesh, method, jax.device_get(state), shardings, np.asarray(jax.device_get(losses)))


def _triplets_tsv(path: str, n: int = 64) -> str:
  """sentence<TAB>positive<TAB>hard negative rows for supervised SimCSE: shapes captions, each its own positive
  (an easy task for 20 steps) and a caption of another class as the hard negative."""
  _, labels, captions = shapes.render(0, "train", np.arange(2 * n), image_size=8)
  rows = [f"{captions[i]}\t{captions[i]}\t{captions[np.flatnonzero(labels != labels[i])[0]]}" for i in range(n)]
  with open(path, "w") as f:
    f.write("\n".join(rows) + "\n")
  return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """run(name) trains a recipe once per module and returns its Run."""
  done: dict[str, Run] = {}

  def get(name: str) -> Run:
    if name not in done:
      overrides = {}
      if name == "lit":
        overrides["model.image_checkpoint"] = get("moco").workdir
      if name == "simskip":
        overrides["simskip.encoder_checkpoint"] = get("moco").workdir
      if name == "esimcse_supervised":
        overrides["data.path"] = _triplets_tsv(str(tmp_path_factory.mktemp("nli") / "triplets.tsv"))
      done[name] = train_steps(recipe_config(name, **overrides), str(tmp_path_factory.mktemp(name)))
    return done[name]

  return get


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_loss_decreases_and_state_restores_exactly(run, name):
  r = run(name)
  assert np.all(np.isfinite(r.losses)), r.losses
  # Steps 3-7 skip the warm-up and the filling of queues; the last 5 steps must be lower on average.
  assert r.losses[-5:].mean() < r.losses[2:7].mean(), r.losses
  checkpointer = ckpt_lib.Checkpointer(r.workdir, async_save=False)
  restored, _ = checkpointer.restore(ckpt_lib.abstract_with_shardings(r.state, r.shardings))
  checkpointer.close()
  assert int(restored.step) == r.config.total_steps
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), r.state)


@pytest.mark.parametrize("name", ["moco", "esimcse_supervised"])
def test_queue_and_momentum_encoder_are_live_state(run, name):
  extra = run(name).state.extra
  params = run(name).state.params
  queue_size = extra["queue"].shape[0]
  assert int(extra["queue_ptr"]) == (20 * 16) % queue_size
  # The EMA encoder trails the trained one: close, not equal.
  diffs = jax.tree.leaves(jax.tree.map(lambda k, p: float(np.abs(k - p).max()), extra["key_params"], params))
  assert max(diffs) > 0


def test_swav_counts_steps_fills_its_queue_and_keeps_unit_prototypes(run):
  state = run("swav_queue").state
  extra = state.extra
  assert int(extra["step"]) == 20
  assert int(extra["queue_count"]) == extra["queue"].shape[0]
  assert np.all(np.linalg.norm(extra["queue"], axis=-1) > 0)
  # The stored prototypes are projected back onto the unit sphere after every update.
  kernel = state.params["prototypes"]["prototypes"]["kernel"]
  np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, rtol=1e-5)


def test_lit_keeps_the_pretrained_image_tower_frozen_and_out_of_params(run):
  lit, moco = run("lit"), run("moco")
  assert "image_tower" not in lit.state.params
  jax.tree.map(
    np.testing.assert_array_equal, lit.state.model_state["locked"]["image_tower"], moco.state.params["backbone"]
  )
  jax.tree.map(
    np.testing.assert_array_equal,
    lit.state.model_state["batch_stats"]["image_tower"],
    moco.state.model_state["batch_stats"]["backbone"],
  )


@pytest.mark.parametrize(
  "name,keys",
  [
    ("clip", ("zero_shot_accuracy", "zero_shot_nearest_prompt_accuracy", "i2t_r@1", "i2t_r@5", "t2i_r@1", "t2i_r@5")),
    ("simcse", ("linear_probe_accuracy", "knn_accuracy")),
    ("simskip", ("input_linear_probe_accuracy", "refined_linear_probe_accuracy")),
    ("coca", ("zero_shot_accuracy", "caption_exact_match", "caption_names_class")),
  ],
)
def test_method_evaluation_reports_its_metrics(run, name, keys):
  r = run(name)
  results = r.method.evaluate(r.config, jax.device_put(r.state, r.shardings), r.mesh)
  for key in keys:
    assert 0.0 <= results[key] <= 1.0, (key, results)


CONFIG_ARGS = {
  "clip_shapes": ["", "tiny", "vit", "causal", "jsonl", "tiny,vit,causal"],
  "siglip_shapes": ["", "tiny", "vit", "causal", "jsonl"],
  "lit_shapes": ["", "tiny"],
  "moco_shapes": ["", "tiny", "mochi", "cifar10", "tiny,mochi"],
  "supcon_shapes": ["", "tiny", "cifar10"],
  "swav_shapes": ["", "tiny", "queue", "cifar10", "tiny,queue"],
  "simcse_shapes": ["", "tiny", "esimcse", "sts", "sts,esimcse", "supervised", "minilm"],
  "simskip_shapes": ["", "tiny", "sts", "encoder", "tiny,encoder"],
  "coca_shapes": ["", "tiny", "jsonl"],
  "multitask_shapes": ["", "tiny", "align_uniform", "tiny,align_uniform"],
}


@pytest.mark.parametrize("module", sorted(CONFIG_ARGS))
def test_every_config_argument_builds_a_config_with_the_common_top_level_keys(module):
  reference = set(importlib.import_module("configs.simclr_shapes").get_config().keys())
  reference -= {"head", "augment"}  # method-specific in the reference recipe
  for arg in CONFIG_ARGS[module]:
    config = importlib.import_module(f"configs.{module}").get_config(arg or None)
    assert reference <= set(config.keys()), (module, arg, reference - set(config.keys()))
    assert config.method in methods.names()
    assert config.batch_size % 8 == 0
  with pytest.raises(ValueError, match="Unknown config argument"):
    importlib.import_module(f"configs.{module}").get_config("no_such_argument")
