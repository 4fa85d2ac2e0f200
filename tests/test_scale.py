"""Scaling levers of the trainer give the same training as the plain step: FSDP, gradient accumulation (plain and
cached-embedding), remat, bf16 compute, EMA; FSDP memory per device; no host transfers in the steady-state step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import methods
from configs import simclr_shapes
from methods.base import Method
from parallel import mesh as mesh_lib
from parallel import partition
from train import optim
from train import setup
from train import step as step_lib


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  c = simclr_shapes.get_config("tiny")
  for k, v in overrides.items():
    c[k] = v
  return c


def vit_config(**overrides) -> ml_collections.ConfigDict:
  """Tiny SimCLR with a BatchNorm-free encoder and head (each embedding depends on its own example only), trained
  with SGD: equal gradients give equal parameters (Adam would turn the rounding noise of an exactly-zero gradient,
  such as that of the attention key biases, into steps of +-lr)."""
  c = tiny_config(**overrides)
  c.model = ml_collections.ConfigDict(
    dict(name="vit", patch_size=8, width=32, depth=2, num_heads=2, remat=False, dtype="float32")
  )
  c.head = ml_collections.ConfigDict(dict(hidden_dim=32, out_dim=16, num_layers=2, use_bn=False, dtype="float32"))
  c.optimizer.update(dict(name="sgd", base_lr=0.5, momentum=0.9, weight_decay=0.0))
  return c


def run_steps(config, num_steps: int, method: Method | None = None, keep_step: bool = False):
  """States (on host) before and after each of `num_steps` train steps of `config` on all 8 devices, the metrics of
  each step, the state's shardings and, with `keep_step`, (jitted step, last state on device, last batch)."""
  run = setup.build(config)
  batches = [run.first_batch] + [next(run.data) for _ in range(num_steps - 1)]
  run.data.close()
  state, shardings = run.state, run.shardings
  if method is not None:
    state, shardings = step_lib.create_train_state(config, method, run.tx, run.mesh, batches[0])
  step = step_lib.make_train_step(
    method or run.method, run.tx, shardings, run.learning_rate, **step_lib.train_step_options(config)
  )
  states, metrics = [jax.device_get(state)], []
  for batch in batches:
    state, step_metrics = step(state, batch)
    states.append(jax.device_get(state))
    metrics.append(jax.device_get(step_metrics))
  return (states, metrics, shardings) + (((step, state, batch),) if keep_step else ())


# Levers change only the order of float32 sums over at most 2 x 32 rows of a batch (sharded, micro-batched), whose
# rounding is bounded by n * eps relative to the magnitudes summed: twice that, relative to the largest value of the
# tree (a parameter whose exact gradient is zero, such as an attention key bias, holds only rounding noise).
TOL = 2 * 64 * np.finfo(np.float32).eps


def assert_trees_close(a, b, tol=TOL):
  scale = max(float(np.abs(y).max()) for y in jax.tree.leaves(b))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol * scale), a, b)


@pytest.fixture(scope="module")
def vit_baseline():
  """Three plain steps (data parallel, no accumulation, no remat, float32) of the BatchNorm-free SimCLR."""
  return run_steps(vit_config(), 3)


def test_fsdp_step_equals_data_parallel_step(vit_baseline):
  data_parallel, m_dp, _ = vit_baseline
  config = vit_config(fsdp_min_size=0)  # shard every array with a dimension divisible by the fsdp size
  config.mesh.data, config.mesh.fsdp = 2, 4
  fsdp, m_fsdp, shardings = run_steps(config, 3)
  specs = [s.spec for s in jax.tree.leaves(shardings.params)]
  assert sum("fsdp" in str(spec) for spec in specs) > len(specs) // 2, specs
  np.testing.assert_allclose(m_fsdp[-1]["loss"], m_dp[-1]["loss"], rtol=TOL)
  assert_trees_close(fsdp[-1].params, data_parallel[-1].params)


def test_vit_b16_fsdp_holds_an_eighth_of_the_state_per_device():
  config = tiny_config(batch_size=8)
  config.mesh.data, config.mesh.fsdp = 1, 8
  config.data.image_size = 224
  config.model = ml_collections.ConfigDict(dict(name="vit_b16", dtype="float32", remat=False))
  config.optimizer.name = "adamw"
  mesh = mesh_lib.build_mesh(config.mesh)
  method = methods.get("simclr")(config, mesh)
  tx, _ = optim.make_optimizer(config.optimizer, config.total_steps, config.batch_size)
  sample = {"image": jax.ShapeDtypeStruct((8, 224, 224, 3), jnp.uint8)}
  shapes, shardings = step_lib.abstract_train_state(config, method, tx, mesh, sample)
  backbone = shapes.params["backbone"]
  assert 85e6 < sum(x.size for x in jax.tree.leaves(backbone)) < 87e6  # ViT-B/16: 86M parameters
  replicated = partition.infer_shardings(shapes, mesh, [(".*", "replicate")])
  for tree in ("params", "opt_state"):
    full = partition.bytes_per_device(getattr(shapes, tree), getattr(replicated, tree))
    per_device = partition.bytes_per_device(getattr(shapes, tree), getattr(shardings, tree))
    assert full / 8 <= per_device < 1.02 * full / 8, (tree, per_device / full)


def _regression_method() -> Method:
  """A non-contrastive loss, a mean over examples: least squares of a linear map of the pixels onto the label."""
  model = nn.Dense(1)
  features = lambda batch: batch["image"].reshape(batch["image"].shape[0], -1).astype(jnp.float32) / 255.0

  def loss_fn(params, model_state, extra, batch, rng):
    error = model.apply({"params": params}, features(batch))[:, 0] - batch["label"].astype(jnp.float32)
    value = jnp.mean(error**2)
    return value, (model_state, extra, {"loss": value})

  return Method(
    init=lambda rng, batch: (model.init(rng, features(batch))["params"], {}, {}),
    loss_fn=loss_fn,
    predict_fns={"embed_image": lambda params, model_state, batch: features(batch)},
  )


def test_micro_batch_accumulation_equals_one_big_batch_for_a_mean_loss():
  full, m_full, _ = run_steps(tiny_config(), 2, _regression_method())
  accumulated, m_acc, _ = run_steps(tiny_config(grad_accum_steps=4, grad_accum_mode="micro"), 2, _regression_method())
  np.testing.assert_allclose(m_acc[-1]["loss"], m_full[-1]["loss"], rtol=TOL)
  assert_trees_close(accumulated[-1].params, full[-1].params)


def test_cached_embedding_accumulation_equals_one_big_batch_for_a_contrastive_loss(vit_baseline):
  full, m_full, _ = vit_baseline
  cached, m_cached, _ = run_steps(vit_config(grad_accum_steps=4, grad_accum_mode="cached"), 2)
  for step in range(2):
    np.testing.assert_allclose(m_cached[step]["loss"], m_full[step]["loss"], rtol=TOL)
    np.testing.assert_allclose(m_cached[step]["grad_norm"], m_full[step]["grad_norm"], rtol=TOL)
  assert_trees_close(cached[2].params, full[2].params)


def test_cached_mode_needs_a_method_that_splits_its_loss():
  with pytest.raises(ValueError, match="grad_accum_mode='cached' needs a method"):
    step_lib.resolve_accum_mode(_regression_method(), "cached")


def test_batch_not_divisible_into_micro_batches_is_a_clear_error():
  with pytest.raises(ValueError, match=r"batch_size=32 does not split into grad_accum_steps=3 micro-batches"):
    mesh_lib.check_batch_size(32, mesh_lib.build_mesh(tiny_config().mesh), accum_steps=3)


def test_bf16_compute_keeps_float32_params_and_optimizer_state(vit_baseline):
  config = vit_config()
  config.model.dtype = config.head.dtype = "bfloat16"
  states, metrics, _ = run_steps(config, 1)
  floats = [x for x in jax.tree.leaves((states[-1].params, states[-1].opt_state)) if x.dtype.kind == "f"]
  assert floats and all(x.dtype == np.float32 for x in floats)
  # The same model and batch up to bfloat16 rounding.
  np.testing.assert_allclose(metrics[0]["loss"], vit_baseline[1][0]["loss"], rtol=0.02)
  np.testing.assert_allclose(metrics[0]["grad_norm"], vit_baseline[1][0]["grad_norm"], rtol=0.1)


@pytest.fixture(scope="module")
def remat_ema_run():
  """Three steps with remat of the transformer blocks and an EMA of the parameters (decay 0.5), and the jitted step
  with its last state and batch for further calls."""
  config = vit_config(ema_decay=0.5)
  config.model.remat = True
  return run_steps(config, 3, keep_step=True)


def test_remat_gives_the_same_training(vit_baseline, remat_ema_run):
  states, metrics, *_ = remat_ema_run
  for step in range(3):
    np.testing.assert_allclose(metrics[step]["grad_norm"], vit_baseline[1][step]["grad_norm"], rtol=1e-6)
  assert_trees_close(states[-1].params, vit_baseline[0][-1].params, tol=1e-6)


def test_ema_params_follow_the_exponential_moving_average(remat_ema_run):
  states, *_ = remat_ema_run
  expected = states[0].params
  for state in states[1:]:
    expected = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, expected, state.params)
    assert_trees_close(state.ema_params, expected, tol=1e-6)
  assert not np.allclose(states[-1].ema_params["head"]["fc1"]["kernel"], states[-1].params["head"]["fc1"]["kernel"])


def test_steady_state_step_makes_no_host_transfers(remat_ema_run):
  *_, (step, state, batch) = remat_ema_run
  with jax.transfer_guard("disallow"):
    state, metrics = step(state, batch)
    state, metrics = step(state, batch)
  assert int(jax.device_get(state.step)) == 5 and np.isfinite(jax.device_get(metrics["loss"]))
